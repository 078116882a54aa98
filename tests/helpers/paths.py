"""The repository's folders the tests read, wherever a test module sits under tests/."""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS_DIR = os.path.join(REPO, "flags")
FIXTURES = os.path.join(REPO, "tests", "fixtures")
AUTHORS_FIXTURES = os.path.join(FIXTURES, "authors")  # made by the MixMo authors' code
