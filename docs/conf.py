"""Sphinx configuration of the mixmo-tf documentation site.

Build: `.venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html` (warnings are
errors: a broken link, reference or docstring fails the build).
"""

from __future__ import annotations

import os
import shutil
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # this checkout's mixmo_tf, not an installed one
# Autodoc imports every module: quiet TensorFlow's C++ start-up lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mixmo_tf  # noqa: E402

project = "mixmo-tf"
author = "mixmo-tf contributors"
release = version = mixmo_tf.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]
html_theme = "furo"
html_title = "mixmo-tf"

# Every cross-reference must resolve (-n on the command line, here for every build), except:
nitpicky = True
_DEPENDENCIES = {"numpy", "np", "tensorflow", "tf", "tensorflow_datasets", "tfds", "keras", "absl"}
# The other Keras backends, whose per-backend training steps name their tensor types.
_DEPENDENCIES |= {"jax", "torch"}
# tfds' own annotations name `file_adapters` unqualified.
_OTHER_PROJECTS = set(sys.stdlib_module_names) | _DEPENDENCIES | {"file_adapters"}
nitpick_ignore_regex = [
    # Other projects' names in type hints (the standard library's and the dependencies'): the
    # build reads no other site's inventory (no network in CI), so they cannot be linked.
    (r"py:.*", rf"({'|'.join(sorted(_OTHER_PROJECTS))})\..*"),
    # Private names (a TypeVar, a helper class) have no page of their own.
    (r"py:.*", r".*\._\w+"),
    # Google-style sections read "type: description"; a line of prose before a colon (Raises:
    # "What X raises for ...: ...") is taken for a type. A Python name has no space or quote.
    (r"py:.*", r".*[\s\"'{].*"),
]

# ---- Markdown pages ----------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# Headings up to h3 get anchors, so [text](page.md#a-section) links are checked.
myst_heading_anchors = 3

# ---- API reference -------------------------------------------------------------------------------
autosummary_generate = True
# The pages autosummary writes (api/*.rst, not in git) are made afresh on every build: a
# module that moved leaves no page behind that would import a name that no longer exists.
shutil.rmtree(os.path.join(DOCS, "api"), ignore_errors=True)
# Each object is documented once, in the module that defines it; the package root's public
# names (mixmo_tf.__all__) link there (templates/autosummary/module.rst).
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    # A package's __all__ re-exports names of its modules: document each where it is defined.
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Keras' own docstrings (inherited by from_config, get_config, ...) are Markdown, not
# reStructuredText: a method without its own docstring shows none rather than a broken one.
autodoc_inherit_docstrings = False
# The docstrings write code in single backquotes (`Config`, `(batch, H, W, C)`): show it as code.
default_role = "code"
napoleon_google_docstring = True
napoleon_numpy_docstring = False


def _public_api() -> list[tuple[str, str]]:
    """The package root's public names, each with the path of the object it loads."""
    names = []
    for name in mixmo_tf.__all__:
        target = getattr(mixmo_tf, name)
        if hasattr(target, "__qualname__"):  # a class or function: where it is defined
            path = f"{target.__module__}.{target.__qualname__}"
        elif target.__name__ != f"mixmo_tf.{name}":  # a module re-exported under a short name
            path = target.__name__
        else:  # a subpackage: listed with the modules
            continue
        # Relative to the page's module (mixmo_tf), as autosummary wants.
        names.append((name, path.removeprefix("mixmo_tf.")))
    return names


autosummary_context = {"public_api": _public_api()}
