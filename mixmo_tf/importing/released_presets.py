"""The authors' released checkpoints as presets, built once in the cache.

`cached_preset(name_or_url)` answers with a preset folder for a row of the released-rows
table (or a URL of an authors' file): the one built by an earlier call if there is one, so
that a second call needs neither the network nor the torch file; else it downloads and checks
the file (`mixmo_tf.importing.released.fetch_checkpoint`), imports it with the row's recipe
and writes the preset in `<cache>/presets/<name>`, whole or not at all.
"""

from __future__ import annotations

import hashlib
import os
import re

from mixmo_tf.config.settings import Config
from mixmo_tf.importing.authors_checkpoint import import_config, read_authors_checkpoint
from mixmo_tf.importing.presets import (
    METADATA_FILE,
    PresetFolderError,
    known_class_names,
    preset_metadata,
    save_preset,
)
from mixmo_tf.importing.pytorch_import import assign_authors_state
from mixmo_tf.models.build import build_model

# The folder under the cache root that holds the presets built from released files.
PRESETS_FOLDER = "presets"
# A name used as a folder name as it is; anything else (a URL) is cached under its hash.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def cache_root() -> str:
    """The folder of mixmo-tf's downloads and built presets: `$KERAS_HOME/mixmo_tf`, else
    `~/.keras/mixmo_tf` (Keras' own cache folder)."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "mixmo_tf")


def cached_preset_folder(name_or_url: str) -> str:
    """Where the preset of a row name or URL is built (it may not exist yet)."""
    if _PLAIN_NAME.fullmatch(name_or_url):
        folder = name_or_url
    else:
        folder = "url-" + hashlib.sha256(name_or_url.encode("utf-8")).hexdigest()[:16]
    return os.path.join(cache_root(), PRESETS_FOLDER, folder)


def _row_facts(row) -> tuple[str | None, dict | None, dict]:
    """A released row's name, published numbers and import recipe (Config fields); a URL's
    file has no row: (None, None, {})."""
    if row is None:
        return None, None, {}
    return row.name, dict(row.published), dict(row.recipe)


def build_released_preset(path: str, sha256: str, row, directory: str) -> None:
    """Imports the authors' file `path` with `row`'s recipe and writes it as a preset.

    The model is built in float32 and without an optimizer: a preset holds what predicts.

    Args:
        path: the downloaded, checked file.
        sha256: its SHA-256, recorded in the metadata.
        row: its row of the released table, or None for a URL given by the user.
        directory: the new preset folder.
    """
    name, published, recipe = _row_facts(row)
    settings = {**recipe, "precision": "float32"}
    checkpoint = read_authors_checkpoint(path)
    config = import_config(checkpoint.architecture, Config(**settings), recipe.keys())
    model = build_model(config, with_optimizer=False)
    assign_authors_state(model, checkpoint, config.derived_steps_per_epoch)
    del checkpoint  # its arrays map the whole file
    source = {"row": name, "published": published, "source_sha256": sha256}
    metadata = preset_metadata(model, config.spec, known_class_names(config.spec), source=source)
    save_preset(model, directory, metadata)


def cached_preset(name_or_url: str) -> str:
    """The preset folder of a released row's name or an authors' file's URL, built on first
    use (downloading the file) and read from the cache afterwards.

    Raises:
        UserError: from the download (an unknown name, with the closest names; no network;
            a file that is not the row's network), or from the import.
    """
    from mixmo_tf.importing import released

    directory = cached_preset_folder(name_or_url)
    if os.path.isfile(os.path.join(directory, METADATA_FILE)):
        return directory  # complete: a preset is renamed into place whole
    path, sha256, row = released.fetch_checkpoint(name_or_url)
    try:
        build_released_preset(path, sha256, row, directory)
    except PresetFolderError:
        if not os.path.isfile(os.path.join(directory, METADATA_FILE)):
            raise
        # Another process built it meanwhile.
    return directory
