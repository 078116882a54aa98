"""The one frozen Config of a run, and every value derived from it.

Flags choose, the Config carries: `mixmo_tf.cli.flags` builds it from absl flags (its field
names are the flag names), tests and library users build it directly. Every derived number
(learning rate, steps per epoch, warm-up, decay steps, the mixing method's effective
parameters) is computed here and only here, from the Config's fields alone: the spec of a
tfds or folder source is one of them (`dataset_spec`), resolved where the run starts
(training, the import, a run's record) rather than read from disk by a derived value.
"""

from __future__ import annotations

import dataclasses
import math

from mixmo_tf.config.backbones import MAX_WIDTH, backbone_entry
from mixmo_tf.config.choices import (
    DISTRIBUTIONS,
    DOWNLOAD_MODES,
    MIXING_METHODS,
    MSDA_KINDS,
    OPTIMIZERS,
    PRECISIONS,
)
from mixmo_tf.config.dataset_names import (
    check_dataset,
    dataset_label,
    normalized_dataset,
    source_kind,
)
from mixmo_tf.config.datasets import DATASETS, DEFAULT_IMAGE_SIZE, DatasetSpec
from mixmo_tf.config.errors import ConfigError
from mixmo_tf.config.ranges import Range

# Unique images per step that the reference learning rate of 0.1 is quoted for.
LR_REFERENCE_BATCH = 128


def _changeable_on_resume(default, valid: Range | None = None):
    """A field a resumed run may change: the optimisation schedule, and how and where it runs.

    Every other field defines the model, the method or the data stream, and must stay.
    `valid` is the range of a numeric field (see `_ranged`).
    """
    metadata = {"changeable_on_resume": True} | ({"valid": valid} if valid else {})
    return dataclasses.field(default=default, metadata=metadata)


def _ranged(default, valid: Range):
    """A numeric field that must lie in `valid` (each element, for a tuple), checked by
    `Config.validate` and shown in the flag's help."""
    return dataclasses.field(default=default, metadata={"valid": valid})


def valid_range(name: str) -> Range | None:
    """The allowed range of the Config field `name`, None if it is not a number."""
    return Config.__dataclass_fields__[name].metadata.get("valid")


def changeable_on_resume(name: str) -> bool:
    """Whether a resumed run may change the Config field `name`."""
    return Config.__dataclass_fields__[name].metadata.get("changeable_on_resume", False)


def _chosen_at_first_training(default):
    """A field whose `default` a run records until its first training here chooses the value.

    A run imported from the authors' file (never trained here) records it so; the first
    training then records its choice, which later resumes must keep.
    """
    return dataclasses.field(default=default, metadata={"not_chosen_yet": default})


def not_chosen_yet(name: str, recorded) -> bool:
    """Whether `recorded`, a run's value of the Config field `name`, means that its first
    training has yet to choose it (any value may then replace it)."""
    metadata = Config.__dataclass_fields__[name].metadata
    return "not_chosen_yet" in metadata and recorded == metadata["not_chosen_yet"]


def _read_from_data():
    """A field no flag sets and run_config.json does not record: what the data of the run
    says (`Config.dataset_spec`, which the run folder keeps in dataset_spec.json)."""
    return dataclasses.field(default=None, metadata={"read_from_data": True})


def recorded_fields() -> tuple[dataclasses.Field, ...]:
    """The Config fields a user chooses: one flag each, recorded in run_config.json (every
    field but those read from the data)."""
    return tuple(
        field for field in dataclasses.fields(Config) if not field.metadata.get("read_from_data")
    )


def complete_recorded(recorded: dict) -> dict:
    """A recorded run's settings with the fields added since it was recorded filled in.

    A field added later says, as metadata `in_older_runs`, the value that runs recorded
    before it existed had; a field without that note takes its default.
    """
    completed = dict(recorded)
    for field in recorded_fields():
        if field.name not in completed:
            completed[field.name] = field.metadata.get("in_older_runs", field.default)
    return completed


# Largest M: every member adds a stem, a head and mixing work; M = 1000 spent minutes just
# building the network before printing anything.
MAX_MEMBERS = 16
# Seeds NumPy's global generator accepts (keras.utils.set_random_seed seeds it).
_SEED_BOUND = 2**32
# Largest side of resized tfds/folder images: 1024^2 is 1000 times CIFAR's pixels, beyond any
# dataset the method is meant for; a batch of 64 x 2 members of them is already 1.6 GB of input.
MAX_IMAGE_SIZE = 1024
# Largest training or test batch: large-batch SGD studies stop near 4096 (and 16 members of
# 4096 CIFAR images are 0.8 GB of input); any larger fills memory before the first step.
MAX_BATCH = 4096
# Largest b: the paper uses 4; each unique image repeated more often than 64 times is noise.
MAX_REPETITIONS = 64
# Largest epoch count (the paper: 300; Tiny ImageNet: 1200) and given epoch length (CIFAR's
# automatic one is 3125 steps, ImageNet's at B=64, b=4 would be 80000): their product, the last
# step number, stays below 2**31, so every step counter and schedule boundary fits an int32.
MAX_EPOCHS = 10_000
MAX_STEPS_PER_EPOCH = 200_000
# Largest --lr: the run's rate lr * (B/b) / 128 is at most 32 lr, and 32e36 is below float32's
# largest number, 3.4e38.
MAX_LR = 1e36
# Dirichlet and Beta concentrations: the paper uses 2 and 1; at 100 every ratio is within a
# few percent of 1/M (a plain sum). An integer alpha compiled with XLA draws alpha exponentials
# per ratio, so its memory grows with it.
_ALPHA = Range(0.0, 100.0)
_PROBABILITY = Range(0.0, 1.0)
_FRACTION = Range(0.0, 1.0, high_open=True)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class Config:
    """A MixMo training run. Defaults are the paper's Cut-MixMo WRN-28-10 on CIFAR-100."""

    dataset: str = "cifar100"
    data_dir: str | None = _changeable_on_resume(None)
    # Fixed per run: it shapes the model's input. 0: the source's own size.
    image_size: int = _ranged(0, Range(0, MAX_IMAGE_SIZE))
    download: str = _changeable_on_resume("auto")
    model_dir: str = _changeable_on_resume("")
    backbone: str = "wrn"
    # The backbone checks its own depths (backbone_entry(...).check); this bounds any.
    depth: int = _ranged(28, Range(1, 1000))
    width: int = _ranged(10, Range(1, MAX_WIDTH))
    num_members: int = _ranged(
        2,
        Range(
            1,
            MAX_MEMBERS,
            why="the paper studies M = 2 to 4; each member adds a stem, a head and its share "
            "of the batch",
        ),
    )
    mixing: str = "cutmix"
    mixing_alpha: float = _ranged(2.0, _ALPHA)
    # r: the paper uses 3; beyond 100 every weight kappa^(1/r) is within 5% of 1.
    loss_power: float = _ranged(3.0, Range(0.0, 100.0, low_open=True))
    cut_prob: float = _ranged(0.5, _PROBABILITY)
    cut_prob_decay_start: float = _ranged(11 / 12, _FRACTION)
    msda: str = "none"
    msda_prob: float = _ranged(0.5, _PROBABILITY)
    msda_alpha: float = _ranged(1.0, _ALPHA)
    batch_size: int = _ranged(64, Range(1, MAX_BATCH))
    batch_repetitions: int = _ranged(4, Range(1, MAX_REPETITIONS))
    epochs: int = _changeable_on_resume(300, Range(1, MAX_EPOCHS))
    # For 128 unique images per step (the paper: 0.1). A large finite rate diverges, and the
    # run's divergence check stops it naming --lr; MAX_LR keeps the run's rate a float32.
    lr: float = _changeable_on_resume(0.1, Range(0.0, MAX_LR, low_open=True))
    warmup_epochs: float = _changeable_on_resume(1.0, Range(0, MAX_EPOCHS))
    lr_decay_epochs: tuple[int, ...] = _changeable_on_resume((101, 201, 226), Range(1, MAX_EPOCHS))
    # A decay multiplies the rate: above 1 it grows, at or below 0 SGD climbs the loss.
    lr_decay_factor: float = _changeable_on_resume(0.1, Range(0.0, 1.0, low_open=True))
    momentum: float = _changeable_on_resume(0.9, _FRACTION)
    # Fixed per run: the two keep different momentum buffers. Runs recorded before this
    # field existed trained with Keras' SGD.
    optimizer: str = dataclasses.field(
        default="pytorch_sgd", metadata={"in_older_runs": "keras_sgd"}
    )
    # The paper: 3e-4 (5e-4 in the WRN paper); at 1 the penalty outweighs any data loss.
    l2: float = _changeable_on_resume(3e-4, Range(0.0, 1.0))
    seed: int = _ranged(
        0, Range(0, _SEED_BOUND, high_open=True, why="NumPy's and TensorFlow's seed range")
    )
    steps_per_epoch: int = _ranged(0, Range(0, MAX_STEPS_PER_EPOCH, why="0: automatic"))
    validation_split: float = _ranged(0.0, _FRACTION)
    eval_batch_size: int = _changeable_on_resume(256, Range(1, MAX_BATCH))
    eval_steps: int = _changeable_on_resume(
        0, Range(0, MAX_STEPS_PER_EPOCH, why="0: the whole test split")
    )
    # At most the last step number (0: once per epoch).
    checkpoint_every_steps: int = _changeable_on_resume(
        0, Range(0, MAX_EPOCHS * MAX_STEPS_PER_EPOCH, why="0: once per epoch")
    )
    distribution: str = _changeable_on_resume("default")
    tpu: str = _changeable_on_resume("")
    jit_compile: bool = _changeable_on_resume(False)
    # "auto" in a run's record: its training has not chosen yet (an imported run).
    precision: str = _chosen_at_first_training("auto")
    # The spec of a tfds or folder source, read from its data (`mixmo_tf.data.resolved_spec`)
    # or from a run's dataset_spec.json (`run_record.recorded_config`); None for the named
    # datasets, whose spec is fixed (`spec` gives either).
    dataset_spec: DatasetSpec | None = _read_from_data()

    def __post_init__(self):
        object.__setattr__(self, "lr_decay_epochs", tuple(int(e) for e in self.lr_decay_epochs))
        # folder:PATH made absolute: the run records where its data is, whatever the cwd.
        object.__setattr__(self, "dataset", normalized_dataset(self.dataset))
        self.validate()
        if source_kind(self.dataset) == "named":
            # Checked to be DATASETS' own; kept as None so that a copy of this Config for
            # another named dataset (`dataclasses.replace`) carries no stale spec.
            object.__setattr__(self, "dataset_spec", None)
        if not self.model_dir:
            object.__setattr__(self, "model_dir", self.default_model_dir())

    def default_model_dir(self) -> str:
        """runs/<dataset>_<backbone label>_<mixing>_m<M>[_<msda>].

        For example runs/cifar100_wrn28-10_cutmix_m2 or
        runs/tiny_imagenet_preact_resnet18-2_cutmix_m2.
        """
        dataset = dataset_label(self.dataset)
        name = f"{dataset}_{self.network_label}_{self.mixing}_m{self.num_members}"
        return f"runs/{name}" + ("" if self.msda == "none" else f"_{self.msda}")

    def validate(self) -> None:
        """Raises ValueError naming the flag for any value the method cannot run with."""
        self.check_ranges()
        check_dataset(self.dataset, self.image_size)
        _require(
            self.download in DOWNLOAD_MODES,
            f"--download must be one of {DOWNLOAD_MODES}. Received: download={self.download!r}",
        )
        _require(
            self.mixing in MIXING_METHODS,
            f"--mixing must be one of {MIXING_METHODS}. Received: mixing={self.mixing!r}",
        )
        _require(
            self.msda in MSDA_KINDS,
            f"--msda must be one of {MSDA_KINDS}. Received: msda={self.msda!r}",
        )
        _require(
            self.distribution in DISTRIBUTIONS,
            f"--distribution must be one of {DISTRIBUTIONS}. "
            f"Received: distribution={self.distribution!r}",
        )
        _require(
            self.optimizer in OPTIMIZERS,
            f"--optimizer must be one of {OPTIMIZERS}. Received: optimizer={self.optimizer!r}",
        )
        _require(
            self.precision in PRECISIONS,
            f"--precision must be one of {PRECISIONS}. Received: precision={self.precision!r}",
        )
        _require(
            (self.num_members == 1) == (self.mixing == "none"),
            "--num_members=1 is the single network and needs --mixing=none; MixMo and MIMO need "
            f"--num_members >= 2. Received: num_members={self.num_members}, mixing={self.mixing!r}",
        )
        backbone_entry(self.backbone).check(self.depth, self.width)
        _require(
            self.batch_size % self.batch_repetitions == 0,
            "--batch_size must be a multiple of --batch_repetitions (each unique image fills b "
            f"slots). Received: batch_size={self.batch_size}, "
            f"batch_repetitions={self.batch_repetitions}",
        )
        _require(
            self.mixing not in ("linear", "cutmix") or self.mixing_alpha > 0,
            f"--mixing_alpha must be > 0 for --mixing={self.mixing}. "
            f"Received: mixing_alpha={self.mixing_alpha}",
        )
        _require(
            self.msda == "none" or self.msda_alpha > 0,
            f"--msda_alpha must be > 0. Received: msda_alpha={self.msda_alpha}",
        )
        _require(
            list(self.lr_decay_epochs) == sorted(self.lr_decay_epochs),
            "--lr_decay_epochs must be ascending 1-indexed epochs, e.g. 101,201,226. "
            f"Received: lr_decay_epochs={','.join(map(str, self.lr_decay_epochs))}",
        )
        self.check_dataset_spec()
        if source_kind(self.dataset) == "named" or self.dataset_spec is not None:
            self.check_split_size()

    def check_dataset_spec(self) -> None:
        """Raises ValueError unless `dataset_spec` is None or the spec of `dataset` at
        `image_size` (a named dataset's: its entry of `DATASETS`)."""
        spec = self.dataset_spec
        if spec is None:
            return
        if source_kind(self.dataset) == "named":
            fits = spec == DATASETS[self.dataset]
        else:
            side = self.image_size or DEFAULT_IMAGE_SIZE
            same_data = normalized_dataset(spec.name) == self.dataset
            fits = same_data and spec.image_shape[:2] == (side, side)
        _require(
            fits,
            "dataset_spec must be the spec of --dataset at --image_size: "
            "mixmo_tf.data.resolved_spec(dataset, image_size, data_dir). Received: the spec of "
            f"{spec.name} at {spec.image_shape[0]}x{spec.image_shape[1]} for "
            f"dataset={self.dataset!r}, image_size={self.image_size}",
        )

    def check_ranges(self) -> None:
        """Raises ValueError naming the first numeric field outside its range (`valid_range`)
        or not finite, before any other check relies on its value."""
        for field in dataclasses.fields(self):
            valid = field.metadata.get("valid")
            if valid is None:
                continue
            value = getattr(self, field.name)
            for number in value if isinstance(value, tuple) else (value,):
                valid.check(field.name, number)

    def check_split_size(self) -> None:
        """Raises ValueError if a step needs more unique images than the training split has.

        Checked by `validate` whenever the spec is known: always for the named datasets, for
        tfds and folder sources once their spec is given (training reads it from the data).
        """
        _require(
            self.batch_size // self.batch_repetitions <= self.num_train_examples,
            f"--batch_size / --batch_repetitions ({self.unique_per_step} unique images per "
            f"step) exceeds the {self.num_train_examples} training images of {self.dataset}.",
        )

    # ---- derived values --------------------------------------------------------------------

    @property
    def network_label(self) -> str:
        # The backbone's name for runs, from the fields that shape it: "wrn28-10".
        return backbone_entry(self.backbone).label(self.depth, self.width)

    @property
    def spec(self) -> DatasetSpec:
        """The dataset's spec: fixed for the named datasets, `dataset_spec` for the others.

        Raises:
            ValueError: a tfds or folder source given without its spec.
        """
        if source_kind(self.dataset) == "named":
            return DATASETS[self.dataset]
        _require(
            self.dataset_spec is not None,
            f"Config(dataset={self.dataset!r}) has no dataset spec: pass dataset_spec="
            "mixmo_tf.data.resolved_spec(dataset, image_size, data_dir), or read a trained run's "
            "Config with mixmo_tf.config.recorded_config(model_dir) (training and the recorded "
            "runs carry it).",
        )
        return self.dataset_spec

    @property
    def num_validation_examples(self) -> int:
        # The held-out slice of the training split that temperature scaling is fitted on.
        return round(self.validation_split * self.spec.num_train)

    @property
    def num_train_examples(self) -> int:
        # What training sees: the training split without the validation slice.
        return self.spec.num_train - self.num_validation_examples

    @property
    def unique_per_step(self) -> int:
        # Each step holds B / b distinct images, each repeated b times (docs/method.md §5).
        return self.batch_size // self.batch_repetitions

    @property
    def base_learning_rate(self) -> float:
        # lr = 0.1 * unique images per step / 128, as in the paper: 0.0125 for B=64, b=4.
        return self.lr * self.unique_per_step / LR_REFERENCE_BATCH

    @property
    def derived_steps_per_epoch(self) -> int:
        # An epoch shows each image b times per member: floor(N * b / B) (3125 on CIFAR).
        return (
            self.steps_per_epoch
            or self.num_train_examples * self.batch_repetitions // self.batch_size
        )

    @property
    def total_steps(self) -> int:
        return self.epochs * self.derived_steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        # One single-network epoch of steps times b: ceil(N / B) * b (782 * b on CIFAR).
        return round(
            self.warmup_epochs
            * math.ceil(self.num_train_examples / self.batch_size)
            * self.batch_repetitions
        )

    @property
    def lr_decay_steps(self) -> tuple[int, ...]:
        # The decay takes effect at the first step of each listed 1-indexed epoch.
        return tuple((epoch - 1) * self.derived_steps_per_epoch for epoch in self.lr_decay_epochs)

    @property
    def effective_mixing_alpha(self) -> float:
        # MIMO sums the features: equal ratios, which alpha <= 0 stands for.
        return 0.0 if self.mixing in ("mimo", "none") else self.mixing_alpha

    @property
    def effective_cut_prob(self) -> float:
        return self.cut_prob if self.mixing == "cutmix" else 0.0

    @property
    def effective_loss_power(self) -> float:
        # MIMO uses r = 1 (with equal ratios every weight is 1 whatever r).
        return 1.0 if self.mixing in ("mimo", "none") else self.loss_power

    def smoke(self) -> Config:
        """This run shrunk to seconds on a CPU.

        Width 1 (WRN-10-1 for the WRN), at most 2 epochs of 3 steps, 2 test batches, in
        `<model_dir>_smoke` so that it never lands in (or is refused by) the real run's
        folder; everything else unchanged.
        """
        return dataclasses.replace(
            self,
            model_dir=f"{self.model_dir}_smoke",
            depth=10 if self.backbone == "wrn" else self.depth,
            width=1,
            epochs=min(self.epochs, 2),
            steps_per_epoch=3,
            eval_steps=2,
            batch_size=min(self.batch_size, 8 * self.batch_repetitions),
            eval_batch_size=32,
        )
