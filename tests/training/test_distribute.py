"""tf.distribute: a MirroredStrategy run over two logical CPU devices trains and resumes.

It trains with our loop (`mixmo_tf.training.multi_worker`), not Keras' `fit`, and validates
as one device does although the test split's batches do not split evenly.

Logical devices must be configured before TensorFlow initialises, so the run happens in a
subprocess. It also shows that replicas share the once-per-batch mixing choices (cut or
linear, roles) but draw their own per-sample ratios and boxes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers.runs import assert_validates_as_one_device

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from mixmo_tf.training.run import train
    from mixmo_tf.training.strategies import StrategyError
    from mixmo_tf.config import Config

    smoke = Config(dataset="digits", distribution="mirrored").smoke()
    # The whole test split (360 images) in batches of 359: 180 / 179 images per replica, then
    # one image, which leaves a replica nothing.
    config = dataclasses.replace(smoke, model_dir=sys.argv[1], eval_batch_size=359, eval_steps=0)
    try:
        train(dataclasses.replace(config, batch_size=33, batch_repetitions=1))
    except StrategyError as error:
        refused = str(error)
    model = train(config)
    strategy = model.distribute_strategy
    seeds = strategy.run(model._step_seeds)
    local = lambda value: [t.numpy().tolist() for t in strategy.experimental_local_results(value)]
    print("RESULT" + json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "steps": int(model.optimizer.iterations.numpy()),
        "finite": bool(all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)),
        "batch_seeds": local(seeds[0]),
        "sample_seeds": local(seeds[1]),
        "refused": refused,
        "validation": {k: v[-1] for k, v in model.history.history.items() if k[:4] == "val_"},
    }))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_devices_trains_with_shared_batch_choices(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("RESULT", 1)[1])
    assert report["replicas"] == 2
    assert report["refused"] == (
        "--batch_size=33 does not split evenly over the 2 replicas of this --distribution: "
        "their slices would weigh unequally in the gradient. Use a multiple of 2 (32 or 34)."
    )
    assert report["steps"] == 6  # 2 smoke epochs of 3 steps
    assert report["finite"]
    first, second = report["batch_seeds"]
    assert first == second
    first, second = report["sample_seeds"]
    assert first != second
    assert os.path.exists(tmp_path / "checkpoints" / "ckpt-6.weights.h5")

    # Validated as one device validates the same weights (Keras' own fit fails on the uneven
    # batch).
    assert_validates_as_one_device(tmp_path, report["validation"], eval_batch_size=359)
