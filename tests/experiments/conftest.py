"""The experiments/ scripts importable by file name for the tests of this folder, as when run
as `python experiments/<name>.py`."""

import os
import sys

from helpers.paths import REPO

sys.path.append(os.path.join(REPO, "experiments"))
