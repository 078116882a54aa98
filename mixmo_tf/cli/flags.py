"""absl flags of `main.py`: one flag per Config field a user chooses (`recorded_fields`), plus
--mode and --smoke.

Only the entry point reads FLAGS; it turns them into one Config (`config_from_flags`), whose
validation rejects bad values, naming the flag, before anything is built.
"""

from __future__ import annotations

import textwrap

from absl import flags

from mixmo_tf.config import choices
from mixmo_tf.config.backbones import MAX_WEIGHTS, MAX_WRN_DEPTH, backbone_names
from mixmo_tf.config.datasets import DATASETS, DEFAULT_IMAGE_SIZE
from mixmo_tf.config.errors import ConfigError
from mixmo_tf.config.ranges import TEMPERATURE
from mixmo_tf.config.settings import Config, recorded_fields, valid_range

MODES = ("train", "evaluate", "export", "predict", "import")

_HELP = {
    "dataset": f"Dataset: {', '.join(sorted(DATASETS))}, tfds:NAME or folder:PATH. cifar10, "
    "cifar100 and tiny_imagenet (the official zip in <data_dir>/downloads/manual/) through "
    "tensorflow-datasets; digits is scikit-learn's bundled 8x8 digits upsampled to 32x32 (no "
    "download; for quick checks); tfds:NAME is any tfds image-classification dataset with "
    "'train' and 'test' splits (e.g. tfds:oxford_flowers102); folder:PATH is an image folder "
    "PATH/train/<class>/* and PATH/test/<class>/* (classes: the sorted subfolder names). "
    "tiny_imagenet, tfds: and folder: sources stream from their files.",
    "image_size": "Side in pixels that tfds:NAME and folder:PATH images are resized to "
    f"(0: {DEFAULT_IMAGE_SIZE}); the named datasets keep their own size.",
    "download": "When tfds may download missing data: auto (if the download host answers "
    "within 3 s), never (fail at once with instructions), always (no check; tfds retries for "
    "minutes without network).",
    "data_dir": "tfds data folder holding prepared data, or the official archive in its "
    "downloads/manual/ subfolder. Defaults to $TFDS_DATA_DIR or ~/tensorflow_datasets. "
    "tiny_imagenet and tfds:NAME also write their streamed uint8 cache there, in "
    "<dataset>/<version>/mixmo_cache/.",
    "model_dir": "Folder for checkpoints, TensorBoard logs and the final model.keras (default: "
    "runs/<dataset>_<backbone>_<mixing>_m<M>[_<msda>], e.g. runs/cifar100_wrn28-10_cutmix_m2). "
    "A rerun "
    "with the same folder resumes from its newest checkpoint.",
    "backbone": "Network wrapped by MixMo: wrn (Wide ResNet, --depth and --width; CIFAR) or "
    "preact_resnet (PreActResNet-18-w, --width; Tiny ImageNet); more with "
    "mixmo_tf.backbones.register_backbone. Registered now: " + ", ".join(backbone_names()) + ".",
    "depth": f"WRN depth, 6n+4 up to {MAX_WRN_DEPTH} (28 in the paper); --backbone=wrn only.",
    "width": "Widening factor: k of WRN-depth-k (10 in the paper), w of PreActResNet-18-w "
    f"(1, 2, 3). The network may have at most {MAX_WEIGHTS // 10**9} billion weights (WRN-28-50, "
    "PreActResNet-18-9).",
    "num_members": "M, the number of subnetworks (1 = the single network).",
    "mixing": "Feature mixing: none (single network, M=1), mimo (plain sum, Havasi et al.), "
    "linear (Linear-MixMo), cutmix (Cut-MixMo with the cut-probability schedule).",
    "mixing_alpha": "Dirichlet concentration of the mixing ratios (Beta(2,2) for M=2).",
    "loss_power": "r of the root-r loss reweighting w_i ~ kappa_i^(1/r).",
    "cut_prob": "Probability of a Cut-MixMo batch (vs Linear) before the decay.",
    "cut_prob_decay_start": "Training fraction after which cut_prob decays linearly to 0.",
    "msda": "Input-level mixing applied per member before MixMo: none, mixup or cutmix.",
    "msda_prob": "Probability that a member's input is mixed with a partner image.",
    "msda_alpha": "Beta concentration of the input-mixing ratio.",
    "batch_size": "Slots per batch B (global, over all replicas).",
    "batch_repetitions": "b: each unique image fills b slots per batch (4 for MixMo, 1 for the "
    "single network).",
    "epochs": "Training epochs; one epoch shows every image b times per member.",
    "lr": "Learning rate for 128 unique images per step; the run uses lr * (B/b) / 128.",
    "warmup_epochs": "Linear warm-up length in single-network epochs (times b steps).",
    "lr_decay_epochs": "1-indexed epochs at whose start the learning rate is multiplied by "
    "lr_decay_factor.",
    "lr_decay_factor": "Step-decay factor of the learning rate.",
    "momentum": "SGD Nesterov momentum.",
    "optimizer": "Nesterov SGD formulation: pytorch_sgd (the paper's: the current learning rate "
    "scales the whole momentum step) or keras_sgd (Keras' SGD, whose velocity keeps past rates; "
    "differs after each change of rate). Fixed for a run.",
    "l2": "Coefficient of the L2 penalty over all trainable variables.",
    "seed": "Seed of initialisation, data order, augmentation and mixing.",
    "steps_per_epoch": "Override of the steps per epoch (0: floor(N * b / B)).",
    "validation_split": "Fraction of the training split held out of training (a fixed seeded "
    "choice); --mode=evaluate fits the temperature on it and records it in "
    "<model_dir>/temperature.json for export and prediction. 0: train on the whole split.",
    "eval_batch_size": "Batch size of the test-split evaluation.",
    "eval_steps": "Evaluate on only this many test batches (0: the whole test split).",
    "checkpoint_every_steps": "Also checkpoint every this many steps (0: once per epoch).",
    "distribution": "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
    "multi_worker_mirrored (the workers in TF_CONFIG; see docs/training.md), tpu (--tpu).",
    "tpu": "With --distribution=tpu: a Cloud TPU name or grpc://host:port address; empty for "
    "the TPU of this TPU VM.",
    "jit_compile": "Compile the train step with XLA. Off by default: on CPU it makes the step "
    "slower, most of all in mixed_bfloat16 (bench/README.md). On CPU it needs "
    "integer --mixing_alpha and --msda_alpha (ratios then come from sums of exponentials; XLA "
    "has no CPU Gamma kernel).",
    "precision": "Compute precision of the layers (variables and loss stay float32): float32, "
    "mixed_bfloat16, mixed_float16, or auto. Training with auto on a CPU with bfloat16 "
    "instructions times the run's own step in float32 and mixed_bfloat16 (once per CPU, "
    "TensorFlow version and network; cached in ~/.cache/mixmo_tf) and takes bfloat16 only if "
    "it is >= 10% faster; CPUs without them train in float32; GPUs with tensor cores in "
    "mixed_float16. The choice and its times are printed and kept in run_config.json; a "
    "resumed run keeps its precision. Where TensorFlow leaves oneDNN off, training also times "
    "the step with oneDNN on and uses it if >= 10% faster (TF_ENABLE_ONEDNN_OPTS decides "
    "when set).",
}
_CHOICES = {
    "download": list(choices.DOWNLOAD_MODES),
    "mixing": list(choices.MIXING_METHODS),
    "msda": list(choices.MSDA_KINDS),
    "distribution": list(choices.DISTRIBUTIONS),
    "optimizer": list(choices.OPTIMIZERS),
    "precision": list(choices.PRECISIONS),
}


# Topics of `--help`, in order; a flag not listed here is shown under "other".
TOPICS = {
    "model": ("backbone", "depth", "width", "num_members", "precision"),
    "method": (
        "mixing",
        "mixing_alpha",
        "loss_power",
        "cut_prob",
        "cut_prob_decay_start",
        "msda",
        "msda_prob",
        "msda_alpha",
    ),
    "data": (
        "dataset",
        "data_dir",
        "image_size",
        "download",
        "batch_size",
        "batch_repetitions",
        "validation_split",
        "seed",
    ),
    "optimisation": (
        "epochs",
        "lr",
        "warmup_epochs",
        "lr_decay_epochs",
        "lr_decay_factor",
        "momentum",
        "optimizer",
        "l2",
        "steps_per_epoch",
    ),
    "run": (
        "mode",
        "smoke",
        "model_dir",
        "eval_batch_size",
        "eval_steps",
        "checkpoint_every_steps",
        "distribution",
        "tpu",
        "jit_compile",
    ),
    "evaluation": ("ensemble_dirs", "corruptions", "corruptions_dir", "ood_dataset"),
    "serving": ("export_dir", "temperature", "images", "saved_model", "output"),
    "import": ("checkpoint",),
}
_HELP_WIDTH = 100

# The modes that read each flag; a flag given to another mode is refused (`check_flags_apply`).
# Every Config field but --model_dir is a run's setting: training and import record it,
# evaluation applies it on top of the recorded run; export and predict read the recorded run
# only. --model_dir names the run in every mode.
_RUN_SETTING_MODES = ("train", "import", "evaluate")
_MODES_READING = {
    "mode": MODES,
    "model_dir": MODES,
    "smoke": ("train", "evaluate"),  # evaluate: the run that --smoke trained, <model_dir>_smoke
    "checkpoint": ("import",),
    "export_dir": ("export",),
    "temperature": ("export", "predict"),
    "images": ("predict",),
    "saved_model": ("predict",),
    "output": ("predict",),
    "ensemble_dirs": ("evaluate",),
    "corruptions": ("evaluate",),
    "corruptions_dir": ("evaluate",),
    "ood_dataset": ("evaluate",),
}
# What to do instead, for a flag given to a mode that does not read it.
_INSTEAD = {
    ("checkpoint", "train"): "to fine-tune the authors' file, import it first (--mode=import "
    "--checkpoint=FILE --model_dir=RUN), then train with --model_dir=RUN",
    ("checkpoint", "evaluate"): "to evaluate the authors' file, import it first (--mode=import "
    "--checkpoint=FILE --model_dir=RUN), then evaluate with --model_dir=RUN",
}


def modes_reading(name: str) -> tuple[str, ...]:
    """The --mode values that read the flag `name` (one of the flags `define_flags` makes)."""
    return _MODES_READING.get(name, _RUN_SETTING_MODES)


def mixmo_flag_names() -> list[str]:
    """The names of the flags `define_flags` makes (absl's and TensorFlow's are not ours)."""
    fields = [field.name for field in recorded_fields()]
    return [name for name in _MODES_READING if name not in fields] + fields


def _mode_list(modes: tuple[str, ...]) -> str:
    """ "--mode=import only", or "--mode=train, --mode=import and --mode=evaluate"."""
    named = [f"--mode={mode}" for mode in modes]
    return named[0] + " only" if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def check_flags_apply(values: flags.FlagValues = flags.FLAGS) -> None:
    """Raises ConfigError naming every given MixMo flag that --mode does not read.

    A flag is given if it is on the command line or in a flagfile (absl's `.present`); absl's
    and TensorFlow's own flags are not checked. The message says which modes read each flag,
    and what to do instead where there is a better way.
    """
    mode = values.mode
    refused = [
        name
        for name in mixmo_flag_names()
        if values[name].present and mode not in modes_reading(name)
    ]
    if not refused:
        return
    by_modes: dict[tuple[str, ...], list[str]] = {}
    for name in refused:
        by_modes.setdefault(modes_reading(name), []).append(f"--{name}")
    readers = "; ".join(
        f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} read by {_mode_list(modes)}"
        for modes, names in by_modes.items()
    )
    instead = [_INSTEAD[name, mode] for name in refused if (name, mode) in _INSTEAD]
    drop = "drop " + ("it" if len(refused) == 1 else "them")
    if mode in ("export", "predict") and _RUN_SETTING_MODES in by_modes:
        drop = f"--mode={mode} reads the run's settings from its run_config.json; {drop}"
    advice = instead[0] if instead else drop
    raise ConfigError(f"{readers}, not --mode={mode}: {advice}.")


def grouped_help(values: flags.FlagValues = flags.FLAGS) -> str:
    """The MixMo flags of `values` with their help and defaults, grouped by topic.

    `main.py --help` prints this; `--helpfull` keeps absl's full list (TensorFlow's and
    absl's own flags included).
    """
    listed = {name for topic in TOPICS.values() for name in topic}
    fields = [field.name for field in recorded_fields()]
    topics = {**TOPICS, "other": tuple(name for name in fields if name not in listed)}
    lines = []
    for topic, members in topics.items():
        if not members:
            continue
        lines.append(f"\n{topic}:")
        for name in members:
            flag = values[name]
            default = ",".join(flag.default) if isinstance(flag.default, list) else flag.default
            text = f"{flag.help} (default: {default!r})"
            lines.append(f"  --{name}")
            lines.extend(
                textwrap.wrap(
                    text, _HELP_WIDTH, initial_indent="      ", subsequent_indent="      "
                )
            )
    return "\n".join(lines)


def define_flags(values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines --mode, --smoke and one flag per Config field in `values` (once)."""
    if "mode" in values:
        return
    flags.DEFINE_enum(
        "mode",
        "train",
        MODES,
        "train: train or resume; evaluate: test the newest checkpoint of --model_dir (the "
        "run's recorded settings apply; writes <model_dir>/eval/); export: write the newest "
        "checkpoint of --model_dir as a TF Serving SavedModel; predict: classify --images; import: "
        "turn the MixMo authors' PyTorch --checkpoint into the new run folder --model_dir.",
        flag_values=values,
    )
    _define_serving_flags(values)
    flags.DEFINE_string(
        "checkpoint",
        None,
        "--mode=import: a checkpoint file of the MixMo authors' code (mixmo-pytorch, e.g. one "
        "of their released models), either torch format; read without PyTorch, nothing in it "
        "runs. The network comes from the file; give the row's --flagfile for its recipe. Or a "
        "released row's name (e.g. cifar100_wrn28-10_cut_mixmo_cutmix; `--checkpoint=list` "
        "lists them): its file is downloaded once into $KERAS_HOME/mixmo_tf/checkpoints "
        "(default ~/.keras), checked, and imported with the row's flagfile. Or an http(s):// "
        "URL, downloaded the same way.",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "smoke",
        False,
        "Shrink the run to seconds on a CPU (WRN-10-1, at most 2 epochs of 3 steps), "
        "in <model_dir>_smoke. --mode=train; with --mode=evaluate: evaluate that run.",
        flag_values=values,
    )
    flags.DEFINE_list(
        "ensemble_dirs",
        [],
        "--mode=evaluate: run folders whose newest checkpoints are evaluated as one ensemble "
        "(mean of their ensemble logits), written to <first folder>/eval/ensemble/.",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "corruptions",
        False,
        "--mode=evaluate: also evaluate on CIFAR-10-C / CIFAR-100-C, 19 corruptions x 5 "
        "severities (see --corruptions_dir).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "corruptions_dir",
        None,
        "cifar10: tfds data folder with prepared cifar10_corrupted (default: --data_dir); "
        "cifar100: the official CIFAR-100-C folder (<corruption>.npy files and labels.npy; "
        "default: <tfds data folder>/CIFAR-100-C).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "ood_dataset",
        "",
        "--mode=evaluate: a tfds dataset prepared in --data_dir (e.g. svhn_cropped) whose "
        "test split is detected as out-of-distribution (AUROC, AUPR, FPR at 95% TPR).",
        flag_values=values,
    )
    for field in recorded_fields():
        name, default, help_text = field.name, field.default, _HELP[field.name]
        if valid_range(name) is not None:
            help_text += f" Range: {valid_range(name)}."
        if name in _CHOICES:
            flags.DEFINE_enum(name, default, _CHOICES[name], help_text, flag_values=values)
        elif field.type == "bool":
            flags.DEFINE_bool(name, default, help_text, flag_values=values)
        elif field.type == "int":
            flags.DEFINE_integer(name, default, help_text, flag_values=values)
        elif field.type == "float":
            flags.DEFINE_float(name, default, help_text, flag_values=values)
        elif field.type.startswith("tuple"):
            flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=values)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=values)


def given_fields(values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """Names of the Config fields whose flags were given (on the command line or a flagfile)."""
    return [field.name for field in recorded_fields() if values[field.name].present]


def _define_serving_flags(values: flags.FlagValues) -> None:
    """The flags of --mode=export and --mode=predict (not Config fields: they read a run)."""
    flags.DEFINE_string(
        "export_dir",
        None,
        "--mode=export: base folder of the SavedModel versions (default <model_dir>/export); "
        "each export adds the next version <export_dir>/<n>.",
        flag_values=values,
    )
    flags.DEFINE_float(
        "temperature",
        None,
        "--mode=export/predict: temperature T dividing the logits; overrides the run's fitted "
        f"<model_dir>/temperature.json (default: that file's, else 1). Range: {TEMPERATURE}.",
        flag_values=values,
    )
    flags.DEFINE_string(
        "images",
        None,
        "--mode=predict: image files to classify: a file (taken as named, even with [ ] or * "
        "in its name), a folder, or a glob pattern ('photos/*.jpg').",
        flag_values=values,
    )
    flags.DEFINE_string(
        "saved_model",
        None,
        "--mode=predict: an exported version folder (e.g. runs/x/export/1) to predict with "
        "instead of --model_dir's newest checkpoint.",
        flag_values=values,
    )
    flags.DEFINE_string(
        "output",
        None,
        "--mode=predict: write the predictions to this file (CSV if it ends in .csv, else JSON "
        "lines) instead of standard output.",
        flag_values=values,
    )


# Flags naming files or folders, for which an empty value means nothing a user would type.
_PATH_FLAGS = (
    "model_dir",
    "data_dir",
    "checkpoint",
    "ensemble_dirs",
    "corruptions_dir",
    "export_dir",
    "images",
    "saved_model",
    "output",
)


def check_no_empty_paths(values: flags.FlagValues = flags.FLAGS) -> None:
    """Raises ConfigError naming a path flag given with an empty value.

    `--model_dir=$RUN` with RUN unset gives `--model_dir=`; taken as absent, it would train
    in (or import into) the default folder of the flags' network, or read nothing.
    """
    for name in _PATH_FLAGS:
        if values[name].present and not values[name].value:
            raise ConfigError(
                f"--{name} is given empty (an unset shell variable?): give a path, or leave "
                "the flag out."
            )


def config_from_flags(values: flags.FlagValues = flags.FLAGS) -> Config:
    """The run's Config from parsed flags; ConfigError naming the flag for a bad value."""
    check_no_empty_paths(values)
    fields = {}
    for field in recorded_fields():
        value = values[field.name].value
        if field.type.startswith("tuple"):
            try:
                value = tuple(int(v) for v in value)
            except ValueError as error:
                raise ConfigError(
                    f"--{field.name} must be comma-separated integers. Received: {','.join(value)}"
                ) from error
        fields[field.name] = value
    config = Config(**fields)
    return config.smoke() if values["smoke"].value else config
