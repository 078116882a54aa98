"""The networks and the MixMo model: backbone registry, builders, `MixMoModel`, loading.

- `backbones`: the registry that maps `--backbone` to a builder (imports no TensorFlow);
- `wrn`, `preact_resnet18`: the paper's backbones; `batch_norm`: the fused batch norm they use;
- `network`: `MixMoNetwork`, M stems -> feature mixing -> shared core -> M heads;
- `mixmo_model`: `MixMoModel`, its training, evaluation and prediction steps;
- `build`: the compiled model of a Config; `saving`: loading a run's model.keras;
- `legacy`: reading model.keras files written before `MixMoNetwork` existed;
- `torch_format`: reading `torch.save` files without PyTorch, running nothing in them;
- `authors_checkpoint`: the MixMo authors' checkpoints, read and checked (no TensorFlow);
- `pytorch_import`: those checkpoints as a `MixMoModel` and a run folder.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "authors_checkpoint",
        "backbones",
        "batch_norm",
        "build",
        "legacy",
        "mixmo_model",
        "network",
        "preact_resnet18",
        "pytorch_import",
        "saving",
        "torch_format",
        "wrn",
    ],
    submod_attrs={
        "batch_norm": ["FusedBatchNormalization"],
        "build": ["build_model"],
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
        "pytorch_import": ["load_pytorch_checkpoint"],
        "saving": ["load_model"],
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
