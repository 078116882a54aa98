"""An import refuses files that cannot be a trained authors' network, in one line, writing nothing.

Each case changes one field of the small authors' checkpoint (tests/fixtures/authors/) or
writes a hostile torch file, then checks the exact error class and message of
`read_authors_checkpoint`, and that `--mode=import`'s check (before TensorFlow starts) exits 2
with one ERROR line naming the file, leaving no run folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import numpy as np
import pytest
from helpers import torch_writer
from helpers.paths import AUTHORS_FIXTURES

from mixmo_tf.cli import modes
from mixmo_tf.config.settings import Config
from mixmo_tf.importing import authors_checkpoint
from mixmo_tf.importing.authors_checkpoint import AuthorsArchitecture, AuthorsCheckpointError
from mixmo_tf.importing.pytorch_import import load_pytorch_checkpoint
from mixmo_tf.importing.torch_format import TorchFileError, read_torch_file

SMALL = os.path.join(AUTHORS_FIXTURES, "wrn10-1_m2_zip.pt")
STATE = authors_checkpoint.STATE_KEY
OPTIMIZER = authors_checkpoint.OPTIMIZER_KEY
STEM = "list_conv1.0.weight"
VARIANCE = "layer1.0.bn1.running_var"
COUNTER = "layer1.0.bn1.num_batches_tracked"


def authors_content() -> dict:
    """The small checkpoint's content, with every dict a fresh copy that a case may change."""
    content = read_torch_file(SMALL)
    optimizer = content[OPTIMIZER]
    return {
        **content,
        STATE: dict(content[STATE]),
        OPTIMIZER: {
            "state": {key: dict(entry) for key, entry in optimizer["state"].items()},
            "param_groups": [dict(group) for group in optimizer["param_groups"]],
        },
    }


def _set(*keys_and_value) -> Callable[[dict], None]:
    """A change that sets content[k1][k2]...[kn] = value (a callable value is given the old)."""
    *keys, value = keys_and_value

    def change(content: dict) -> None:
        holder = content
        for key in keys[:-1]:
            holder = holder[key]
        holder[keys[-1]] = value(holder[keys[-1]]) if callable(value) else value

    return change


def _group(key, value) -> Callable[[dict], None]:
    return _set(OPTIMIZER, "param_groups", 0, key, value)


def _buffer(value) -> Callable[[dict], None]:
    return _set(OPTIMIZER, "state", 0, "momentum_buffer", value)


def _add(key, value) -> Callable[[dict], None]:
    return lambda content: content.__setitem__(key, value)


def _seventeen_members(content: dict) -> None:
    """A WRN-10-1 with 17 stems and heads: more members than --num_members allows (16)."""
    shapes = authors_checkpoint.authors_state_shapes(AuthorsArchitecture("wrn", 10, 1, 17, 10))
    content[STATE] = {
        name: np.ones(shape, np.int64 if name.endswith("tracked") else np.float32)
        for name, shape in shapes
    }
    content.pop(OPTIMIZER)


_BAD_VALUES = "A trained network has none: download the file again"
_NOT_SGD = "which torch.optim.SGD's state dict never has"
# id -> (change of the content, error class, pattern of the message after the path)
CASES = {
    # tensors no trained network has (read_authors_checkpoint's value check)
    "nan_weight": (
        _set(STATE, STEM, lambda w: np.where(np.arange(w.size).reshape(w.shape) < 2, np.nan, w)),
        AuthorsCheckpointError,
        rf"{STEM} has 2 NaN or infinite values \(in float32\)\. {_BAD_VALUES}",
    ),
    "inf_bn_mean": (
        _set(STATE, "bn1.running_mean", lambda m: np.full_like(m, np.inf)),
        AuthorsCheckpointError,
        r"bn1\.running_mean has 64 NaN or infinite values",
    ),
    "float64_beyond_float32": (
        _set(STATE, STEM, lambda w: np.full(w.shape, 1e300)),
        AuthorsCheckpointError,
        rf"{STEM} has 432 NaN or infinite values \(in float32\)",
    ),
    "negative_variance": (
        _set(STATE, VARIANCE, lambda v: np.where(np.arange(v.size) < 3, -1.0, v).astype(v.dtype)),
        AuthorsCheckpointError,
        rf"{VARIANCE} has 3 negative values\. {_BAD_VALUES}",
    ),
    "negative_batch_count": (
        _set(STATE, COUNTER, np.array(-5)),
        AuthorsCheckpointError,
        rf"{COUNTER} has 1 negative values",
    ),
    "nan_momentum": (
        _buffer(lambda b: np.full_like(b, np.nan)),
        AuthorsCheckpointError,
        rf"the momentum buffer of {STEM} has 432 NaN or infinite values",
    ),
    "many_bad_tensors_named_first_three": (
        lambda c: c[STATE].update(
            {k: np.full_like(v, np.nan) for k, v in c[STATE].items() if v.dtype.kind == "f"}
        ),
        AuthorsCheckpointError,
        rf"{STEM} has 432 NaN .*; .*; .*; and \d+ more\. {_BAD_VALUES}",
    ),
    # dtypes and types where the authors' network has floats
    "int_weight": (
        _set(STATE, STEM, lambda w: w.astype(np.int64)),
        AuthorsCheckpointError,
        rf"{STEM} holds int64, where the authors' network has floating point values",
    ),
    "bool_weight": (
        _set(STATE, STEM, lambda w: w > 0),
        AuthorsCheckpointError,
        rf"{STEM} holds bool, where",
    ),
    "list_weight": (
        _set(STATE, STEM, lambda w: w.tolist()),
        AuthorsCheckpointError,
        rf"{STEM} holds list, where",
    ),
    "ragged_list_weight": (
        _set(STATE, STEM, [[1.0], [1.0, 2.0]]),
        AuthorsCheckpointError,
        rf"{STEM} holds list, where",
    ),
    "float_batch_count": (
        _set(STATE, COUNTER, np.array(1.5)),
        AuthorsCheckpointError,
        rf"{COUNTER} holds float64, where the authors' network has an integer count",
    ),
    "int_momentum": (
        _buffer(lambda b: b.astype(np.int32)),
        AuthorsCheckpointError,
        rf"the momentum buffer of {STEM} holds int32, where",
    ),
    "string_momentum": (
        _buffer("fast"),
        AuthorsCheckpointError,
        rf"the momentum buffer of {STEM} holds str, where",
    ),
    # keys
    "int_key_in_state_dict": (
        _set(STATE, 3, np.zeros(1, np.float32)),
        AuthorsCheckpointError,
        rf"{STATE} has the key 3 \(int\), where a state dict names its tensors",
    ),
    "tuple_key_at_top": (
        _add((1, 2), 0),
        AuthorsCheckpointError,
        r"its top-level dict has the key \(1, 2\) \(tuple\), not a name",
    ),
    # the epoch
    **{
        f"epoch_{name}": (
            _add("epoch", value),
            AuthorsCheckpointError,
            rf"its epoch is {shown}; the authors' checkpoint records the epoch it was saved "
            r"after, an integer in \[0, 10000\]",
        )
        for name, value, shown in [
            ("string", "3", r"'3' \(str\)"),
            ("float", 2.5, r"2\.5 \(float\)"),
            ("bool", True, r"True \(bool\)"),
            ("negative", -3, r"-3 \(int\)"),
            ("beyond_bound", 10_001, r"10001 \(int\)"),
            ("huge", 10**30, "an integer of 100 bits"),
            ("tensor", np.array(3), r"array\(3\) \(ndarray\)"),
            ("none", None, r"None \(NoneType\)"),
        ]
    },
    # the optimizer state
    "optimizer_list": (
        _add(OPTIMIZER, [1, 2]),
        AuthorsCheckpointError,
        rf"{OPTIMIZER} is \[1, 2\] \(list\), not a dict, {_NOT_SGD}",
    ),
    "optimizer_tensor": (
        _add(OPTIMIZER, np.zeros(3)),
        AuthorsCheckpointError,
        r"is array\(\[0\., 0\., 0\.\]\) \(ndarray\), not a dict",
    ),
    "param_groups_dict": (
        _set(OPTIMIZER, "param_groups", {"lr": 1}),
        AuthorsCheckpointError,
        rf"has param_groups {{'lr': 1}} \(dict\), not a list of dicts, {_NOT_SGD}",
    ),
    "param_groups_of_ints": (
        _set(OPTIMIZER, "param_groups", [3]),
        AuthorsCheckpointError,
        r"has param_groups \[3\] \(list\), not a list of dicts",
    ),
    "params_strings": (
        _group("params", lambda params: [str(p) for p in params]),
        AuthorsCheckpointError,
        r"lists params \['0', '1', .*\] \(list\), not integer ids",
    ),
    "params_int": (_group("params", 5), AuthorsCheckpointError, r"lists params 5 \(int\)"),
    "params_repeated": (
        _group("params", lambda params: [0, *params[1:-1], 0]),
        AuthorsCheckpointError,
        "lists a parameter twice",
    ),
    "state_list": (
        _set(OPTIMIZER, "state", [1]),
        AuthorsCheckpointError,
        r"has state \[1\] \(list\), not a dict",
    ),
    "state_string_keys": (
        _set(OPTIMIZER, "state", lambda state: {str(k): v for k, v in state.items()}),
        AuthorsCheckpointError,
        r"has state for '0' \(str\), not a parameter id",
    ),
    "state_entry_not_a_dict": (
        _set(OPTIMIZER, "state", 0, "buffer"),
        AuthorsCheckpointError,
        r"has state 'buffer' \(str\) for parameter 0",
    ),
    "lr_string": (_group("lr", "0.1"), AuthorsCheckpointError, r"has lr '0\.1' \(str\), not a"),
    "lr_nan": (_group("lr", float("nan")), AuthorsCheckpointError, r"has lr nan \(float\)"),
    "weight_decay_huge_negative_int": (
        _group("weight_decay", -(10**400)),
        AuthorsCheckpointError,
        r"has weight_decay an integer of 1329 bits, not a number >= 0",
    ),
    "lr_huge_int": (
        _group("lr", 10**5000),
        AuthorsCheckpointError,
        r"has lr an integer of 16610 bits, not a number >= 0",
    ),
    "momentum_negative": (
        _group("momentum", -0.9),
        AuthorsCheckpointError,
        r"has momentum -0\.9 \(float\), not a number >= 0",
    ),
    "nesterov_string": (
        _group("nesterov", "yes"),
        AuthorsCheckpointError,
        r"has nesterov 'yes' \(str\), not a bool",
    ),
    # the network it claims
    "scalar_conv": (
        _set(STATE, "layer1.0.conv1.weight", np.array(1.0, np.float32)),
        AuthorsCheckpointError,
        r"layer1\.0\.conv1\.weight is a scalar, where the authors' WRN",
    ),
    "scalar_head_bias": (
        _set(STATE, "list_fc.0.bias", np.array(1.0, np.float32)),
        AuthorsCheckpointError,
        r"list_fc\.0\.bias is a scalar",
    ),
    "seventeen_members": (
        _seventeen_members,
        AuthorsCheckpointError,
        r"describes a WRN-10-1, M=17, 10 classes, which this project does not build "
        r"\(--num_members must be at most 16\)",
    ),
}


def _write_case(tmp_path, change) -> str:
    content = authors_content()
    change(content)
    path = str(tmp_path / "checkpoint.pt")
    torch_writer.write_torch_file(content, path)
    return path


def assert_import_refused(path: str, run, capsys) -> str:
    """The ERROR line `--mode=import`'s check prints for `path`; checks exit 2, one line
    naming the file, and that no run folder was written."""

    def check() -> int:
        modes.check_import_inputs(path, Config(model_dir=str(run), precision="float32"), True, [])
        return 0

    code = modes.report_user_errors(check)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"ERROR: {path}") and not run.exists(), lines
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_an_impossible_checkpoint_is_refused_in_one_line(tmp_path, capsys, case):
    change, error, pattern = CASES[case]
    path = _write_case(tmp_path, change)
    with pytest.raises(error) as raised:
        authors_checkpoint.read_authors_checkpoint(path)
    assert str(raised.value).startswith(path) and re.search(pattern, str(raised.value))
    line = assert_import_refused(path, tmp_path / "run", capsys)
    assert re.search(pattern, line)


def test_the_unchanged_fixture_passes_every_check(tmp_path):
    path = _write_case(tmp_path, lambda content: None)
    checkpoint = authors_checkpoint.read_authors_checkpoint(path)
    assert checkpoint.epoch == 3 and len(checkpoint.momentum) == 28


def test_load_pytorch_checkpoint_refuses_nan_weights_before_writing(tmp_path):
    path = _write_case(tmp_path, CASES["nan_weight"][0])
    with pytest.raises(AuthorsCheckpointError, match="NaN or infinite"):
        load_pytorch_checkpoint(path, model_dir=str(tmp_path / "run"), precision="float32")
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


# ---- hostile torch files through the import's check -----------------------------------------


def _deep_tuple_key(path: str) -> None:
    torch_writer.write_main_pickle(path, b"\x80\x02}" + b")" + b"\x85" * 100_000 + b"K\x01s.")


def _broadcast_stem(path: str) -> None:
    content = authors_content()
    content[STATE][STEM] = torch_writer.TensorView(
        np.zeros(1, np.float32), 0, (16 * 10**6, 3, 3, 3), (0, 0, 0, 0)
    )
    torch_writer.write_torch_file(content, path)


@pytest.mark.parametrize(
    "write, pattern",
    [
        (_deep_tuple_key, "holds values nested more than 100 levels deep"),
        (_broadcast_stem, r"repeats the 1 elements of its storage \(a broadcast view\)"),
    ],
    ids=["deep_nesting", "broadcast_tensor"],
)
def test_a_hostile_file_is_refused_in_one_line(tmp_path, capsys, write, pattern):
    path = str(tmp_path / "hostile.pt")
    write(path)
    with pytest.raises(TorchFileError, match=pattern):
        authors_checkpoint.read_authors_checkpoint(path)
    assert re.search(pattern, assert_import_refused(path, tmp_path / "run", capsys))
