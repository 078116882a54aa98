"""The one frozen Config of a run, and every value derived from it.

Flags choose, the Config carries: `mixmo_tf.cli.flags` builds it from absl flags (its field
names are the flag names), tests and library users build it directly. Every derived number
(learning rate, steps per epoch, warm-up, decay steps, the mixing method's effective
parameters) is computed here and only here.
"""

from __future__ import annotations

import dataclasses
import math

from mixmo_tf.config.choices import (
    DISTRIBUTIONS,
    DOWNLOAD_MODES,
    MIXING_METHODS,
    MSDA_KINDS,
    OPTIMIZERS,
    PRECISIONS,
)
from mixmo_tf.data.sources import (
    check_dataset,
    dataset_label,
    normalized_dataset,
    run_spec,
    source_kind,
)
from mixmo_tf.data.specs import DatasetSpec
from mixmo_tf.models.backbones import backbone_entry

# Unique images per step that the reference learning rate of 0.1 is quoted for.
LR_REFERENCE_BATCH = 128


def _changeable_on_resume(default):
    """A field a resumed run may change: the optimisation schedule, and how and where it runs.

    Every other field defines the model, the method or the data stream, and must stay.
    """
    return dataclasses.field(default=default, metadata={"changeable_on_resume": True})


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


def complete_recorded(recorded: dict) -> dict:
    """A recorded run's settings with the fields added since it was recorded filled in.

    A field added later says, as metadata `in_older_runs`, the value that runs recorded
    before it existed had; a field without that note takes its default.
    """
    completed = dict(recorded)
    for field in dataclasses.fields(Config):
        if field.name not in completed:
            completed[field.name] = field.metadata.get("in_older_runs", field.default)
    return completed


# Largest M: every member adds a stem, a head and mixing work; M = 1000 spent minutes just
# building the network before printing anything.
MAX_MEMBERS = 16
# Seeds NumPy's global generator accepts (keras.utils.set_random_seed seeds it).
_SEED_BOUND = 2**32


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class Config:
    """A MixMo training run. Defaults are the paper's Cut-MixMo WRN-28-10 on CIFAR-100."""

    dataset: str = "cifar100"
    data_dir: str | None = _changeable_on_resume(None)
    # Fixed per run: it shapes the model's input. 0: the source's own size.
    image_size: int = 0
    download: str = _changeable_on_resume("auto")
    model_dir: str = _changeable_on_resume("")
    backbone: str = "wrn"
    depth: int = 28
    width: int = 10
    num_members: int = 2
    mixing: str = "cutmix"
    mixing_alpha: float = 2.0
    loss_power: float = 3.0
    cut_prob: float = 0.5
    cut_prob_decay_start: float = 11 / 12
    msda: str = "none"
    msda_prob: float = 0.5
    msda_alpha: float = 1.0
    batch_size: int = 64
    batch_repetitions: int = 4
    epochs: int = _changeable_on_resume(300)
    lr: float = _changeable_on_resume(0.1)
    warmup_epochs: float = _changeable_on_resume(1.0)
    lr_decay_epochs: tuple[int, ...] = _changeable_on_resume((101, 201, 226))
    lr_decay_factor: float = _changeable_on_resume(0.1)
    momentum: float = _changeable_on_resume(0.9)
    # Fixed per run: the two keep different momentum buffers. Runs recorded before this
    # field existed trained with Keras' SGD.
    optimizer: str = dataclasses.field(
        default="pytorch_sgd", metadata={"in_older_runs": "keras_sgd"}
    )
    l2: float = _changeable_on_resume(3e-4)
    seed: int = 0
    steps_per_epoch: int = 0
    validation_split: float = 0.0
    eval_batch_size: int = _changeable_on_resume(256)
    eval_steps: int = _changeable_on_resume(0)
    checkpoint_every_steps: int = _changeable_on_resume(0)
    distribution: str = _changeable_on_resume("default")
    tpu: str = _changeable_on_resume("")
    jit_compile: bool = _changeable_on_resume(False)
    # "auto" in a run's record: its training has not chosen yet (an imported run).
    precision: str = _chosen_at_first_training("auto")

    def __post_init__(self):
        object.__setattr__(self, "lr_decay_epochs", tuple(int(e) for e in self.lr_decay_epochs))
        # folder:PATH made absolute: the run records where its data is, whatever the cwd.
        object.__setattr__(self, "dataset", normalized_dataset(self.dataset))
        self.validate()
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
            1 <= self.num_members <= MAX_MEMBERS,
            f"--num_members must be in [1, {MAX_MEMBERS}] (the paper studies M = 2 to 4; each "
            "member adds a stem, a head and its share of the batch). Received: "
            f"num_members={self.num_members}",
        )
        _require(
            0 <= self.seed < _SEED_BOUND,
            f"--seed must be in [0, 2**32) (NumPy's and TensorFlow's seed range). "
            f"Received: seed={self.seed}",
        )
        _require(
            (self.num_members == 1) == (self.mixing == "none"),
            "--num_members=1 is the single network and needs --mixing=none; MixMo and MIMO need "
            f"--num_members >= 2. Received: num_members={self.num_members}, mixing={self.mixing!r}",
        )
        _require(self.width >= 1, f"--width must be >= 1, e.g. 10. Received: width={self.width}")
        backbone_entry(self.backbone).check(self.depth, self.width)
        _require(
            self.batch_size >= 1,
            f"--batch_size must be >= 1. Received: batch_size={self.batch_size}",
        )
        _require(
            self.batch_repetitions >= 1 and self.batch_size % self.batch_repetitions == 0,
            "--batch_size must be a multiple of --batch_repetitions (each unique image fills b "
            f"slots). Received: batch_size={self.batch_size}, "
            f"batch_repetitions={self.batch_repetitions}",
        )
        _require(self.epochs >= 1, f"--epochs must be >= 1. Received: epochs={self.epochs}")
        _require(
            self.mixing not in ("linear", "cutmix") or self.mixing_alpha > 0,
            f"--mixing_alpha must be > 0 for --mixing={self.mixing}. "
            f"Received: mixing_alpha={self.mixing_alpha}",
        )
        _require(
            self.loss_power > 0, f"--loss_power must be > 0. Received: loss_power={self.loss_power}"
        )
        for name in ("cut_prob", "msda_prob"):
            value = getattr(self, name)
            _require(0 <= value <= 1, f"--{name} must be in [0, 1]. Received: {name}={value}")
        _require(
            0 <= self.cut_prob_decay_start < 1,
            "--cut_prob_decay_start must be in [0, 1). "
            f"Received: cut_prob_decay_start={self.cut_prob_decay_start}",
        )
        _require(
            self.msda == "none" or self.msda_alpha > 0,
            f"--msda_alpha must be > 0. Received: msda_alpha={self.msda_alpha}",
        )
        _require(self.lr > 0, f"--lr must be > 0. Received: lr={self.lr}")
        _require(
            self.warmup_epochs >= 0,
            f"--warmup_epochs must be >= 0. Received: warmup_epochs={self.warmup_epochs}",
        )
        _require(
            list(self.lr_decay_epochs) == sorted(self.lr_decay_epochs)
            and all(e >= 1 for e in self.lr_decay_epochs),
            "--lr_decay_epochs must be ascending 1-indexed epochs, e.g. 101,201,226. "
            f"Received: lr_decay_epochs={','.join(map(str, self.lr_decay_epochs))}",
        )
        _require(
            0 <= self.momentum < 1,
            f"--momentum must be in [0, 1). Received: momentum={self.momentum}",
        )
        _require(self.l2 >= 0, f"--l2 must be >= 0. Received: l2={self.l2}")
        for name in ("steps_per_epoch", "eval_steps", "checkpoint_every_steps"):
            value = getattr(self, name)
            _require(value >= 0, f"--{name} must be >= 0 (0: automatic). Received: {name}={value}")
        _require(
            0 <= self.validation_split < 1,
            "--validation_split must be in [0, 1). "
            f"Received: validation_split={self.validation_split}",
        )
        _require(
            self.eval_batch_size >= 1,
            f"--eval_batch_size must be >= 1. Received: eval_batch_size={self.eval_batch_size}",
        )
        if source_kind(self.dataset) == "named":
            self.check_split_size()

    def check_split_size(self) -> None:
        """Raises ValueError if a step needs more unique images than the training split has.

        Checked by `validate` for the named datasets; tfds and folder sources know their size
        once their data is read (`mixmo_tf.training.run.train` checks then).
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
        # Named datasets: fixed. tfds and folder sources: the run's recorded spec, else read
        # from the data (which must then be ready: `mixmo_tf.data.resolved_spec`).
        return run_spec(self.dataset, self.image_size, self.data_dir, self.model_dir)

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
