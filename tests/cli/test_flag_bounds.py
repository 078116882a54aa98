"""Every numeric flag has a range checked before anything is built, and every flag is read
by the modes that take it: any other mode refuses it in one line."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex

import pytest
from absl import flags
from helpers.flags import parse
from helpers.paths import AUTHORS_FIXTURES, FLAGS_DIR, REPO

from mixmo_tf.cli import app, flag_use, modes
from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.config import Config, backbones, run_record
from mixmo_tf.config.ranges import Range
from mixmo_tf.config.settings import valid_range

_NUMERIC_TYPES = ("int", "float", "tuple[int, ...]")
_NUMERIC_FIELDS = [
    field.name for field in dataclasses.fields(Config) if field.type in _NUMERIC_TYPES
]


def _outside(valid: Range) -> list[float]:
    """A value below and one above `valid` (twice its top: one more is lost in 1e36's float)."""
    below = valid.low if valid.low_open else valid.low - 1
    above = valid.high if valid.high_open else 2 * valid.high
    return [below, above]


def _out_of_range_cases() -> list[tuple[str, str]]:
    cases = []
    for name in _NUMERIC_FIELDS:
        is_float = Config.__dataclass_fields__[name].type == "float"
        values = [float(v) if is_float else int(v) for v in _outside(valid_range(name))]
        cases += [(name, str(value)) for value in values]
        if is_float:
            cases += [(name, value) for value in ("nan", "inf", "-inf")]
    return cases


def test_every_numeric_field_has_a_range():
    assert _NUMERIC_FIELDS, "the Config's numeric fields were not found"
    assert [name for name in _NUMERIC_FIELDS if valid_range(name) is None] == []


@pytest.mark.parametrize("name, value", _out_of_range_cases())
def test_a_number_outside_its_range_is_refused_naming_its_flag(name, value):
    with pytest.raises(ValueError) as error:
        parse("--dataset=digits", f"--{name}={value}")
    message = str(error.value)
    assert message.startswith(f"--{name} must be "), message
    if value in ("nan", "inf", "-inf"):
        assert message == f"--{name} must be a finite number. Received: {name}={float(value)}"
    else:
        assert f"must be in {valid_range(name)}" in message and f"Received: {name}=" in message


def test_the_papers_flagfiles_are_within_every_range():
    flagfiles = sorted(name for name in os.listdir(FLAGS_DIR) if name.endswith(".flags"))
    assert len(flagfiles) >= 26
    for name in flagfiles:
        parse(f"--flagfile={os.path.join(FLAGS_DIR, name)}").check_ranges()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=208), "--depth must be 6n+4 in [10, 202] for --backbone=wrn"),
        (
            dict(depth=28, width=64),
            "WRN-28-64 has about 1.6 billion weights; at most 1 billion train in 24 GiB of "
            "memory: lower --width or --depth. Received: width=64, depth=28",
        ),
        (
            dict(backbone="preact_resnet", width=10),
            "PreActResNet-18-10 has about 1.1 billion weights; at most 1 billion train in 24 GiB "
            "of memory: lower --width. Received: width=10",
        ),
    ],
)
def test_networks_too_deep_or_too_large_to_build_are_refused(kwargs, message):
    with pytest.raises(ValueError) as error:
        Config(dataset="digits", **kwargs)
    assert str(error.value).startswith(message)


def test_the_largest_networks_allowed_are_valid():
    Config(dataset="digits", depth=backbones.MAX_WRN_DEPTH, width=1)
    Config(dataset="digits", depth=10, width=backbones.MAX_WIDTH)
    Config(dataset="digits", backbone="preact_resnet", width=9)


@pytest.mark.parametrize("temperature", [0.0, 101.0, float("nan"), float("inf")])
def test_a_temperature_outside_its_range_is_refused(temperature):
    with pytest.raises(ValueError, match="^--temperature must be "):
        modes.check_serving_flags("export", "run", None, None, temperature)


# ---- which modes read which flags ----------------------------------------------------------


def _fresh_values(*args: str) -> flags.FlagValues:
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["main.py", *args])
    return values


def _given(values: flags.FlagValues, name: str) -> str:
    """A well-formed command-line argument giving the flag `name`."""
    flag = values[name]
    if isinstance(flag, flags.BooleanFlag):
        return f"--{name}"
    return flag.serialize() if flag.default not in (None, "") else f"--{name}=1"


def _pairs() -> list[tuple[str, str]]:
    names = mixmo_flags.mixmo_flag_names()
    return [(name, mode) for name in names for mode in mixmo_flags.MODES]


@pytest.mark.parametrize("name, mode", _pairs())
def test_a_flag_is_refused_by_every_mode_that_does_not_read_it(name, mode):
    argument = _given(_fresh_values(), name)
    values = _fresh_values(f"--mode={mode}", argument)
    if mode in mixmo_flags.modes_reading(name):
        mixmo_flags.check_flags_apply(values)
        return
    with pytest.raises(ValueError) as error:
        mixmo_flags.check_flags_apply(values)
    message = str(error.value)
    assert re.match(rf"--{name} is read by --mode=\w+", message), message
    assert f"not --mode={mode}: " in message and "\n" not in message


def test_every_flag_main_defines_is_in_the_table_of_modes():
    # A new non-Config flag must say which modes read it (else it counts as a run setting).
    assert sorted(mixmo_flags.mixmo_flag_names()) == sorted(_fresh_values())


def test_the_modes_reading_each_flag_are_those_the_modes_take():
    reading = {name: mixmo_flags.modes_reading(name) for name in ("checkpoint", "images", "smoke")}
    assert reading == {
        "checkpoint": ("import",),
        "images": ("predict",),
        "smoke": ("train", "evaluate"),
    }
    assert mixmo_flags.modes_reading("epochs") == ("train", "import", "evaluate")
    assert mixmo_flags.modes_reading("model_dir") == mixmo_flags.MODES


def test_a_checkpoint_given_to_training_says_to_import_it_first():
    values = _fresh_values("--mode=train", "--checkpoint=paper.ckpt")
    with pytest.raises(ValueError) as error:
        mixmo_flags.check_flags_apply(values)
    assert str(error.value) == (
        "--checkpoint is read by --mode=import only, not --mode=train: to fine-tune the authors' "
        "file, import it first (--mode=import --checkpoint=FILE --model_dir=RUN), then train "
        "with --model_dir=RUN."
    )


def test_refused_flags_are_named_together_with_their_modes():
    values = _fresh_values("--mode=export", "--model_dir=r", "--images=x", "--dataset=cifar10")
    with pytest.raises(ValueError) as error:
        mixmo_flags.check_flags_apply(values)
    assert str(error.value) == (
        "--images is read by --mode=predict only; --dataset is read by --mode=train, "
        "--mode=import and --mode=evaluate, not --mode=export: --mode=export reads the run's "
        "settings from its run_config.json; drop them."
    )


def test_flags_from_a_flagfile_count_as_given(tmp_path):
    flagfile = tmp_path / "predict.flags"
    flagfile.write_text("--images=photos/*.jpg\n")
    values = _fresh_values("--mode=train", f"--flagfile={flagfile}")
    with pytest.raises(ValueError, match="^--images is read by --mode=predict only"):
        mixmo_flags.check_flags_apply(values)


def test_absl_flags_are_not_ours_to_refuse():
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    flags.DEFINE_integer("verbosity", 0, "absl's logging level", flag_values=values)
    values(["main.py", "--mode=export", "--model_dir=r", "--verbosity=1"])
    mixmo_flags.check_flags_apply(values)


def _documented_commands() -> list[tuple[str, list[str]]]:
    """(page, flags) of every `python main.py ...` command of the README and of the pages of
    docs/, continuation lines joined."""
    pages = [
        os.path.join(REPO, "README.md"),
        *sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))),
    ]
    commands = []
    for page in pages:
        with open(page, encoding="utf-8") as stream:
            text = stream.read().replace("\\\n", " ")
        for line in text.splitlines():
            found = re.match(r"^\s*(?:\$ )?python main\.py (.*)$", line)
            if found:
                arguments = shlex.split(found.group(1).split(" #")[0])
                flags_given = [a for a in arguments if a.startswith("--") and "<" not in a]
                commands.append((os.path.relpath(page, REPO), flags_given))
    return commands


def test_the_documented_commands_give_only_flags_their_modes_read(monkeypatch):
    monkeypatch.chdir(REPO)  # the documented flagfiles are relative to the repository
    commands = _documented_commands()
    pages = {page for page, _ in commands}
    assert {"README.md", "docs/reproducing.md", "docs/training.md", "docs/serving.md"} <= pages
    modes_used = {a for _, command in commands for a in command if a.startswith("--mode=")}
    assert {"--mode=import", "--mode=evaluate", "--mode=export", "--mode=predict"} <= modes_used
    for page, command in commands:
        try:
            values = _fresh_values(*command)
            mixmo_flags.check_flags_apply(values)
            flag_use.check_flags_used(values, [mixmo_flags.config_from_flags(values)])
        except Exception as error:
            raise AssertionError(f"{page}: python main.py {' '.join(command)}") from error
    export_options = ["--export_dir=DIR", "--temperature=1.5"]  # docs/serving.md's options
    mixmo_flags.check_flags_apply(_fresh_values("--mode=export", "--model_dir=r", *export_options))


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--checkpoint=paper.ckpt"],
            "ERROR: --checkpoint is read by --mode=import only, not --mode=train: to fine-tune",
        ),
        (["--lr_decay_factor=-0.1"], "ERROR: --lr_decay_factor must be in (0.0, 1.0]."),
        (["--l2=inf"], "ERROR: --l2 must be a finite number. Received: l2=inf"),
        (["--msda_prob=0.2"], "ERROR: --msda_prob is read with --msda=mixup or --msda=cutmix only"),
    ],
)
def test_main_refuses_in_one_line_before_writing_anything(tmp_path, capsys, args, message):
    run_dir = tmp_path / "run"
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["main.py", "--dataset=digits", "--smoke", f"--model_dir={run_dir}", *args])
        with pytest.raises(SystemExit) as exit_info:
            app.main(["main.py"])
    finally:
        flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(message) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # neither the run nor its --smoke folder


# ---- which settings read which flags ---------------------------------------------------------

# (arguments, the flag they give that the other settings leave unread, what the run has)
_UNREAD = [
    (["--backbone=preact_resnet", "--width=1", "--depth=18"], "depth", "--backbone=preact_resnet"),
    (["--mixing=linear", "--cut_prob=0.3"], "cut_prob", "--mixing=linear"),
    (["--mixing=mimo", "--cut_prob_decay_start=0.5"], "cut_prob_decay_start", "--mixing=mimo"),
    (["--mixing=mimo", "--mixing_alpha=1"], "mixing_alpha", "--mixing=mimo"),
    (
        ["--mixing=none", "--num_members=1", "--batch_repetitions=1", "--loss_power=2"],
        "loss_power",
        "--mixing=none",
    ),
    (["--msda_prob=0.3"], "msda_prob", "--msda=none"),
    (["--msda_alpha=2"], "msda_alpha", "--msda=none"),
    (["--lr_decay_epochs=", "--lr_decay_factor=0.5"], "lr_decay_factor", "--lr_decay_epochs="),
    (["--tpu=grpc://10.0.0.2:8470"], "tpu", "--distribution=default"),
    (["--download=never"], "download", "--dataset=digits"),
    (["--mode=evaluate", "--corruptions_dir=c100c"], "corruptions_dir", "--nocorruptions"),
    (
        ["--mode=evaluate", "--ensemble_dirs=a,b", "--model_dir=c"],
        "model_dir",
        "--ensemble_dirs=a,b",
    ),
    (["--mode=evaluate", "--ensemble_dirs=a,b", "--smoke"], "smoke", "--ensemble_dirs=a,b"),
]
# The same flags where the settings read them.
_READ = [
    ["--depth=16"],
    ["--smoke", "--depth=16"],
    ["--backbone=preact_resnet", "--width=2"],
    ["--mixing=cutmix", "--cut_prob=0.3", "--cut_prob_decay_start=0.5"],
    ["--mixing=linear", "--mixing_alpha=1", "--loss_power=2"],
    ["--msda=mixup", "--msda_prob=0.3", "--msda_alpha=2"],
    ["--lr_decay_epochs=5", "--lr_decay_factor=0.5"],
    ["--distribution=tpu", "--tpu=grpc://10.0.0.2:8470"],
    ["--dataset=cifar10", "--download=never"],
    ["--dataset=tfds:oxford_flowers102", "--download=never"],
    ["--mode=evaluate", "--model_dir=c", "--corruptions", "--corruptions_dir=c100c"],
    ["--mode=evaluate", "--model_dir=c", "--smoke"],
    ["--mode=evaluate", "--ensemble_dirs=a,b"],
]


def _check_used(*args: str) -> None:
    """`check_flags_used` on the Config that the flags build, as training checks them."""
    values = _fresh_values("--dataset=digits", *args)
    flag_use.check_flags_used(values, [mixmo_flags.config_from_flags(values)])


def test_every_rule_has_a_refused_case():
    # --width: every built-in backbone reads it (see test_a_backbone_registered_later_counts).
    refused = [name for _, name, _ in _UNREAD] + ["width"]
    assert sorted(refused) == sorted(flag_use.reading_rules())


@pytest.mark.parametrize("args, name, setting", _UNREAD)
def test_a_flag_the_settings_leave_unread_is_refused_naming_the_setting(args, name, setting):
    with pytest.raises(ValueError) as error:
        _check_used(*args)
    message = str(error.value)
    assert message.startswith(f"--{name} is read "), message
    assert f" only (this run has {setting}): drop it" in message and "\n" not in message


@pytest.mark.parametrize("args", _READ)
def test_a_flag_the_settings_read_is_accepted(args):
    _check_used(*args)


def test_an_unread_flag_says_which_setting_reads_it():
    with pytest.raises(ValueError) as error:
        _check_used("--mixing=linear", "--cut_prob=0.3")
    assert str(error.value) == (
        "--cut_prob is read with --mixing=cutmix only (this run has --mixing=linear): drop it, "
        "or choose --mixing=cutmix."
    )


def test_unread_flags_are_named_together_with_what_reads_them():
    with pytest.raises(ValueError) as error:
        _check_used("--mixing=mimo", "--mixing_alpha=1", "--loss_power=2", "--tpu=t")
    assert str(error.value) == (
        "--mixing_alpha and --loss_power are read with --mixing=linear or --mixing=cutmix only "
        "(this run has --mixing=mimo): drop them, or choose --mixing=linear or --mixing=cutmix; "
        "--tpu is read with --distribution=tpu only (this run has --distribution=default): drop "
        "it, or choose --distribution=tpu."
    )


def test_a_backbone_registered_later_counts(monkeypatch):
    fixed = backbones.BackboneEntry("fixed_net:build", label=lambda depth, width: "fixed", flags=())
    monkeypatch.setitem(backbones._REGISTRY, "fixed_net", fixed)
    with pytest.raises(ValueError) as error:
        _check_used("--backbone=fixed_net", "--width=2")
    assert str(error.value) == (
        "--width is read with --backbone=wrn or --backbone=preact_resnet only (this run has "
        "--backbone=fixed_net): drop it, or choose --backbone=wrn or --backbone=preact_resnet."
    )


def test_evaluate_checks_the_flags_against_the_recorded_run(tmp_path, capsys):
    run = tmp_path / "mimo_run"
    run_record.record_run_config(Config(dataset="digits", mixing="mimo", model_dir=str(run)))
    before = sorted(os.listdir(run))
    err = _main_error(capsys, "--mode=evaluate", f"--model_dir={run}", "--cut_prob=0.5")
    assert err == (
        "ERROR: --cut_prob is read with --mixing=cutmix only (this run has --mixing=mimo): drop "
        "it, or choose --mixing=cutmix.\n"
    )
    assert sorted(os.listdir(run)) == before


def test_import_checks_the_flags_against_the_imported_run(tmp_path, capsys):
    # A single network without --mixing is imported as --mixing=none, which has no cuts.
    single = os.path.join(AUTHORS_FIXTURES, "wrn10-1_m1_zip.pt")
    run = tmp_path / "run"
    args = ["--mode=import", f"--checkpoint={single}", f"--model_dir={run}", "--dataset=digits"]
    err = _main_error(capsys, *args, "--cut_prob=0.3")
    assert err.startswith(
        "ERROR: --cut_prob is read with --mixing=cutmix only (this run has --mixing=none)"
    )
    assert not run.exists()


def test_the_papers_flagfiles_give_only_flags_their_settings_read():
    for name in sorted(os.listdir(FLAGS_DIR)):
        if name.endswith(".flags"):
            for smoke in ([], ["--smoke"]):
                values = _fresh_values(f"--flagfile={os.path.join(FLAGS_DIR, name)}", *smoke)
                flag_use.check_flags_used(values, [mixmo_flags.config_from_flags(values)])


def _main_error(capsys, *args: str) -> str:
    """What `main` prints on stderr for the command line `args`, which it must refuse (exit 2)."""
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["main.py", *args])
        with pytest.raises(SystemExit) as exit_info:
            app.main(["main.py"])
    finally:
        flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    return capsys.readouterr().err
