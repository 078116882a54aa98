"""Comments and docstrings in mixmo_tf/ say what the code does and why, not its history.

Which issue or change made the code so, and when, belongs to git and to the measurement
record (bench/README.md, bench/results/), where it cannot go stale beside the code. A
comment or docstring naming an issue ("issue 17"), a date (2026-11-26) or a measured
speed ratio ("14.7x") fails here, with the file and line.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "mixmo_tf")

# (what it is, pattern): history that a comment or docstring must not carry.
_HISTORY = (
    ("an issue number", re.compile(r"\bissues? #?\d+", re.IGNORECASE)),
    ("a date", re.compile(r"\b(19|20)\d\d-\d\d-\d\d\b")),
    ("a measured ratio", re.compile(r"\b\d+\.\d+x\b")),
)


def _comments_and_docstrings(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python source."""
    found = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                found.append((node.body[0].lineno, docstring))
    return found


def history_in(source: str) -> list[str]:
    """'line N: <what>: "<match>"' for each piece of history in `source`'s comments and
    docstrings."""
    hits = [
        (line + text.count("\n", 0, match.start()), what, match.group(0))
        for line, text in _comments_and_docstrings(source)
        for what, pattern in _HISTORY
        for match in pattern.finditer(text)
    ]
    return [f'line {line}: {what}: "{text}"' for line, what, text in sorted(hits)]


def test_the_check_finds_history_in_comments_and_docstrings_only():
    planted = '''"""Reads the file (issue 18)."""

# Measured on 2026-11-26: 14.7x slower.
def read(path):
    """Reads `path`.

    See Issue #7."""
    return "issue 18, 2026-11-26, 14.7x"  # a string is not a comment
'''
    assert history_in(planted) == [
        'line 1: an issue number: "issue 18"',
        'line 3: a date: "2026-11-26"',
        'line 3: a measured ratio: "14.7x"',
        'line 7: an issue number: "Issue #7"',
    ]
    assert history_in('"""Reads 3x3 convolutions, x0.1 decays and keras-team/keras#20329."""') == []


def test_no_comment_or_docstring_of_the_package_narrates_history():
    found = []
    for folder, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as stream:
                    source = stream.read()
                found += [f"{os.path.relpath(path, REPO)} {hit}" for hit in history_in(source)]
    assert not found, "say what the code does and why, not its history:\n" + "\n".join(found)
