"""Measured training-step times, kept per machine and network so each is measured once.

A time is valid for one CPU model and flag set, one TensorFlow version, oneDNN on or off,
and one network at one batch shape (`step_key`). The file is JSON in the user's cache folder
(`machine.cache_folder()`, MIXMO_TF_CACHE overrides it); deleting it measures again.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import sys
from collections.abc import Iterator

from mixmo_tf.config.choices import PRECISIONS
from mixmo_tf.config.run_folder import write_text_atomically
from mixmo_tf.config.settings import Config
from mixmo_tf.tuning.machine import Machine, cache_folder

CACHE_FILE = "step_times.json"
# The precisions a step is timed in ("auto" is a choice among them).
MEASURABLE_PRECISIONS = tuple(name for name in PRECISIONS if name != "auto")
# Plausible seconds of one timed training step. Below 0.1 ms is under the cost of calling a
# compiled TensorFlow step from Python (the smallest tested network, WRN-10-1 at batch 8,
# takes milliseconds on a CPU); above an hour, timing its rounds would have taken a day.
FASTEST_STEP = 1e-4
SLOWEST_STEP = 3600.0
# This cache holds a few hundred bytes per network and machine setting; a larger file is
# not one it wrote, and is not read into memory.
MAX_FILE_CHARACTERS = 4_000_000
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

    The file is checked, not trusted: an entry that is not {"seconds": {precision: time}}
    with plausible times (`FASTEST_STEP`..`SLOWEST_STEP` seconds) counts as not measured, and
    a file that cannot be read or decoded counts as empty; either is said once on stderr,
    and the next measurement replaces it. Writes are atomic renames made under a lock, so
    two runs saving at once keep both their times. A folder that cannot be written leaves
    the times unsaved, with a note: nothing here stops a run.
    """

    def __init__(self, folder: str | None = None):
        self.path = os.path.join(folder or cache_folder(), CACHE_FILE)

    def _entries(self) -> dict:
        """The file's content, {} if it has none that can be read (said once)."""
        try:
            with open(self.path, encoding="utf-8") as stream:
                text = stream.read(MAX_FILE_CHARACTERS + 1)
            if len(text) > MAX_FILE_CHARACTERS:
                raise ValueError(f"over {MAX_FILE_CHARACTERS} characters")
            entries = json.loads(text)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as error:
            # ValueError: not JSON or not UTF-8; RecursionError: nested too deep for json.
            self._ignored(f"the file cannot be read: {error}")
            return {}
        if not isinstance(entries, dict):
            self._ignored(f"a JSON {type(entries).__name__}, not an object")
            return {}
        return entries

    def seconds(self, key: str) -> dict[str, float]:
        """The step times recorded under `key`, by precision (empty if none, or not valid)."""
        entry = self._entries().get(key)
        if entry is None:
            return {}
        problem = _entry_problem(entry)
        if problem:
            self._ignored(f"an entry of this network {problem}")
            return {}
        return {name: float(value) for name, value in entry["seconds"].items()}

    def add(self, key: str, seconds: dict[str, float]) -> None:
        """Records `seconds` under `key`, keeping the valid times measured before (of this
        key and others); entries that are not valid are dropped."""
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with self._locked():
                entries = {
                    name: entry
                    for name, entry in self._entries().items()
                    if _entry_problem(entry) is None
                }
                measured = datetime.datetime.now(datetime.timezone.utc)
                entries[key] = {
                    "seconds": {**entries.get(key, {}).get("seconds", {}), **seconds},
                    "measured": measured.isoformat(timespec="seconds"),
                    "load_average": round(os.getloadavg()[0], 2),
                }
                write_text_atomically(self.path, json.dumps(entries, indent=1, sort_keys=True))
        except OSError as error:
            _note(f"the step times could not be saved in {self.path} ({error}).")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Holds the cache's lock file: a run reads, merges and writes while others wait."""
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _ignored(self, problem: str) -> None:
        if self.path not in _NOTED:
            _NOTED.add(self.path)
            _note(f"ignoring step times in {self.path} ({problem}); measuring again.")


# Cache files already said to be damaged in this process: one note each, however many
# choices read them.
_NOTED: set[str] = set()


def _note(message: str) -> None:
    print(f"Note: {message}", file=sys.stderr, flush=True)


def _entry_problem(entry) -> str | None:
    """What makes a cache entry unusable (shape, types, implausible times), or None."""
    seconds = entry.get("seconds") if isinstance(entry, dict) else None
    if not isinstance(seconds, dict) or not seconds:
        return 'is not {"seconds": {precision: time}}'
    for name, value in seconds.items():
        if name not in MEASURABLE_PRECISIONS:
            return f"names an unknown precision {name[:40]!r}"
        if type(value) not in (int, float) or not FASTEST_STEP <= value <= SLOWEST_STEP:
            return (
                f"holds {str(value)[:40]} s for a step, not a time in "
                f"[{FASTEST_STEP}, {SLOWEST_STEP}] s"
            )
    return None
