"""The settings a flagfile of flags/ gives, as Config fields, read without absl (imports no
TensorFlow).

`main.py --flagfile=...` reads a flagfile with absl, through the flags of `mixmo_tf.cli.flags`.
Code below the command line needs the same settings (a released row's preset, which
`mixmo_tf.from_preset` imports with the row's recipe): `flagfile_settings` reads the one form
the flagfiles use, one `--field=value` line per Config field (`--field` / `--nofield` for a
boolean) and `#` comments, and refuses any other line, so that it never reads a file otherwise
than absl does (tests/config/test_flagfiles.py compares the two on every flagfile of flags/).
"""

from __future__ import annotations

import dataclasses
import re

from mixmo_tf.config.settings import recorded_fields

_LINE = re.compile(r"--(\w+)(?:=(.*))?")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _value(field: dataclasses.Field, text: str | None) -> object:
    """The value of `field` that the flag's text gives (None: a boolean flag without '=')."""
    if field.type == "bool":
        return True if text is None else _BOOLEANS[text.lower()]
    if text is None:
        raise ValueError("a value is missing")
    if field.type == "int":
        return int(text)
    if field.type == "float":
        return float(text)
    if field.type.startswith("tuple"):
        return tuple(int(part) for part in text.split(",") if part)
    return text


def flagfile_settings(path: str) -> dict[str, object]:
    """The Config fields a flagfile sets, with their values, in the file's order.

    Raises:
        ValueError: a line that is not a comment, blank or `--field[=value]` of a Config
            field, or a value of the wrong type (naming the file and the line).
    """
    fields = {field.name: field for field in recorded_fields()}
    settings: dict[str, object] = {}
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                found = _LINE.fullmatch(text)
                if found is None:
                    raise ValueError("not a flag")
                name, value = found.groups()
                negated = fields.get(name[2:]) if name.startswith("no") else None
                if value is None and negated is not None and negated.type == "bool":
                    name, value = negated.name, "false"
                settings[name] = _value(fields[name], value)
            except (KeyError, ValueError) as error:
                raise ValueError(
                    f"{path}:{number}: {text!r} is not --<Config field>=<value> ({error!r})"
                ) from error
    return settings
