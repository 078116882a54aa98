"""Datasets: sources (in memory or streamed from files) and the training / evaluation
tf.data pipelines.

`specs`, `sources`, `folder` and `downloads` import no TensorFlow (the settings layer reads
them); the rest load on first use.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
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
        "specs",
        "splits",
        "streamed",
        "tfds_loading",
        "tiny_imagenet",
        "validation",
    ],
    submod_attrs={
        "pipeline": ["TrainStream", "eval_dataset", "normalize", "train_dataset"],
        "specs": ["DATASETS", "DatasetSpec", "dataset_spec"],
        "splits": ["load_split", "open_split", "prepare_source", "resolved_spec"],
        "streamed": ["StreamedImages", "naming_unreadable_files"],
        "tfds_loading": ["DataNotFoundError", "ensure_prepared"],
        "validation": ["split_validation"],
    },
)
