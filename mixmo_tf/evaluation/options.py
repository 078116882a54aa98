"""What `--mode=evaluate` evaluates beyond the test split (no TensorFlow here)."""

from __future__ import annotations

import dataclasses

from mixmo_tf.config.errors import UserError

# The datasets with a corrupted release (CIFAR-10-C, CIFAR-100-C).
CORRUPTED_DATASETS = ("cifar10", "cifar100")


class OptionError(UserError, ValueError):
    """An evaluation option does not fit the run (e.g. --corruptions for digits)."""


@dataclasses.dataclass(frozen=True)
class EvaluationOptions:
    """Optional evaluations.

    Attributes:
        corruptions: also evaluate on the corrupted test sets (CIFAR-10-C, CIFAR-100-C),
            all 19 corruption types x 5 severities.
        corruptions_dir: where they are: for cifar10, a tfds data folder holding prepared
            `cifar10_corrupted` (defaults to the run's --data_dir); for cifar100, the
            official CIFAR-100-C folder of per-corruption .npy files and labels.npy
            (defaults to <tfds data folder>/CIFAR-100-C).
        ood_dataset: a tfds image dataset (e.g. svhn_cropped) whose test split is the
            out-of-distribution set to detect against the run's test split; "" for none.
    """

    corruptions: bool = False
    corruptions_dir: str | None = None
    ood_dataset: str = ""

    def check(self, dataset: str) -> None:
        """Raises OptionError if an option cannot apply to a run of `dataset`."""
        if self.corruptions and dataset not in CORRUPTED_DATASETS:
            raise OptionError(
                f"--corruptions exists for {' and '.join(CORRUPTED_DATASETS)} (CIFAR-10-C, "
                f"CIFAR-100-C). Received a run of dataset={dataset!r}"
            )
