"""experiments/digits_table.py: every method row at one equal budget, and its table."""

from __future__ import annotations

import argparse
import json

import digits_table
import pytest

EXPECTED = {
    "vanilla": ("none", 1, "none"),
    "vanilla_mixup": ("none", 1, "mixup"),
    "vanilla_cutmix": ("none", 1, "cutmix"),
    "mimo": ("mimo", 2, "none"),
    "linear_mixmo": ("linear", 2, "none"),
    "linear_mixmo_cutmix": ("linear", 2, "cutmix"),
    "cut_mixmo": ("cutmix", 2, "none"),
    "cut_mixmo_cutmix": ("cutmix", 2, "cutmix"),
}


@pytest.mark.parametrize("name,stem", digits_table.METHODS)
def test_each_row_keeps_its_method_and_gets_the_common_budget(name, stem, tmp_path):
    config = digits_table.method_config(f"cifar100_wrn28-10_{stem}.flags", 200, 1, str(tmp_path))
    assert (config.mixing, config.num_members, config.msda) == EXPECTED[stem]
    assert (config.dataset, config.depth, config.width) == ("digits", 10, 1)
    assert config.total_steps == 200 and config.batch_size == 64 and config.seed == 1
    assert config.batch_repetitions == (1 if config.num_members == 1 else 2)


def test_table_reports_mean_and_std_over_seeds(tmp_path):
    output = tmp_path / "table.jsonl"
    rows = [
        {
            "method": "MIMO (M=2)",
            "seed": s,
            "steps": 200,
            "accuracy": a,
            "nll": 0.2,
            "mean_member_accuracy": a - 0.1,
            "ts": {"nll": 0.1, "ece": 0.01, "temperature": 1.0},
        }
        for s, a in ((0, 0.9), (1, 0.8))
    ]
    output.write_text("".join(json.dumps(row) + "\n" for row in rows))
    digits_table.write_table(type("Args", (), {"output": str(output)}))
    table = (tmp_path / "table.md").read_text()
    assert "| MIMO (M=2) | 2 | 85.00 ± 5.00 | 0.200 ± 0.000 |" in table
    assert (tmp_path / "table.png").read_bytes()[:4] == b"\x89PNG"


def test_the_decays_fall_at_five_sixths_and_the_last_epoch_as_the_digits_flagfile():
    assert digits_table.decay_epochs(12) == "10,12"  # flags/digits_wrn10-1_cut_mixmo.flags
    assert digits_table.decay_epochs(4) == "3,4"
    assert digits_table.decay_epochs(1) == "1"


def test_shards_parse_and_a_bad_one_is_refused():
    assert digits_table._shard("1/2") == (1, 2)
    with pytest.raises(argparse.ArgumentTypeError, match="0 <= i < n"):
        digits_table._shard("2/2")


def test_an_output_of_another_budget_is_refused_before_training(tmp_path):
    output = tmp_path / "table.jsonl"
    output.write_text(json.dumps({"method": "Vanilla", "seed": 0, "steps": 200}) + "\n")
    args = argparse.Namespace(output=str(output), steps=600, seeds=[0], shard=(0, 1))
    with pytest.raises(SystemExit, match=r"runs of \[200\] steps, not --steps=600"):
        digits_table.train_and_evaluate(args)
