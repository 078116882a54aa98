"""Shared test settings and fixtures for every folder of tests/: quiet TensorFlow; the shared
`helpers` package importable; under another Keras backend, only the tests marked `backends`,
with TensorFlow unimportable; the trained tiny run; the `slow` tests first."""

import os
import re
import signal
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by default only on Intel CPUs. The suite runs it on every CPU
# (subprocesses inherit it): its convolutions train the tests' WRNs faster on the AMD CPUs
# CI may get (the documentation's speed page), and the suite's numerics then do not depend
# on the CPU's vendor.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# XLA (TensorFlow's jit_compile, every JAX computation) compiles the tests' tiny networks for
# longer than they run: its CPU code generated without LLVM's optimizations computes the same
# operations and compiles in about 60% of the time (the XLA training test: 57-64 s against
# 99-101 s, on a loaded 2-core AMD EPYC).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N runs N processes: one TensorFlow thread each keeps them from fighting over
    # the cores (the tests' tiny networks gain nothing from a second thread).
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
# A shell starts a background job (`pytest &`, nohup) with Ctrl-C ignored, and the processes
# the tests start would inherit that: their Ctrl-C tests would then see no KeyboardInterrupt.
# A Python handler here is reset to the default at exec, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# tests/ itself, so that every test module imports the shared helpers as `helpers.<module>`
# (and the authors' fixture code as `fixtures.authors`), whichever folder it sits in.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The Keras backend of this session, from the variable Keras reads. CI runs the whole suite on
# TensorFlow, then the tests marked `backends` under KERAS_BACKEND=jax and torch, where the
# code they reach must run without TensorFlow: importing it fails there.
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND != "tensorflow":
    from helpers.no_tensorflow import block_tensorflow

    block_tensorflow(BACKEND)

# A test module that marks tests `backends` (`@pytest.mark.backends`, or `pytestmark = ...`).
_MARKS_BACKENDS = re.compile(r"\bmark\.backends\b")


def pytest_ignore_collect(collection_path, config):
    """Under another backend, leaves out (without importing them) the test modules that mark
    no test `backends`: they may import TensorFlow at their top. A module that marks some must
    import none."""
    is_test_module = collection_path.name.startswith("test_") and collection_path.suffix == ".py"
    if BACKEND == "tensorflow" or not is_test_module:
        return None
    return None if _MARKS_BACKENDS.search(collection_path.read_text(encoding="utf-8")) else True


# The modules with the longest tests (the digits learning run, the two-worker launches, the
# bench scripts' runs, the processes stopped by signals, the evaluated digits runs, timed or
# filtered), longest first, are collected first: pytest -n 2 hands whole modules out in
# collection order (pytest.ini's --dist=loadscope), so its two workers then finish together
# instead of one waiting on a long tail.
_LONGEST_FIRST = (
    "test_training.py",
    "test_multi_worker.py",
    "test_bench.py",
    "test_run_guard.py",
    "test_evaluation_runs.py",
    "test_tuning.py",
    "test_decoder_messages.py",
)


def pytest_collection_modifyitems(config, items):
    """Under another backend, keeps only the tests marked `backends`. Moves the modules in
    _LONGEST_FIRST to the front; each module stays in one piece."""
    if BACKEND != "tensorflow":
        deselected = [item for item in items if item.get_closest_marker("backends") is None]
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("backends")]
    rank = {name: index for index, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def step_time_cache(tmp_path_factory):
    """Step times measured by --precision=auto and the oneDNN choice go to a folder of this
    test process (subprocesses inherit it), not the user's cache, and start empty."""
    from mixmo_tf.tuning.machine import CACHE_VARIABLE

    os.environ[CACHE_VARIABLE] = str(tmp_path_factory.mktemp("step_times"))


@pytest.fixture(scope="session")
def trained_tiny_run(tmp_path_factory):
    """A finished `helpers.runs.tiny_run_config` run, trained once per test process: (config,
    model). Tests read it (export, predict, restore); they must not train it further."""
    from helpers.runs import tiny_run_config

    from mixmo_tf.training.run import train

    config = tiny_run_config(tmp_path_factory.mktemp("tiny_run"))
    return config, train(config)
