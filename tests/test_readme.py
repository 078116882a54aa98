"""The README stays true: its Python example runs as written and its set-up matches CI."""

from __future__ import annotations

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.slow
def test_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)  # the example writes runs/ in the working directory
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["my_network"].outputs[0].shape[-1] == 10
    assert len(namespace["my_network"].outputs) == 3
    outputs = namespace["outputs"]
    assert outputs["ensemble"].shape == (360, 10)
    assert outputs["members"].shape == (360, 2, 10)
    assert os.path.exists(tmp_path / "runs" / "digits_quick" / "model.keras")


def test_ci_runs_the_readme_commands():
    install, test = re.findall(r"```bash\n(.*?)\n(.*?)\n```", _readme(), flags=re.S)[0]
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    ci_lines = ci.splitlines()
    assert install.split(" && .venv/bin/python main.py")[0] in ci_lines
    assert test in ci_lines
