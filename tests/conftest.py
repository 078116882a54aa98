"""Shared test settings: quiet TensorFlow; tests and the bench/ scripts importable."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
# The bench scripts import each other by file name, as when run as python bench/<name>.py.
sys.path.append(os.path.join(os.path.dirname(TESTS), "bench"))
