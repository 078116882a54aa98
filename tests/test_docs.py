"""The documentation site builds with warnings as errors (a broken link, reference or
docstring fails it), and its API reference covers every module and the public names.

One test, so that pytest-xdist never builds the site twice (its workers share no fixture)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import pytest

import mixmo_tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLIC_NAMES = ["Config", "MixMoModel", "train", "load_pytorch_checkpoint", "UserError"]
GUIDE_PAGES = ["index", "getting-started", "reproducing", "training", "speed", "method"]


def _build(html: str) -> subprocess.CompletedProcess:
    """The build the contributing page gives (-W --keep-going), into `html`."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    return subprocess.run(
        [*command, os.path.join(REPO, "docs"), html],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )


def _page(html: str, name: str) -> str:
    with open(os.path.join(html, name), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    html = str(tmp_path / "html")
    result = _build(html)
    assert result.returncode == 0, result.stderr[-5000:]

    # Every module of the package has a reference page: found by walking the package, as the
    # API reference is, so a module added or moved needs no edit of a list.
    modules = [
        info.name
        for info in pkgutil.walk_packages(mixmo_tf.__path__, prefix="mixmo_tf.")
        if not info.name.rpartition(".")[2].startswith("_")
    ]
    assert len(modules) > 50
    missing = [m for m in modules if not os.path.exists(os.path.join(html, "api", f"{m}.html"))]
    assert missing == []

    # A public name of the package root is documented in the module that defines it, and
    # listed on the root's page with a link there.
    root = _page(html, "api/mixmo_tf.html")
    for name in PUBLIC_NAMES:
        target = getattr(mixmo_tf, name)
        anchor = f"{target.__module__}.{target.__qualname__}"
        assert f'id="{anchor}"' in _page(html, f"api/{target.__module__}.html"), name
        assert f'href="{target.__module__}.html#{anchor}"' in root, name

    for page in GUIDE_PAGES:
        assert os.path.exists(os.path.join(html, f"{page}.html")), page
    # bench/README.md is included in the speed page, not copied into it.
    assert "bench/train_step.py" in _page(html, "speed.html")
