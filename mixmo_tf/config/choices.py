"""The fixed choice lists of the run settings, one place each (imports no TensorFlow).

`Config` validates against these, `mixmo_tf.cli.flags` offers them as enum flags, and the
modules that implement them (`mixing.inputs`, `tuning.device_rules`, `training.strategies`)
read them from here.
Datasets live with their specs (`mixmo_tf.config.datasets.DATASETS`; tfds:NAME and
folder:PATH in `mixmo_tf.config.dataset_names`), backbones in their registry
(`mixmo_tf.config.backbones`), since both can grow.
"""

# Feature mixing: none (single network), mimo (plain sum), linear / cutmix (MixMo).
MIXING_METHODS = ("none", "mimo", "linear", "cutmix")
# Input-level mixing before MixMo.
MSDA_KINDS = ("none", "mixup", "cutmix")
# Compute precision of the layers; "auto" is resolved per device.
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# tf.distribute strategies.
DISTRIBUTIONS = ("default", "mirrored", "multi_worker_mirrored", "tpu")
# Nesterov SGD as PyTorch (the paper's runs) or as Keras computes it (mixmo_tf.models.optimizers).
OPTIMIZERS = ("pytorch_sgd", "keras_sgd")
# When tfds may download a dataset (mixmo_tf.data.downloads).
DOWNLOAD_MODES = ("auto", "never", "always")
