"""Loading a run's `model.keras`: the documented way is `mixmo_tf.load_model(path)`.

`keras.saving.load_model` can rebuild MixMo's classes (`MixMoModel`, `MixMoNetwork`,
`FeatureMixing`, `FusedBatchNormalization`, the metrics, `PyTorchSGD` and its schedule) only
once they are registered, which happens when their modules are imported; without them Keras
answers "Could not locate class 'MixMoModel'". Importing this module imports them all, so
`import mixmo_tf.models.saving` before Keras' own loader works too. (The package root loads its
names lazily: `import mixmo_tf` alone registers nothing.)
"""

from __future__ import annotations

import os

import keras

# Imported for their registration: every class a run's .keras file names (the model, its
# network and layers, the legacy network, the metrics, the optimizer and its schedule).
from mixmo_tf.config.errors import MissingFileError, UnusableFileError
from mixmo_tf.mixing import features  # noqa: F401
from mixmo_tf.models import batch_norm, legacy, metrics, network, optimizers, schedules  # noqa: F401  # noqa: F401
from mixmo_tf.models.mixmo_model import MixMoModel


def load_model(path: str) -> MixMoModel:
    """The `MixMoModel` saved at `path` (a run's `<model_dir>/model.keras`), ready to predict.

    Raises:
        MissingFileError: `path` does not exist (a FileNotFoundError).
        UnusableFileError: `path` holds no loadable MixMo model; the message says what was found.
    """
    if not os.path.exists(path):
        raise MissingFileError(
            f"{path} does not exist: training writes <model_dir>/model.keras when it finishes."
        )
    try:
        model = keras.saving.load_model(path)
    except (TypeError, ValueError, OSError, KeyError) as error:
        raise UnusableFileError(
            f"Could not load {path} as a mixmo_tf model ({type(error).__name__}: {error}). "
            "Load .keras files of mixmo_tf runs with mixmo_tf.load_model(path), with the "
            "mixmo_tf version that wrote them."
        ) from error
    if not isinstance(model, MixMoModel):
        raise UnusableFileError(
            f"{path} holds a {type(model).__name__}, not a MixMoModel: mixmo_tf.load_model "
            "reads the model.keras files that mixmo_tf training writes."
        )
    return model
