"""Serving a trained run: the graph, the SavedModel export, predictions on files.

- `graph`: `ServingModule`, the three signatures, and the ensemble's outputs with their
  uncertainty (`mixmo_tf.evaluation.uncertainty`, the one definition evaluation uses too);
- `run_source`: a run as serving reads it (newest checkpoint in float32, temperature);
- `export`: versioned SavedModels for TF Serving, from a model or a run folder;
- `predict`: the served answer for image files (`--mode=predict`);
- `presets`: `from_preset`, a model from a released row, a preset folder or a run folder;
- `run_presets`: a run as a preset (`--mode=export --format=preset`).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["export", "graph", "predict", "presets", "run_presets", "run_source"],
    submod_attrs={
        "export": ["export_run", "export_saved_model"],
        "graph": ["ServingModule", "ensemble_outputs", "uncertainty", "uint8_images"],
        "presets": ["from_preset", "load_preset"],
        "run_presets": ["export_run_preset", "run_preset"],
    },
)
