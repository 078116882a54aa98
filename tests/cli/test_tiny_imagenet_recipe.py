"""The Tiny ImageNet flagfiles: one per row of the paper's PreActResNet-18-w table.

Each parses into the recipe of docs/method.md §9 as the authors' configs run it: batch 100,
1200 epochs, base lr 0.2 / b, warm-up 1000 * b steps, x0.1 at epochs 600 and 900, coupled
weight decay 1e-4 as --l2=5e-5, float32; b = 1 for the single network, 4 for MixMo.
"""

from __future__ import annotations

import glob
import os

import pytest
from helpers.flags import parse
from helpers.paths import FLAGS_DIR

FLAGFILES = sorted(glob.glob(os.path.join(FLAGS_DIR, "tiny_imagenet_*.flags")))
PUBLISHED = {  # docs/method.md §11: vanilla / Linear-MixMo / Cut-MixMo top-1
    1: {"vanilla": "62.75", "linear_mixmo": "62.91", "cut_mixmo": "64.32"},
    2: {"vanilla": "64.91", "linear_mixmo": "67.03", "cut_mixmo": "69.12"},
    3: {"vanilla": "65.84", "linear_mixmo": "68.36", "cut_mixmo": "70.23"},
}


def test_there_is_a_flagfile_per_row_of_the_table():
    names = {os.path.basename(path) for path in FLAGFILES}
    expected = {
        f"tiny_imagenet_preact_resnet18-{width}_{row}.flags"
        for width, rows in PUBLISHED.items()
        for row in rows
    }
    assert names == expected


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_each_flagfile_is_the_authors_recipe(path):
    name = os.path.basename(path)[: -len(".flags")]
    width = int(name.split("-")[1][0])
    row = name.split("_", 4)[-1]
    config = parse(f"--flagfile={path}")
    single = row == "vanilla"
    b = 1 if single else 4
    assert (config.dataset, config.backbone, config.width) == (
        "tiny_imagenet",
        "preact_resnet",
        width,
    )
    assert config.num_members == (1 if single else 2)
    assert (
        config.mixing == {"vanilla": "none", "linear_mixmo": "linear", "cut_mixmo": "cutmix"}[row]
    )
    assert (config.batch_size, config.batch_repetitions, config.epochs) == (100, b, 1200)
    assert config.base_learning_rate == pytest.approx(0.2 / b)
    assert config.warmup_steps == 1000 * b
    assert config.derived_steps_per_epoch == 1000 * b
    assert config.lr_decay_steps == (599 * 1000 * b, 899 * 1000 * b)
    assert config.lr_decay_factor == 0.1 and config.momentum == 0.9
    assert config.l2 == pytest.approx(5e-5)  # 2 * l2 = PyTorch's coupled weight_decay 1e-4
    assert config.precision == "float32"
    assert config.model_dir == f"runs/{name}"
    with open(path) as handle:
        assert f"Published top-1 (best epoch): {PUBLISHED[width][row]} %" in handle.read()
