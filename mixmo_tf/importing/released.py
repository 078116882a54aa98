"""The MixMo authors' released checkpoints: one row per file, named like the row's flagfile.

A table and nothing else (no TensorFlow, no network): the command line's flag checks read it
to tell a row name from a file, and `mixmo_tf.importing.downloads` fetches a row's file.

Each row is one file linked from the authors' README (alexrame/mixmo-pytorch, "Results and
available checkpoints", Google Drive), named after the flagfile of this project that holds
its recipe (`flags/<name>.flags`), with the network that file must hold and the published
top-1 of that very file. Three CIFAR-100 rows link two files (two released seeds, 85.52 -
85.59 and so on): their names end in `@seed1` and `@seed2`, in the README's order, and the
name without a suffix is `@seed1`.

Slips in the authors' README, kept as it has them (the network check then says which file
holds what, instead of this table guessing):

- one Drive file (`1Q-U5u9ZN3h-cLBOEvbu_hOp0M7vMYjgc`) is linked from two Tiny ImageNet rows,
  Linear-MixMo w=2 (67.03) and Cut-MixMo w=3 (70.23); the import of whichever row the file is
  not (its width, 2 or 3, tells) is refused as a file of another network;
- the w=1 Tiny ImageNet MixMo rows name configs (`exp_tinyimagenet_res18-2_linearmixmo_...`,
  `exp_tinyimagenet_res18-2_cutmixmo-p5_...`) that the authors' `config/tiny/` does not hold;
  their recipe here is the w=2 config's at width 1, as the flagfiles say.
"""

from __future__ import annotations

import dataclasses
import difflib
import os

# The repository's flagfiles, beside the package (the project installs from its clone, -e).
FLAGS_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "flags")
DRIVE_VIEW_URL = "https://drive.google.com/file/d/{file_id}/view"
SEED_SEPARATOR = "@"
_SHARED_DRIVE_FILE = (
    "the authors' README links this Drive file from two rows, Tiny ImageNet Linear-MixMo "
    "w=2 and Cut-MixMo w=3, and it can hold only one of them"
)
_MISSING_CONFIG = (
    "the authors' README names a config that their config/tiny/ does not hold; the recipe "
    "is their w=2 config's at width 1"
)


@dataclasses.dataclass(frozen=True)
class ReleasedRow:
    """One released checkpoint of the authors.

    Attributes:
        name: the name `--checkpoint` takes: the flagfile's name, plus `@seed<k>` for rows
            with two released files.
        accuracy: the published top-1 (%) of this file (authors' README, docs/method.md §11).
        drive_id: the Google Drive file id of the authors' link.
        dataset: the dataset the file was trained on.
        backbone, depth, width, num_members, num_classes: the network the file must hold
            (as `mixmo_tf.importing.authors_checkpoint.AuthorsArchitecture` names it).
        authors_config: the config file the authors' README names for the row.
        note: a known slip of the authors' README about this row, or "".
    """

    name: str
    accuracy: float
    drive_id: str
    dataset: str
    backbone: str
    depth: int
    width: int
    num_members: int
    num_classes: int
    authors_config: str
    note: str = ""

    @property
    def recipe(self) -> str:
        """The flagfile's name: the row's name without its seed suffix."""
        return self.name.split(SEED_SEPARATOR)[0]

    @property
    def flagfile(self) -> str:
        """The path of the flagfile holding the row's recipe."""
        return os.path.join(FLAGS_FOLDER, f"{self.recipe}.flags")

    @property
    def url(self) -> str:
        """The link a browser opens to download the file by hand."""
        return DRIVE_VIEW_URL.format(file_id=self.drive_id)

    @property
    def network(self) -> dict[str, object]:
        """The network the file must hold, as `AuthorsArchitecture`'s fields."""
        return {
            "backbone": self.backbone,
            "depth": self.depth,
            "width": self.width,
            "num_members": self.num_members,
            "num_classes": self.num_classes,
        }

    @property
    def network_label(self) -> str:
        """E.g. "WRN-28-10, M=2, 100 classes"."""
        return network_label(**self.network)


def network_label(backbone: str, depth: int, width: int, num_members: int, num_classes: int) -> str:
    """How a message names an authors' network: "WRN-28-10, M=2, 100 classes" or
    "PreActResNet-18-2, M=2, 200 classes" (a released row's and a checkpoint's alike)."""
    network = f"WRN-{depth}-{width}" if backbone == "wrn" else f"PreActResNet-18-{width}"
    return f"{network}, M={num_members}, {num_classes} classes"


# The CIFAR rows, per recipe: M and the authors' config (after `exp_<dataset>_`).
_CIFAR_RECIPES = {
    "vanilla": (1, "wrn2810_1net_standard_bar1"),
    "vanilla_mixup": (1, "wrn2810_1net_msdamixup_bar1"),
    "vanilla_cutmix": (1, "wrn2810_1net_msdacutmix_bar1"),
    "mimo": (2, "wrn2810-2_mimo_standard_bar4"),
    "linear_mixmo": (2, "wrn2810-2_linearmixmo_standard_bar4"),
    "cut_mixmo": (2, "wrn2810-2_cutmixmo-p5_standard_bar4"),
    "linear_mixmo_cutmix": (2, "wrn2810-2_linearmixmo_msdacutmix_bar4"),
    "cut_mixmo_cutmix": (2, "wrn2810-2_cutmixmo-p5_msdacutmix_bar4"),
}
# Their files, in the README's order: (published top-1, Google Drive id).
_CIFAR_FILES = {
    ("cifar100", "vanilla"): [(81.79, "12pATFGjsDN1Tq4p-S0-rO59sX-F_O2ol")],
    ("cifar100", "vanilla_mixup"): [(83.43, "1tqsHgqDwx3p562NtYHb5Im-tRB6CnJ8M")],
    ("cifar100", "vanilla_cutmix"): [(83.95, "11ZiDgZoaEVEhhyJMlDA61P9QB7HZuXFL")],
    ("cifar100", "mimo"): [(82.92, "1SBAjGJVfC_QHCoXy5y_Ci49J-E18ait3")],
    ("cifar100", "linear_mixmo"): [(82.96, "1eAA6O6_v-L3aFzQtsHY2pEAGxUpXu15c")],
    ("cifar100", "cut_mixmo"): [
        (85.52, "1Buql47NcSe-qm8LqPYEa02g319T1yakK"),
        (85.59, "1vxJFKuO5RSH9XcA2aSYUMHCrtD6pDyMA"),
    ],
    ("cifar100", "linear_mixmo_cutmix"): [
        (85.36, "1Ma_Rjf1Z8j0CK5jLenk8UFLwZgbrDaqP"),
        (85.57, "1ouGQjho-cmJUkrDpDehvs1zwK7BUJWoN"),
    ],
    ("cifar100", "cut_mixmo_cutmix"): [
        (85.77, "1Y9BDgqWFdYK5hqPQl-AgApCTIewTGbFo"),
        (85.92, "1fwCfO2wO6VXziUp9HHE32MpCWak9AlOc"),
    ],
    ("cifar10", "vanilla"): [(96.37, "1o6aGKfHAN8PQrsXAoyAJHak-lqAOfwm8")],
    ("cifar10", "vanilla_mixup"): [(97.07, "1yI5cLHPfUDI00Eiy3dNRm2bgiv2orwxE")],
    ("cifar10", "vanilla_cutmix"): [(97.28, "1hXjTCTYYy99StxAP0Y3hNqjQ9ezhqsXh")],
    ("cifar10", "mimo"): [(96.71, "1NRAlxIILIUIUNWhXFHgHrSyx5T4oCmdZ")],
    ("cifar10", "linear_mixmo"): [(96.88, "1BUoaNLDMuhqXl3UKC2QoVT23Z1544i_v")],
    ("cifar10", "cut_mixmo"): [(97.52, "1eA_H9ePj_OgjTqDV0v2F5biI4mt_J98c")],
    ("cifar10", "linear_mixmo_cutmix"): [(97.73, "1cLP7EVYJ_YY7w2rOaaRWMxjZkOBWZ4Ti")],
    ("cifar10", "cut_mixmo_cutmix"): [(97.83, "1dGB0Rz64Wr5nv4vQqLi19Kt3vzKH0blC")],
}
# The Tiny ImageNet rows, per (width, recipe): published top-1, Google Drive id, the authors'
# config (after `exp_tinyimagenet_`) and the README's slip about the row, if any.
_TINY_FILES = {
    (1, "vanilla"): (62.75, "14N-ixnF31zjbGh6IzS3-pHj1KOJ_e5uF", "res18_1net_standard_bar1", ""),
    (1, "linear_mixmo"): (
        62.91,
        "1MDYuE21zFphdnp83h-LOIBnXu4b5qhD-",
        "res18-2_linearmixmo_standard_bar4",
        _MISSING_CONFIG,
    ),
    (1, "cut_mixmo"): (
        64.32,
        "19jB-yk2s1LeuQDXzjNQmo_eil8btsxa4",
        "res18-2_cutmixmo-p5_standard_bar4",
        _MISSING_CONFIG,
    ),
    (2, "vanilla"): (64.91, "1SdBW7wie9HT5OqW15r6A6ixhY87aC7Ct", "res182_1net_standard_bar1", ""),
    (2, "linear_mixmo"): (
        67.03,
        "1Q-U5u9ZN3h-cLBOEvbu_hOp0M7vMYjgc",
        "res182-2_linearmixmo_standard_bar4",
        _SHARED_DRIVE_FILE,
    ),
    (2, "cut_mixmo"): (
        69.12,
        "16LME8LGCwmwUWmrzGiCzdTaFOURwolQR",
        "res182-2_cutmixmo-p5_standard_bar4",
        "",
    ),
    (3, "vanilla"): (65.84, "1lvX6fIKIxbVDa9VC-8GTpHbJG2avHB9F", "res183_1net_standard_bar1", ""),
    (3, "linear_mixmo"): (
        68.36,
        "1W0QoVQYw4ftCBemralG6KtZSgICxO7ih",
        "res183-2_linearmixmo_standard_bar4",
        "",
    ),
    (3, "cut_mixmo"): (
        70.23,
        "1Q-U5u9ZN3h-cLBOEvbu_hOp0M7vMYjgc",
        "res183-2_cutmixmo-p5_standard_bar4",
        _SHARED_DRIVE_FILE,
    ),
}


def _cifar_rows() -> list[ReleasedRow]:
    rows = []
    for (dataset, recipe), files in _CIFAR_FILES.items():
        members, config = _CIFAR_RECIPES[recipe]
        for seed, (accuracy, drive_id) in enumerate(files, start=1):
            suffix = f"{SEED_SEPARATOR}seed{seed}" if len(files) > 1 else ""
            rows.append(
                ReleasedRow(
                    name=f"{dataset}_wrn28-10_{recipe}{suffix}",
                    accuracy=accuracy,
                    drive_id=drive_id,
                    dataset=dataset,
                    backbone="wrn",
                    depth=28,
                    width=10,
                    num_members=members,
                    num_classes=100 if dataset == "cifar100" else 10,
                    authors_config=f"config/{dataset}/exp_{dataset}_{config}.yaml",
                )
            )
    return rows


def _tiny_rows() -> list[ReleasedRow]:
    return [
        ReleasedRow(
            name=f"tiny_imagenet_preact_resnet18-{width}_{recipe}",
            accuracy=accuracy,
            drive_id=drive_id,
            dataset="tiny_imagenet",
            backbone="preact_resnet",
            depth=18,
            width=width,
            num_members=1 if recipe == "vanilla" else 2,
            num_classes=200,
            authors_config=f"config/tiny/exp_tinyimagenet_{config}.yaml",
            note=note,
        )
        for (width, recipe), (accuracy, drive_id, config, note) in _TINY_FILES.items()
    ]


ROWS: tuple[ReleasedRow, ...] = (*_cifar_rows(), *_tiny_rows())


def _names() -> dict[str, ReleasedRow]:
    """Every name that picks a row: its own, and its recipe's for the first of its seeds."""
    named = {}
    for row in ROWS:
        named.setdefault(row.recipe, row)
        named[row.name] = row
    return named


def find_row(name: str) -> ReleasedRow | None:
    """The row `name` picks (a row's name, or a seeded row's without `@seed<k>`), or None."""
    return _names().get(name)


def closest_names(name: str, count: int = 3) -> list[str]:
    """The row names most like `name` (difflib's ratio), best first; [] if none is close."""
    return difflib.get_close_matches(name, list(_names()), n=count, cutoff=0.6)


def rows_of_drive_file(drive_id: str) -> list[ReleasedRow]:
    """The rows linking the Drive file `drive_id` (two for the README's shared link)."""
    return [row for row in ROWS if row.drive_id == drive_id]
