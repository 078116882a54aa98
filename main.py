"""Train or evaluate MixMo. Example: python main.py --dataset=cifar100 --mixing=cutmix

Every paper configuration is a flagfile: python main.py --flagfile=flags/<experiment>.flags
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_discarded():
    """Sends file descriptor 2 to /dev/null inside the block.

    TensorFlow 2.21 writes some lines at import, before it reads TF_CPP_MIN_LOG_LEVEL (with
    oneDNN on: "oneDNN custom operations are on ..."). An import error still shows: its
    traceback is printed after the block.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# TensorFlow's C++ start-up lines (CPU feature notes, oneDNN's notice and int64 error line)
# say nothing a user can act on. Quiet unless TF_CPP_MIN_LOG_LEVEL is set:
# TF_CPP_MIN_LOG_LEVEL=0 brings them back. Set before anything imports TensorFlow.
_QUIET = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

with _stderr_discarded() if _QUIET else contextlib.nullcontext():
    from mixmo_tf.cli import run

if __name__ == "__main__":
    run()
