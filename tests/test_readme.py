"""The README and the pages of docs/ stay true: their Python examples run as written and their
set-up command is what CI runs."""

from __future__ import annotations

import glob
import importlib
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_PAGES = sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _readme() -> str:
    return _read(os.path.join(REPO, "README.md"))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _run_blocks(path: str, tmp_path, monkeypatch) -> dict:
    """Runs a page's Python blocks in order, in one namespace, from `tmp_path` (the examples
    write runs/ in the working directory); returns the namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in _python_blocks(_read(path)):
        exec(compile(block, path, "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    assert len(_python_blocks(_readme())) == 1
    namespace = _run_blocks(os.path.join(REPO, "README.md"), tmp_path, monkeypatch)
    outputs = namespace["outputs"]
    assert outputs["ensemble"].shape == (360, 10)
    assert outputs["members"].shape == (360, 2, 10)
    assert os.path.exists(tmp_path / "runs" / "digits_quick" / "model.keras")
    assert namespace["reloaded"].count_params() == namespace["model"].count_params()


def _pages_with_python() -> list[str]:
    return [page for page in DOCS_PAGES if _python_blocks(_read(page))]


def test_the_docs_have_python_examples():
    assert os.path.join(REPO, "docs", "python.md") in _pages_with_python()


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_python(), ids=os.path.basename)
def test_docs_python_examples_run(page, tmp_path, monkeypatch):
    namespace = _run_blocks(page, tmp_path, monkeypatch)
    if page.endswith("python.md"):
        my_network = namespace["my_network"]
        assert len(my_network.outputs) == 3
        assert my_network.outputs[0].shape[-1] == 10
        assert os.path.exists(tmp_path / "runs" / "digits_my_net" / "model.keras")
        assert os.path.exists(os.path.join(namespace["version"], "saved_model.pb"))


def _set_up_commands(text: str) -> list[str]:
    return re.findall(r"^python3 -m venv \.venv && .*$", text, flags=re.M)


def test_ci_runs_the_readme_commands():
    install, test = re.findall(r"```bash\n(.*?)\n(.*?)\n```", _readme(), flags=re.S)[0]
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    ci_lines = ci.splitlines()
    assert install.split(" && .venv/bin/python main.py")[0] in ci_lines
    assert test in ci_lines
    # The docs' set-up commands install what CI installs.
    ci_install = install.split(" && .venv/bin/python main.py")[0]
    documented = [line for page in DOCS_PAGES for line in _set_up_commands(_read(page))]
    assert documented, "no set-up command in docs/"
    assert all(line.startswith(ci_install) for line in documented), documented


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub (and the site's MyST) give a page's headings."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_links_resolve():
    links = re.findall(r"\]\(((?!https?:)[^)]+)\)", _readme())
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        path, _, anchor = link.partition("#")
        target = os.path.join(REPO, path) if path else os.path.join(REPO, "README.md")
        assert os.path.isfile(target), link
        if anchor:
            assert anchor in _anchors(_read(target)), link


def test_the_files_the_docs_name_exist():
    """A path of the repository named in the README or the docs (a test, a bench script, a
    flagfile, a module) exists: moving a file means updating the pages that point to it."""
    pattern = r"(?<![\w/.])((?:tests|bench|flags|mixmo_tf|experiments)/[\w/.<>*-]*)"
    named = set()
    for page in [os.path.join(REPO, "README.md"), *DOCS_PAGES]:
        found = re.findall(pattern, _read(page))
        # Patterns (flags/cifar100_..., <w>, *.JPEG) name families of files, not one file.
        named |= {p.rstrip(".") for p in found if not any(c in p for c in ("<", "*", "..."))}
    assert any(path.startswith("tests/") for path in named)
    missing = sorted(path for path in named if not os.path.exists(os.path.join(REPO, path)))
    assert missing == []


def _resolves(dotted: str) -> bool:
    """Whether `mixmo_tf.a.b` names a module or an attribute reachable from one."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_the_python_names_the_docs_give_exist():
    """A `mixmo_tf.x.y` name in the README or the docs is importable: moving a module or a
    public name means updating the pages that name it."""
    named = set()
    for page in [os.path.join(REPO, "README.md"), *DOCS_PAGES]:
        named |= set(re.findall(r"\bmixmo_tf(?:\.[A-Za-z_]\w*)+", _read(page)))
    assert "mixmo_tf.Config" in named
    assert sorted(name for name in named if not _resolves(name)) == []
