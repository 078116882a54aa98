"""Measured training-step times, kept per machine and network so each is measured once.

A time is valid for one CPU model and flag set, one TensorFlow version, oneDNN on or off,
and one network at one batch shape (`step_key`). The file is JSON in the user's cache folder
(`machine.cache_folder()`, MIXMO_TF_CACHE overrides it); deleting it measures again.
"""

from __future__ import annotations

import datetime
import json
import os

from mixmo_tf.config.run_folder import write_text_atomically
from mixmo_tf.config.settings import Config
from mixmo_tf.tuning.machine import Machine, cache_folder

CACHE_FILE = "step_times.json"
# The Config fields that change what one training step computes.
STEP_FIELDS = (
    "dataset",
    "image_size",
    "backbone",
    "depth",
    "width",
    "num_members",
    "mixing",
    "msda",
    "batch_size",
    "batch_repetitions",
    "jit_compile",
)


def step_key(config: Config, machine: Machine, onednn: bool) -> str:
    """The cache key of `config`'s training step on `machine` with oneDNN on or off."""
    facts = {
        "cpu_model": machine.cpu_model,
        "cpu_flags": list(machine.cpu_flags),
        "tensorflow": machine.tensorflow,
        "onednn": onednn,
        **{name: getattr(config, name) for name in STEP_FIELDS},
    }
    return json.dumps(facts, sort_keys=True)


class StepTimeCache:
    """The step times measured on this machine: {key: {precision: seconds}}.

    An unreadable or damaged file counts as empty (and is replaced at the next write); a
    folder that cannot be written leaves the times unsaved, with a note: neither stops a run.
    """

    def __init__(self, folder: str | None = None):
        self.path = os.path.join(folder or cache_folder(), CACHE_FILE)

    def _entries(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as stream:
                entries = json.load(stream)
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def seconds(self, key: str) -> dict[str, float]:
        """The step times recorded under `key`, by precision (empty if none)."""
        entry = self._entries().get(key)
        seconds = entry.get("seconds") if isinstance(entry, dict) else None
        if not isinstance(seconds, dict):
            return {}
        return {name: float(value) for name, value in seconds.items() if _is_time(value)}

    def add(self, key: str, seconds: dict[str, float]) -> None:
        """Records `seconds` under `key`, keeping the precisions measured before."""
        entries = self._entries()
        entry = entries.get(key) if isinstance(entries.get(key), dict) else {}
        measured = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        entries[key] = {
            "seconds": {**entry.get("seconds", {}), **seconds},
            "measured": measured,
            "load_average": round(os.getloadavg()[0], 2),
        }
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            write_text_atomically(self.path, json.dumps(entries, indent=1, sort_keys=True))
        except OSError as error:
            print(f"Note: the step times could not be saved in {self.path} ({error}).")


def _is_time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
