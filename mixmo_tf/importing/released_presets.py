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

from mixmo_tf.config.flagfiles import flagfile_settings
from mixmo_tf.config.settings import Config
from mixmo_tf.importing import downloads, released
from mixmo_tf.importing.authors_checkpoint import import_config, read_authors_checkpoint
from mixmo_tf.importing.downloads import FetchedCheckpoint
from mixmo_tf.importing.presets import (
    METADATA_FILE,
    PresetFolderError,
    preset_metadata,
    save_preset,
)
from mixmo_tf.importing.pytorch_import import assign_authors_state
from mixmo_tf.importing.released import ReleasedRow
from mixmo_tf.models.build import build_model

# Beside the downloads' folder (`downloads.cache_folder()`, `$KERAS_HOME/mixmo_tf/checkpoints`):
# the presets built from them.
PRESETS_FOLDER = "presets"


def cached_preset_folder(name_or_url: str) -> str:
    """Where the preset of a row name or URL is built (it may not exist yet): a row's folder
    is named by the row (a seeded row's name with or without `@seed1` is one folder), a
    URL's by its hash."""
    row = released.find_row(name_or_url)
    folder = row.name if row else "url-" + hashlib.sha256(name_or_url.encode()).hexdigest()[:16]
    return os.path.join(os.path.dirname(downloads.cache_folder()), PRESETS_FOLDER, folder)


def published_numbers(row: ReleasedRow | None) -> dict | None:
    """What the authors published for a released row: its top-1 accuracy (%); None for no
    row."""
    return {"top1_accuracy": row.accuracy} if row is not None else None


def build_released_preset(fetched: FetchedCheckpoint, directory: str) -> None:
    """Imports a downloaded authors' file with its row's recipe and writes it as a preset.

    The model is built in float32 and without an optimizer: a preset holds what predicts.

    Args:
        fetched: the downloaded file, its SHA-256, its row (None for a URL of no row), URL.
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
        "published": published_numbers(row),
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
