"""The documentation site builds with warnings as errors (a broken link, reference or
docstring fails it), and its API reference covers every module and the public names."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import pytest

import mixmo_tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> str:
    """The site built as the contributing page says (-W --keep-going), into a temporary folder."""
    html = str(tmp_path_factory.mktemp("docs") / "html")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    result = subprocess.run(
        [*command, os.path.join(REPO, "docs"), html],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return html


def _page(html: str, name: str) -> str:
    with open(os.path.join(html, name), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.slow
def test_every_module_has_a_reference_page(built_site):
    modules = [
        info.name
        for info in pkgutil.walk_packages(mixmo_tf.__path__, prefix="mixmo_tf.")
        if not info.name.rpartition(".")[2].startswith("_")
    ]
    assert len(modules) > 50
    missing = [
        m for m in modules if not os.path.exists(os.path.join(built_site, "api", f"{m}.html"))
    ]
    assert missing == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Config", "MixMoModel", "train", "load_pytorch_checkpoint"])
def test_the_public_names_link_to_their_documentation(built_site, name):
    target = getattr(mixmo_tf, name)
    anchor = f"{target.__module__}.{target.__qualname__}"
    # Documented in the module that defines it ...
    assert f'id="{anchor}"' in _page(built_site, f"api/{target.__module__}.html")
    # ... and listed on the package root's page, linking there.
    assert f'href="{target.__module__}.html#{anchor}"' in _page(built_site, "api/mixmo_tf.html")


@pytest.mark.slow
def test_the_guide_pages_are_built(built_site):
    for page in ["index", "getting-started", "reproducing", "training", "speed", "method"]:
        assert os.path.exists(os.path.join(built_site, f"{page}.html")), page
    # bench/README.md is included in the speed page, not copied into it.
    assert "bench/train_step.py" in _page(built_site, "speed.html")
