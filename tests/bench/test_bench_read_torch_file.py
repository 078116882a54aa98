"""bench/read_torch_file.py: its synthetic checkpoint has the authors' WRN-28-10 names and
shapes, and its child process measures one read (what `read_torch_file` itself does:
tests/importing/test_torch_format.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import read_torch_file as read_bench  # bench/read_torch_file.py
from helpers.paths import AUTHORS_FIXTURES
from helpers.torch_writer import write_torch_file


def test_bench_checkpoint_has_the_authors_wrn28_10_names_and_shapes():
    seeded = np.load(os.path.join(AUTHORS_FIXTURES, "wrn28-10_m2_seeded.npz"))
    authors = [(name, tuple(shape)) for name, shape in json.loads(str(seeded["shapes"]))]
    assert read_bench.wrn_state_shapes() == authors
    assert sum(np.prod(shape) for name, shape in authors if "num_batches" not in name) == 36_619_368


def test_bench_child_measures_one_read_in_a_fresh_process(tmp_path):
    path = tmp_path / "small.pt"
    write_torch_file({"w": np.ones(2**20, np.float32)}, path)  # 4 MiB
    timed = read_bench.child_record(str(path), "time")
    assert timed["tensors"] == 1 and 0 < timed["read_s"] < 10
    assert 3.5 < timed["rss_growth_mib"] < 12  # the touched 4 MiB, not the parent's memory
    assert 0 < read_bench.child_record(str(path), "tracemalloc")["tracemalloc_peak_mib"] < 1
