"""The test sessions of the other Keras backends run only the tests marked `backends`, and
TensorFlow is unimportable in them: a marked test that reaches it fails there.

Checked on a planted suite, which uses this repository's tests/conftest.py, pytest.ini and
helpers, run by pytest under KERAS_BACKEND=jax in a child process.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
from helpers.paths import REPO

_MARKED_MODULE = """
import keras
import pytest


@pytest.mark.backends
def test_runs_on_the_session_backend():
    assert keras.backend.backend() == "jax"


@pytest.mark.backends
def test_reaches_tensorflow():
    import tensorflow  # noqa: F401


@pytest.mark.backends
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow only")
def test_skipped_off_tensorflow():
    import tensorflow  # noqa: F401


def test_unmarked():
    import tensorflow  # noqa: F401
"""

# Not imported under another backend: its top-level import would fail there.
_TENSORFLOW_MODULE = """
import tensorflow


def test_tensorflow_module():
    assert tensorflow.constant(1) == 1
"""


def _planted_suite(root) -> None:
    """tests/ with this repository's conftest.py and helpers, and the planted modules."""
    tests = root / "tests"
    shutil.copytree(os.path.join(REPO, "tests", "helpers"), tests / "helpers")
    shutil.copy(os.path.join(REPO, "tests", "conftest.py"), tests)
    shutil.copy(os.path.join(REPO, "pytest.ini"), root)
    (tests / "test_marked.py").write_text(_MARKED_MODULE)
    (tests / "test_tensorflow_only.py").write_text(_TENSORFLOW_MODULE)


def test_jax_runs_only_the_marked_tests_and_without_tensorflow(tmp_path):
    """The same rules hold under torch; its session imports the most (torch's compiler probes
    installed packages), and CI's torch session would fail to start if it broke them."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("needs JAX: pip install -e '.[jax]'")
    _planted_suite(tmp_path)
    environment = {**os.environ, "KERAS_BACKEND": "jax"}
    environment["PYTHONPATH"] = os.pathsep.join([REPO, environment.get("PYTHONPATH", "")])
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-rA", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = finished.stdout
    assert finished.returncode == 1, output
    assert "PASSED tests/test_marked.py::test_runs_on_the_session_backend" in output
    assert "FAILED tests/test_marked.py::test_reaches_tensorflow" in output
    assert "TensorFlow is unimportable in the tests run under KERAS_BACKEND=jax" in output
    assert "SKIPPED [1] tests/test_marked.py" in output
    assert "1 failed, 1 passed, 1 skipped, 1 deselected" in output
    assert "test_tensorflow_only" not in output
