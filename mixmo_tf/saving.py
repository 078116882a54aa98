"""Loading a run's `model.keras`: the documented way is `mixmo_tf.load_model(path)`.

`keras.saving.load_model` can rebuild MixMo's classes (`MixMoModel`, `FeatureMixing`,
`FusedBatchNormalization`) only once `mixmo_tf` has registered them; without it Keras
answers "Could not locate class 'MixMoModel'". `load_model` imports them first.
"""

from __future__ import annotations

import os

import keras

# Importing the model registers every class its file names (the network's layers too).
from mixmo_tf.training import MixMoModel


def load_model(path: str) -> MixMoModel:
    """The `MixMoModel` saved at `path` (a run's `<model_dir>/model.keras`), ready to predict.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` holds no loadable MixMo model; the message says what was found.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: training writes <model_dir>/model.keras when it finishes."
        )
    try:
        model = keras.saving.load_model(path)
    except (TypeError, ValueError, OSError, KeyError) as error:
        raise ValueError(
            f"Could not load {path} as a mixmo_tf model ({type(error).__name__}: {error}). "
            "Load .keras files of mixmo_tf runs with mixmo_tf.load_model(path), with the "
            "mixmo_tf version that wrote them."
        ) from error
    if not isinstance(model, MixMoModel):
        raise ValueError(
            f"{path} holds a {type(model).__name__}, not a MixMoModel: mixmo_tf.load_model "
            "reads the model.keras files that mixmo_tf training writes."
        )
    return model
