"""Shared test settings and fixtures for every folder of tests/: quiet TensorFlow; the shared
`helpers` package importable; the trained tiny run; the `slow` tests first."""

import os
import signal
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by default only on Intel CPUs. The suite runs it on every CPU
# (subprocesses inherit it): its convolutions train the tests' WRNs faster on the AMD CPUs
# CI may get (the documentation's speed page), and the suite's numerics then do not depend
# on the CPU's vendor.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
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

# The modules with the longest tests (the digits learning run, the two-worker launches, the
# evaluated digits runs, the processes stopped by signals, timed or filtered) are collected
# first: pytest -n 2 hands tests out in collection order, so its two workers then finish
# together instead of one waiting on a long tail.
_LONGEST_FIRST = (
    "test_training.py",
    "test_multi_worker.py",
    "test_evaluation_runs.py",
    "test_run_guard.py",
    "test_tuning.py",
    "test_decoder_messages.py",
)


def pytest_collection_modifyitems(items):
    """Moves the modules in _LONGEST_FIRST to the front; each module stays in one piece."""
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
