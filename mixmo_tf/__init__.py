"""mixmo-tf: MixMo (Rame, Sun, Cord, ICCV 2021) in Keras 3 / TensorFlow.

MixMo trains M subnetworks inside one network by mixing their inputs' stem features; at test
time the same image goes to every member and the heads form an ensemble for about the cost
of one network. Paper: https://arxiv.org/abs/2103.06132; the method as implemented here:
docs/method.md.

The package, by layer (each name below loads on first use, so `from mixmo_tf.config import
Config` and the command line's flag parsing load no TensorFlow):

- `config`: the run's settings (Config, choices, run record, run folder) and `UserError`,
  the base class of the errors a user can fix; no TensorFlow;
- `data`: dataset sources and the tf.data pipelines;
- `mixing`: feature mixing and input MixUp / CutMix;
- `models`: backbone registry, networks, `MixMoModel`, `build_model`, `load_model`, and what
  a model is compiled with (metrics, `PyTorchSGD`, the schedule, the dtype policy);
- `importing`: the authors' released checkpoints (`load_pytorch_checkpoint`), read without
  PyTorch, and the preset format (config.json, model.weights.h5, metadata.json);
- `training`: a run (`train`), checkpoints, guards, strategies, the multi-worker loop;
- `tuning`: defaults measured on this machine (`--precision=auto`, oneDNN for training) and
  the device rules;
- `evaluation`: metrics, temperature scaling, reports of trained runs (`evaluate`);
- `serving`: the serving graph, SavedModel export, predictions on files, and `from_preset`
  (a model from a released row's name, a preset folder or a run folder);
- `cli`: the command line of main.py.
"""

import lazy_loader

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "cli",
        "config",
        "data",
        "evaluation",
        "importing",
        "mixing",
        "models",
        "serving",
        "training",
        "tuning",
    ],
    submod_attrs={
        # The backbone registry module at the top level, as docs/python.md's example uses it.
        "config": ["Config", "UserError", "backbones"],
        "evaluation": ["evaluate"],
        "importing": ["load_pytorch_checkpoint"],
        "mixing": ["FeatureMixing"],
        "models": [
            "FusedBatchNormalization",
            "MixMoModel",
            "MixMoNetwork",
            "build_mixmo_network",
            "BrierScore",
            "ExpectedCalibrationError",
            "NegativeLogLikelihood",
            "PyTorchSGD",
            "WarmupStepDecay",
            "build_model",
            "load_model",
            "preact_resnet",
            "wide_resnet",
            "wrn10_1",
            "wrn16_4",
            "wrn28_10",
        ],
        "serving": ["export_saved_model", "from_preset", "load_preset"],
        "training": ["train"],
    },
)
