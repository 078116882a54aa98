"""The bench/ scripts importable by file name for the tests of this folder, as they import
each other when run as `python bench/<name>.py`."""

import os
import sys

from helpers.paths import REPO

sys.path.append(os.path.join(REPO, "bench"))
