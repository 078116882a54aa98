"""Which flags the run's other settings read: a given flag they make meaningless is refused.

`mixmo_tf.cli.flags.check_flags_apply` refuses a flag that --mode does not read; this module
refuses one that --mode reads but the run's settings ignore (--cut_prob with --mixing=linear,
--depth with --backbone=preact_resnet, --tpu without --distribution=tpu, ...), so that no flag
a user gave is dropped without a word. No TensorFlow is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from absl import flags

from mixmo_tf.config.backbones import backbone_entry, backbone_names
from mixmo_tf.config.choices import MSDA_KINDS
from mixmo_tf.config.datasets import DATASETS
from mixmo_tf.config.errors import ConfigError
from mixmo_tf.config.settings import Config, recorded_fields
from mixmo_tf.data.sources import tfds_prepares

_CONFIG_FIELDS = frozenset(field.name for field in recorded_fields())


@dataclasses.dataclass(frozen=True)
class ReadOnly:
    """When a flag is read: only if the flag `setting` has a value that `reads` accepts.

    Attributes:
        setting: the flag (a Config field, or an evaluation flag) whose value decides.
        reads: whether a value of `setting` makes the flag read.
        condition: the values that read it, for messages: "with --mixing=cutmix".
        fix: how to make it read, after "drop it, or " ("choose --mixing=cutmix"); empty if
            dropping it is the only fix.
    """

    setting: str
    reads: Callable[[object], bool]
    condition: str
    fix: str = ""


def _choice(setting: str, values: Sequence[str]) -> ReadOnly:
    """Read only with --setting set to one of `values`."""
    named = " or ".join(f"--{setting}={value}" for value in values)
    return ReadOnly(setting, lambda value: value in values, f"with {named}", f"choose {named}")


def _shaping(name: str) -> ReadOnly:
    """Read only by the backbones whose network `name` (depth, width) shapes."""
    return _choice("backbone", [b for b in backbone_names() if name in backbone_entry(b).flags])


def reading_rules() -> dict[str, ReadOnly]:
    """Every flag that some settings leave unread, with the settings that read it.

    Built at each check: backbones registered since import count.
    """
    # MIMO and none use equal ratios and r = 1 (Config.effective_mixing_alpha, _loss_power).
    mixmo = _choice("mixing", ("linear", "cutmix"))
    # Only Cut-MixMo cuts (Config.effective_cut_prob).
    cut_mixmo = _choice("mixing", ("cutmix",))
    input_mixing = _choice("msda", [kind for kind in MSDA_KINDS if kind != "none"])
    prepared = [name for name in DATASETS if tfds_prepares(name)]
    single_run = ReadOnly(
        "ensemble_dirs",
        lambda folders: not folders,
        "without --ensemble_dirs",
        "drop --ensemble_dirs to evaluate one run",
    )
    return {
        "depth": _shaping("depth"),  # PreActResNet-18 is always 18 deep
        "width": _shaping("width"),
        "mixing_alpha": mixmo,
        "loss_power": mixmo,
        "cut_prob": cut_mixmo,
        "cut_prob_decay_start": cut_mixmo,
        "msda_prob": input_mixing,
        "msda_alpha": input_mixing,
        "lr_decay_factor": ReadOnly(
            "lr_decay_epochs", bool, "with --lr_decay_epochs", "give --lr_decay_epochs"
        ),
        "tpu": _choice("distribution", ("tpu",)),
        "download": ReadOnly(
            "dataset",
            tfds_prepares,
            f"with a dataset that tfds prepares ({', '.join(prepared)} or tfds:NAME)",
        ),
        "corruptions_dir": ReadOnly("corruptions", bool, "with --corruptions", "add --corruptions"),
        "model_dir": single_run,
        "smoke": single_run,  # --mode=evaluate --smoke names <model_dir>_smoke
    }


def _setting(values: flags.FlagValues, run: Config, name: str) -> object:
    """The value of `name` in effect: the run's for a Config field, else the flag's."""
    return getattr(run, name) if name in _CONFIG_FIELDS else values[name].value


def _as_flag(name: str, value: object) -> str:
    """`value` written as the flag that gives it: --mixing=mimo, --nocorruptions, --x=a,b."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(element) for element in value)
    return f"--{name}={value}"


def check_flags_used(values: flags.FlagValues, runs: Sequence[Config]) -> None:
    """Raises ConfigError naming every given flag that the runs' settings leave unread.

    A flag is given if it is on the command line or in a flagfile (absl's `.present`). It is
    refused if no run reads it; the message names the setting that leaves it unread (the first
    run's) and the fix.

    Args:
        values: the parsed flags.
        runs: the settings in effect: the Config built from the flags (training), the imported
            run's (--mode=import), or each recorded run with the flags applied (evaluation).
    """
    grouped: dict[tuple[ReadOnly, str], list[str]] = {}
    for name, rule in reading_rules().items():
        settings = [_setting(values, run, rule.setting) for run in runs]
        if values[name].present and not any(rule.reads(value) for value in settings):
            grouped.setdefault((rule, _as_flag(rule.setting, settings[0])), []).append(name)
    if grouped:
        raise ConfigError("; ".join(_refusal(names, *key) for key, names in grouped.items()) + ".")


def _refusal(names: list[str], rule: ReadOnly, current: str) -> str:
    """ "--cut_prob is read with --mixing=cutmix only (this run has --mixing=linear): drop it,
    or choose --mixing=cutmix"."""
    listed = " and ".join(f"--{name}" for name in names)
    verb, pronoun = ("is", "it") if len(names) == 1 else ("are", "them")
    fix = f", or {rule.fix}" if rule.fix else ""
    return (
        f"{listed} {verb} read {rule.condition} only (this run has {current}): drop {pronoun}{fix}"
    )
