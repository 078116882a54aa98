"""`--checkpoint=ROW` and `--checkpoint=list`: the authors' released rows on the command line.

A row name brings the row's recipe: the command is parsed as if `--flagfile=flags/<row>.flags`
came first, so every flag given on the command line still applies on top of it (e.g.
`--model_dir`, `--epochs=310`), exactly as after an explicit `--flagfile`. An explicit
`--flagfile` is accepted only if it is that same file: another one would record a recipe the
file was not trained with (it is the old way of naming the row, easy to leave pointing at
another row); the FILE and URL forms take any `--flagfile`. No TensorFlow is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mixmo_tf import importing
from mixmo_tf.config.errors import ConfigError

LIST = "list"


def listing() -> str:
    """The rows `--checkpoint` takes, with the published top-1 of each file and what is cached."""
    lines = [
        "The MixMo authors' released checkpoints (`--mode=import --checkpoint=NAME` downloads, "
        "checks and imports one; top-1 % as published):"
    ]
    released, downloads = importing.released, importing.downloads
    width = max(len(row.name) for row in released.ROWS)
    for row in released.ROWS:
        cached = "  (cached)" if os.path.isfile(downloads.cached_path(row)) else ""
        lines.append(f"  {row.name:<{width}}  {row.accuracy:5.2f}  {row.network_label}{cached}")
        if row.note:
            lines.append(f"  {'':<{width}}  note: {row.note}")
    seeded = sorted({row.recipe for row in released.ROWS if row.name != row.recipe})
    lines.append(
        f"A name without @seed<k> picks @seed1 ({', '.join(seeded)}). Files are kept in "
        f"{downloads.cache_folder()} (under $KERAS_HOME, default ~/.keras)."
    )
    return "\n".join(lines)


def _flagfiles_given(argv: Sequence[str]) -> list[str]:
    """The flagfiles named on the command line itself (`--flagfile=F` or `--flagfile F`)."""
    given = []
    for index, argument in enumerate(argv):
        name, _, value = argument.lstrip("-").partition("=")
        if argument.startswith("-") and name == "flagfile":
            if not value and index + 1 < len(argv):
                value = argv[index + 1]
            given.append(os.path.expanduser(value))
    return given


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def row_flagfile(checkpoint: str | None, argv: Sequence[str]) -> str | None:
    """The flagfile to parse first for `--checkpoint=checkpoint`: its row's, unless the command
    line already names it; None for a file, a URL of no known row, or no row.

    Raises:
        ConfigError: the command line names another flagfile, or the row's is missing.
    """
    if not checkpoint or os.path.isfile(checkpoint):
        return None  # a path the user names is a path, even one named like a row
    row = importing.downloads.checkpoint_row(checkpoint)
    if row is None:
        return None
    if not os.path.isfile(row.flagfile):
        raise ConfigError(
            f"--checkpoint={checkpoint} takes its recipe from {row.flagfile}, which is missing: "
            "run from a clone of mixmo-tf (pip install -e .), or download the file "
            f"({row.url}) and give --checkpoint=FILE with your --flagfile."
        )
    given = _flagfiles_given(argv)
    if not given:
        return row.flagfile
    others = [path for path in given if not _same_file(path, row.flagfile)]
    if others:
        raise ConfigError(
            f"--checkpoint={checkpoint} brings its own recipe ({row.flagfile}); "
            f"--flagfile={others[0]} would record another. Drop --flagfile (single flags such "
            "as --epochs still apply on top of the row's), or import a downloaded file with "
            "--checkpoint=FILE and your --flagfile."
        )
    return None
