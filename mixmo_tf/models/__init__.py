"""The networks and the MixMo model: builders, `MixMoModel`, what it is compiled with, loading.

- `wrn`, `preact_resnet18`: the paper's backbones (registered by name in
  `mixmo_tf.config.backbones`); `batch_norm`: the fused batch norm they use;
- `network`: `MixMoNetwork`, M stems -> feature mixing -> shared core -> M heads;
- `mixmo_model`: `MixMoModel`, its training, evaluation and prediction steps;
- `build`: the compiled model of a Config; `saving`: loading a run's model.keras;
- `legacy`: reading model.keras files written before `MixMoNetwork` existed;
- what a model is compiled with: `metrics` (streaming NLL, Brier, ECE; their shared
  definitions in `metric_definitions`), `optimizers` (PyTorch-style Nesterov SGD),
  `schedules` (the paper's learning-rate schedule), `precision` (the dtype policy).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "batch_norm",
        "build",
        "legacy",
        "metric_definitions",
        "metrics",
        "mixmo_model",
        "network",
        "optimizers",
        "preact_resnet18",
        "precision",
        "saving",
        "schedules",
        "wrn",
    ],
    submod_attrs={
        "batch_norm": ["FusedBatchNormalization"],
        "build": ["build_model"],
        "metrics": ["BrierScore", "ExpectedCalibrationError", "NegativeLogLikelihood"],
        "mixmo_model": ["MixMoModel"],
        "network": [
            "MixMoNetwork",
            "build_mixmo_network",
            "member_input_name",
            "network_from_backbone",
        ],
        "preact_resnet18": [
            "preact_resnet",
            "preact_resnet_backbone",
            "preact_resnet_core",
            "preact_resnet_stem",
        ],
        "optimizers": ["PyTorchSGD"],
        "saving": ["load_model"],
        "schedules": ["WarmupStepDecay"],
        "wrn": [
            "wide_resnet",
            "wide_resnet_backbone",
            "wide_resnet_core",
            "wide_resnet_stem",
            "wrn10_1",
            "wrn16_4",
            "wrn28_10",
        ],
    },
)
