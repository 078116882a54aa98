"""The settings layer: the run's Config, its choice lists, datasets and backbone registry,
its record and its folder, and `UserError`, the base class of the errors a user can fix.

Imports no TensorFlow: flags are parsed and checked, and a trained run's settings read,
before TensorFlow starts (`tests/test_package.py` checks it).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "backbones",
        "choices",
        "dataset_names",
        "datasets",
        "errors",
        "ranges",
        "run_folder",
        "run_record",
        "settings",
    ],
    submod_attrs={
        "errors": ["UserError"],
        "settings": ["Config", "changeable_on_resume", "complete_recorded"],
        "run_folder": ["RunFolder"],
        "run_record": ["recorded_config"],
    },
)
