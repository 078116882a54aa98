"""TensorFlow made unimportable, for the test sessions of the other Keras backends.

The method's core (models, mixing, the training step) promises to import no TensorFlow under
`KERAS_BACKEND=jax` or `torch`. tests/conftest.py calls `block_tensorflow` at the start of
those sessions, so a test marked `backends` that reaches TensorFlow, directly or through
`mixmo_tf`, fails at that import with a message that says why, as it would on a machine
without TensorFlow. Code that probes for TensorFlow (`try: import tensorflow except
ImportError`) sees it missing, as there. Processes a test starts are not covered.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

BLOCKED = "tensorflow"


class TensorFlowBlocker(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """First on `sys.meta_path`: finds `tensorflow` and its submodules, and fails to load them.

    Found, not hidden: probes through `importlib.util.find_spec` (torch's compiler lists
    the paths of well-known packages so) get a spec without a file instead of an error;
    an import then raises `ModuleNotFoundError`, as an absent TensorFlow would.
    """

    def __init__(self, backend: str):
        self.backend = backend

    def find_spec(self, fullname, path=None, target=None):
        if fullname == BLOCKED or fullname.startswith(BLOCKED + "."):
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(
            f"No module named {spec.name!r}: TensorFlow is unimportable in the tests run under "
            f"KERAS_BACKEND={self.backend} (the tests marked `backends` check that the code "
            "they reach runs without it)",
            name=spec.name,
        )

    def exec_module(self, module):
        """Never reached: `create_module` refuses every module."""


def block_tensorflow(backend: str) -> None:
    """Makes `import tensorflow` fail from now on in this process; `backend` names the
    Keras backend in the error. Refuses if TensorFlow is already imported (a plugin or an
    earlier import loaded it), since a loaded module can no longer be blocked."""
    if BLOCKED in sys.modules:
        raise RuntimeError(
            f"TensorFlow was imported before the KERAS_BACKEND={backend} test session could "
            "block it"
        )
    if not any(isinstance(finder, TensorFlowBlocker) for finder in sys.meta_path):
        sys.meta_path.insert(0, TensorFlowBlocker(backend))
