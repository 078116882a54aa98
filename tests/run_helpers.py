"""The tiny runs the tests train, written once.

- `smoke_config`: a digits Cut-MixMo run shrunk by `Config.smoke` (WRN-10-1, at most 2
  epochs of 3 steps, 2 test batches), for the tests of the run itself (resume, guards,
  precision, backbones, strategies);
- `tiny_run_config`: one epoch of 3 steps at B=16, b=2 in float32, the finished run that the
  export, prediction and uncertainty tests read (`conftest.trained_tiny_run`).
"""

from __future__ import annotations

import dataclasses

from mixmo_tf.config import Config


def smoke_config(model_dir, **overrides) -> Config:
    """The digits smoke run in `model_dir` (exactly there: no `_smoke` suffix); `overrides`
    replace any field afterwards."""
    smoke = Config(dataset="digits").smoke()
    return dataclasses.replace(smoke, model_dir=str(model_dir), **overrides)


def tiny_run_config(model_dir, **overrides) -> Config:
    """A finished digits run of 3 steps (WRN-10-1, M=2, Cut-MixMo), float32 on every CPU."""
    fields = dict(
        dataset="digits",
        model_dir=str(model_dir),
        depth=10,
        width=1,
        num_members=2,
        mixing="cutmix",
        batch_size=16,
        batch_repetitions=2,
        epochs=1,
        steps_per_epoch=3,
        lr=0.4,
        eval_steps=1,
        eval_batch_size=32,
        precision="float32",
    )
    return Config(**{**fields, **overrides})
