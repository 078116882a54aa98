"""A training run and what it is made of.

- `run`: `train(config)`, the run from a Config (data, model, resume, fit, final model);
- `checkpoints`: the checkpoint manager, resuming, `restore_run` for evaluation and serving;
- `callbacks`: finite checkpoints, divergence and signal stops;
- `run_guard`: one writer per run folder (lock) and signals;
- `strategies`: the tf.distribute strategy of `--distribution`;
- `multi_worker`: the loop that replaces `fit` under MultiWorkerMirroredStrategy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "callbacks",
        "checkpoints",
        "multi_worker",
        "run",
        "run_guard",
        "strategies",
    ],
    submod_attrs={"run": ["train"]},
)
