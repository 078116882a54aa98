"""Human-readable class names of each dataset, label index order.

CIFAR's names come with the official archives (batches.meta.txt, fine_label_names.txt), which
tfds reads only while preparing the data; tfds ships no copy, so the package carries them as
text files (`labels/<dataset>.txt`, one name per line, line i = label i). Digits are "0".."9".
tfds and folder sources carry theirs in their spec (tfds' ClassLabel names, the folder names).
"""

from __future__ import annotations

import unicodedata
from importlib import resources

from mixmo_tf.config.datasets import DatasetSpec
from mixmo_tf.config.errors import UnusableFileError

_LABEL_FILES = {"cifar10": "cifar10.txt", "cifar100": "cifar100.txt"}
# Control characters (newline, CR, tab, NUL, ...) and Unicode's line and paragraph separators:
# the exported class names are one per line, and str.splitlines splits on all of them.
_NOT_IN_A_LINE = ("Cc", "Zl", "Zp")


def fits_one_line(name: str) -> bool:
    """Whether `name` can be a line of the exported class-names file: no control character,
    no line or paragraph separator."""
    return not any(unicodedata.category(character) in _NOT_IN_A_LINE for character in name)


def class_names(spec: DatasetSpec) -> tuple[str, ...]:
    """The `spec.num_classes` names of the dataset's labels, in label order.

    Raises:
        ValueError: the package has no names for the dataset, not as many as its classes, or
            a name that does not fit one line (`fits_one_line`).
    """
    if spec.class_names:
        names = spec.class_names
    elif spec.name == "digits":
        names = tuple(str(digit) for digit in range(spec.num_classes))
    elif spec.name in _LABEL_FILES:
        text = resources.files("mixmo_tf.data").joinpath("labels", _LABEL_FILES[spec.name])
        names = tuple(line.strip() for line in text.read_text(encoding="utf-8").splitlines())
    else:
        raise ValueError(f"No class names are known for dataset {spec.name!r}.")
    if len(names) != spec.num_classes:
        raise ValueError(
            f"{spec.name} has {spec.num_classes} classes but {len(names)} class names."
        )
    for name in names:
        if not fits_one_line(name):
            raise UnusableFileError(
                f"The class name {name!r} of {spec.name} holds a control character or a line "
                "break, and the exported class names are one per line: rename its class "
                "folder and train again."
            )
    return names
