"""Serving a trained run: the graph, the SavedModel export, predictions on files.

- `graph`: `ServingModule`, the three signatures, and the ensemble's outputs with their
  uncertainty (`mixmo_tf.evaluation.uncertainty`, the one definition evaluation uses too);
- `export`: versioned SavedModels for TF Serving, from a model or a run folder;
- `predict`: the served answer for image files (`--mode=predict`).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["export", "graph", "predict"],
    submod_attrs={
        "export": ["export_run", "export_saved_model"],
        "graph": ["ServingModule", "ensemble_outputs", "uncertainty", "uint8_images"],
    },
)
