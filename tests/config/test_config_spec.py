"""The Config carries its dataset spec: derived values read no disk and no process-wide cache.

A tfds or folder source's spec is resolved where a run starts (training, the import, a run's
record) and stored on the Config (`dataset_spec`); a Config without it says so in one line
when a derived value is asked. run_config.json does not record it: dataset_spec.json stays
the run's record of its data.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from helpers.datasets import write_image_folder
from helpers.paths import REPO

import mixmo_tf
from mixmo_tf import data
from mixmo_tf.config import Config, run_record
from mixmo_tf.config.datasets import DATASETS, source_spec, spec_from_json
from mixmo_tf.config.run_folder import RunFolder

FLOWERS = "tfds:oxford_flowers102"


def _flowers_spec(num_train: int = 1020, image_size: int = 64, dataset: str = FLOWERS):
    return source_spec(dataset, image_size, 102, num_train, 6149, ("pink primrose",) * 102)


# A fresh process: nothing resolved or cached before; a spec carried computes every derived
# value with file reads refused, one not carried is refused in one line.
_FRESH_PROCESS = """
import builtins, json, os
from mixmo_tf.config import Config
from mixmo_tf.config.datasets import source_spec

spec = source_spec("tfds:oxford_flowers102", 64, 102, 1020, 6149, ())
config = Config(dataset="tfds:oxford_flowers102", model_dir="/nonexistent/run",
                validation_split=0.1, dataset_spec=spec)

def refused(*args, **kwargs):
    raise AssertionError(f"a derived value touched the disk: {args}")

builtins.open = os.path.exists = os.stat = refused
derived = [config.num_validation_examples, config.num_train_examples,
           config.derived_steps_per_epoch, config.total_steps, config.warmup_steps,
           list(config.lr_decay_steps)]
config.check_split_size()
try:
    Config(dataset="tfds:oxford_flowers102", model_dir="/nonexistent/run").total_steps
except ValueError as error:
    message = str(error)
print(json.dumps({"derived": derived, "refusal": message}))
"""


def test_a_fresh_process_computes_from_the_carried_spec_or_refuses_in_one_line():
    process = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS], capture_output=True, text=True, cwd=REPO
    )
    assert process.returncode == 0, process.stderr[-3000:]
    answer = json.loads(process.stdout)
    # 1020 images, 102 held out: 918 trained on; 918 * 4 // 64 = 57 steps per epoch.
    assert answer["derived"] == [102, 918, 57, 300 * 57, 15 * 4, [100 * 57, 200 * 57, 225 * 57]]
    refusal = answer["refusal"]
    assert "\n" not in refusal and "has no dataset spec" in refusal
    assert "dataset_spec=mixmo_tf.data.resolved_spec(dataset, image_size, data_dir)" in refusal


def test_two_configs_of_different_data_keep_their_own_spec(tmp_path):
    """Two folders of one name resolved in one process: each Config keeps its data's numbers."""
    small = write_image_folder(tmp_path / "a" / "pets", train_per_class=5)
    large = write_image_folder(tmp_path / "b" / "pets", train_per_class=11)
    configs = []
    for folder in (small, large):
        dataset = f"folder:{folder}"
        spec = data.resolved_spec(dataset, 16, None)
        settings = dict(image_size=16, batch_size=8, batch_repetitions=2, epochs=2)
        configs.append(Config(dataset=dataset, dataset_spec=spec, **settings))
    assert [c.num_train_examples for c in configs] == [15, 33]
    assert [c.derived_steps_per_epoch for c in configs] == [3, 8]
    assert [c.total_steps for c in configs] == [6, 16]


def test_a_spec_that_is_not_the_datasets_is_refused():
    config = Config(dataset=FLOWERS, dataset_spec=_flowers_spec())
    with pytest.raises(ValueError, match=r"Received: the spec of tfds:oxford_flowers102 at 64x64"):
        dataclasses.replace(config, image_size=32)
    with pytest.raises(ValueError, match="for dataset='tfds:caltech101'"):
        dataclasses.replace(config, dataset="tfds:caltech101")
    with pytest.raises(ValueError, match="dataset_spec must be the spec of --dataset"):
        Config(dataset="cifar10", dataset_spec=DATASETS["cifar100"])


def test_a_named_dataset_has_its_fixed_spec_whether_given_or_not():
    given = Config(dataset="cifar10", dataset_spec=data.resolved_spec("cifar10", 0, None))
    assert given == Config(dataset="cifar10") and given.dataset_spec is None
    assert given.spec is DATASETS["cifar10"]
    # A copy for another named dataset carries no stale spec.
    assert dataclasses.replace(given, dataset="cifar100").spec is DATASETS["cifar100"]


def test_a_carried_spec_too_small_for_a_step_is_refused_when_the_config_is_made():
    with pytest.raises(ValueError, match="exceeds the 10 training images of tfds:"):
        Config(dataset=FLOWERS, batch_size=64, dataset_spec=_flowers_spec(num_train=10))


def test_a_recorded_run_carries_the_spec_of_its_dataset_spec_json(tmp_path):
    spec = _flowers_spec()
    config = Config(dataset=FLOWERS, model_dir=str(tmp_path), dataset_spec=spec)
    run_record.record_run_config(config)
    run_record.record_spec(spec, config.model_dir)
    with open(RunFolder(config.model_dir).run_config) as stream:
        assert "dataset_spec" not in json.load(stream)  # dataset_spec.json is the record
    recorded = run_record.recorded_config(config.model_dir)
    assert recorded.dataset_spec == spec and recorded == config
    # A Config given without the spec (a flag-built one) matches the record, and takes it.
    without = dataclasses.replace(config, dataset_spec=None)
    run_record.check_run_config(without)
    assert run_record.with_recorded_spec(without) == config
    assert mixmo_tf.config.recorded_config is run_record.recorded_config


def test_a_damaged_dataset_spec_json_is_named_when_the_run_is_read(tmp_path):
    config = Config(dataset=FLOWERS, model_dir=str(tmp_path))
    run_record.record_run_config(config)
    with open(RunFolder(config.model_dir).dataset_spec, "w") as stream:
        stream.write("[1]")
    with pytest.raises(run_record.RunConfigError, match="is not the dataset spec training wrote"):
        run_record.recorded_config(config.model_dir)


def test_a_spec_survives_the_json_of_the_timing_child():
    config = Config(dataset=FLOWERS, dataset_spec=_flowers_spec())
    fields = json.loads(json.dumps(dataclasses.asdict(config)))
    rebuilt = Config(**{**fields, "dataset_spec": spec_from_json(fields["dataset_spec"])})
    assert rebuilt == config


def test_the_specs_keep_their_names_under_data():
    from mixmo_tf.config import datasets

    for name in ("DATASETS", "DatasetSpec", "dataset_spec"):
        assert getattr(data, name) is getattr(datasets, name) and name in dir(data)
