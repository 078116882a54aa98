"""A training run and what it is made of.

- `run`: `train(config)`, the run from a Config (data, model, resume, fit, final model);
- `checkpoints`: the checkpoint manager, resuming, `restore_run` for evaluation and serving;
- `callbacks`: finite checkpoints, divergence and signal stops;
- `run_guard`: one writer per run folder (lock) and signals;
- `strategies`: the tf.distribute strategy of `--distribution`;
- `multi_worker`: the loop that replaces `fit` under MultiWorkerMirroredStrategy;
- `optimizers`, `schedules`, `precision`: PyTorch-style Nesterov SGD, the paper's learning
  rate schedule, the compute precision;
- `metrics`: streaming Keras metrics of the per-epoch test evaluation.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "callbacks",
        "checkpoints",
        "metrics",
        "multi_worker",
        "optimizers",
        "precision",
        "run",
        "run_guard",
        "schedules",
        "strategies",
    ],
    submod_attrs={
        "metrics": ["BrierScore", "ExpectedCalibrationError", "NegativeLogLikelihood"],
        "optimizers": ["PyTorchSGD"],
        "run": ["train"],
        "schedules": ["WarmupStepDecay"],
    },
)
