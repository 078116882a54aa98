"""The authors' released checkpoints as presets, built once in the cache.

`cached_preset(name_or_url)` answers with a preset folder for a row of the released-rows
table (or a URL of an authors' file): the one built by an earlier call if there is one, so
that a second call needs neither the network nor the torch file; else it downloads and checks
the file (`mixmo_tf.importing.downloads.fetch_checkpoint`), imports it with the row's recipe
(its flagfile's settings) and writes the preset in `<cache>/presets/<name>`, whole or not at
all.
"""

from __future__ import annotations

import hashlib
import os
import re

from mixmo_tf.config.flagfiles import flagfile_settings
from mixmo_tf.config.settings import Config
from mixmo_tf.importing.authors_checkpoint import import_config, read_authors_checkpoint
from mixmo_tf.importing.presets import (
    METADATA_FILE,
    PresetFolderError,
    preset_metadata,
    save_preset,
)
from mixmo_tf.importing.pytorch_import import assign_authors_state
from mixmo_tf.models.build import build_model

# The folder under the cache root that holds the presets built from released files.
PRESETS_FOLDER = "presets"
# A name used as a folder name as it is; anything else (a URL) is cached under its hash.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")


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


def build_released_preset(fetched, directory: str) -> None:
    """Imports a downloaded authors' file with its row's recipe and writes it as a preset.

    The model is built in float32 and without an optimizer: a preset holds what predicts.

    Args:
        fetched: the `FetchedCheckpoint` (file, SHA-256, row or None for a URL, URL).
        directory: the new preset folder.
    """
    row = fetched.row
    recipe = flagfile_settings(row.flagfile) if row is not None else {}
    recipe.pop("model_dir", None)  # the row's run folder: no folder is written here
    checkpoint = read_authors_checkpoint(fetched.path)
    flagged = Config(**{**recipe, "precision": "float32"})
    config = import_config(checkpoint.architecture, flagged, recipe.keys())
    model = build_model(config, with_optimizer=False)
    assign_authors_state(model, checkpoint, config.derived_steps_per_epoch)
    del checkpoint  # its arrays map the whole file
    source = {
        "row": row.name if row is not None else None,
        "published": {"top1_accuracy": row.accuracy} if row is not None else None,
        "source_sha256": fetched.sha256,
        "source_url": fetched.url,
    }
    metadata = preset_metadata(model, config.spec, source=source)
    save_preset(model, directory, metadata)


def cached_preset(name_or_url: str) -> str:
    """The preset folder of a released row's name or an authors' file's URL, built on first
    use (downloading the file) and read from the cache afterwards.

    Raises:
        UserError: from the download (an unknown name, with the closest names; no network;
            a file that is not the row's network), or from the import.
    """
    from mixmo_tf.importing import downloads

    directory = cached_preset_folder(name_or_url)
    if os.path.isfile(os.path.join(directory, METADATA_FILE)):
        return directory  # complete: a preset is renamed into place whole
    fetched = downloads.fetch_checkpoint(name_or_url)
    try:
        build_released_preset(fetched, directory)
    except PresetFolderError:
        if not os.path.isfile(os.path.join(directory, METADATA_FILE)):
            raise
        # Another process built it meanwhile.
    return directory
