"""Train or evaluate MixMo. Example: python main.py --dataset=cifar100 --mixing=cutmix

Every paper configuration is a flagfile: python main.py --flagfile=flags/<experiment>.flags
"""

from mixmo_tf.cli import run

if __name__ == "__main__":
    run()
