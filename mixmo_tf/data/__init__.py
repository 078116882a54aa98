"""Datasets: sources (in memory or streamed from files) and the training / evaluation
tf.data pipelines.

`sources`, `tfds_loading`, `folder` and `downloads` import no TensorFlow (a spec is read, and
the command line checks its flags, before TensorFlow starts); the rest load on first use.
What each dataset is (`DatasetSpec`, `DATASETS`, `dataset_spec`) lives in the settings layer
(`mixmo_tf.config.datasets`) and is named here too.
"""

import importlib

import lazy_loader

_lazy_getattr, _, _lazy_names = lazy_loader.attach(
    __name__,
    submodules=[
        "cache",
        "class_names",
        "decoding",
        "digits",
        "downloads",
        "folder",
        "pipeline",
        "sources",
        "splits",
        "streamed",
        "tfds_loading",
        "tiny_imagenet",
        "validation",
    ],
    submod_attrs={
        "pipeline": ["TrainStream", "eval_dataset", "normalize", "train_dataset"],
        "sources": ["resolved_spec"],
        "splits": ["load_split", "open_split", "prepare_source"],
        "streamed": ["StreamedImages", "naming_unreadable_files"],
        "tfds_loading": ["DataNotFoundError", "ensure_prepared"],
        "validation": ["split_validation"],
    },
)
_SETTINGS_NAMES = ("DATASETS", "DatasetSpec", "dataset_spec")
__all__ = sorted([*_lazy_names, *_SETTINGS_NAMES])


def __dir__() -> list[str]:
    return __all__.copy()


def __getattr__(name: str):
    if name in _SETTINGS_NAMES:
        return getattr(importlib.import_module("mixmo_tf.config.datasets"), name)
    return _lazy_getattr(name)
