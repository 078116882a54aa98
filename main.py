"""Train or evaluate MixMo. Example: python main.py --dataset=cifar100 --mixing=cutmix

Every paper configuration is a flagfile: python main.py --flagfile=flags/<experiment>.flags
"""

import os

# TensorFlow's C++ start-up lines (CPU feature notes, oneDNN's int64 error line) say nothing
# a user can act on. Quiet unless TF_CPP_MIN_LOG_LEVEL is set: TF_CPP_MIN_LOG_LEVEL=0 brings
# them back. Set before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mixmo_tf.cli import run  # noqa: E402

if __name__ == "__main__":
    run()
