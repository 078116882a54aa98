"""The package's shape: a settings layer free of TensorFlow, lazy public names, no import cycles."""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys

import pytest

import mixmo_tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "mixmo_tf")
_HEAVY = ("tensorflow", "keras", "tensorflow_datasets", "matplotlib")

# Everything a user does before a run starts: settings, flags, a recorded run, the registry,
# reading an authors' checkpoint to import, choosing oneDNN for training.
_SETTINGS_WORK = """
import json, os, sys, tempfile
from absl import flags
from mixmo_tf.config import Config, run_record
from mixmo_tf.config.run_folder import RunFolder
from mixmo_tf.cli import flags as mixmo_flags
import mixmo_tf
from mixmo_tf import backbones

values = flags.FlagValues()
mixmo_flags.define_flags(values)
values(["main.py", "--dataset=digits", "--depth=16", "--mixing=linear", "--smoke"])
config = mixmo_flags.config_from_flags(values)
assert config.depth == 10 and config.mixing == "linear", config
# A flag the mode does not read and a number out of range are refused before TensorFlow starts.
refused = flags.FlagValues()
mixmo_flags.define_flags(refused)
refused(["main.py", "--mode=train", "--checkpoint=paper.ckpt", "--lr=nan"])
for check in (mixmo_flags.check_flags_apply, mixmo_flags.config_from_flags):
    try:
        check(refused)
    except ValueError:
        pass
    else:
        raise AssertionError(check)
assert mixmo_tf.Config is Config and backbones.backbone_names()[:2] == ("wrn", "preact_resnet")
folder = tempfile.mkdtemp()
run_record.record_run_config(Config(dataset="cifar10", model_dir=folder))
assert run_record.recorded_config(folder).dataset == "cifar10"
assert os.path.exists(RunFolder(folder).run_config)
# --mode=import reads and checks the authors' file before TensorFlow starts.
from mixmo_tf.importing import authors_checkpoint
checkpoint = authors_checkpoint.read_authors_checkpoint("tests/fixtures/authors/wrn10-1_m2_zip.pt")
imported = authors_checkpoint.import_config(checkpoint.architecture, Config(), [])
assert (imported.depth, imported.width, imported.dataset) == (10, 1, "cifar10"), imported
# --checkpoint=ROW and --checkpoint=list: the released rows, their download and their list.
from mixmo_tf.cli import released_rows
from mixmo_tf.importing import downloads
assert downloads.checkpoint_row("cifar10_wrn28-10_mimo").num_members == 2
assert "cifar10_wrn28-10_mimo" in released_rows.listing()
# A training run's oneDNN choice is made before TensorFlow starts (it reads the setting once).
from mixmo_tf.cli import app
from mixmo_tf.tuning import machine, onednn, rules, step_times
facts = machine.this_machine()
assert facts.tensorflow != "unknown", facts
onednn.apply(onednn.choose_onednn(Config(dataset="digits", distribution="tpu")))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
"""


def _run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_settings_flags_and_recorded_runs_import_no_tensorflow():
    process = _run_python("-c", _SETTINGS_WORK % (_HEAVY,))
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.strip() == "[]"


_MAIN_HELP = """
import json, runpy, sys
sys.argv = ["main.py", "--help"]
try:
    runpy.run_path("main.py", run_name="__main__")
except SystemExit as exit_:
    assert exit_.code == 0, exit_.code
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
"""


def test_main_help_imports_no_tensorflow():
    process = _run_python("-c", _MAIN_HELP % (_HEAVY,))
    assert process.returncode == 0, process.stderr[-3000:]
    assert "\noptimisation:\n" in process.stdout
    assert process.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", mixmo_tf.__all__)
def test_every_public_name_of_the_root_loads(name):
    assert getattr(mixmo_tf, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        mixmo_tf.experiment  # noqa: B018  (not a name the package defines)


# ---- the import graph ----------------------------------------------------------------------------


def _module_files() -> dict[str, str]:
    """{dotted module name: file} of every module of the package (packages as their __init__)."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            parts = os.path.relpath(path, REPO)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _lazy_names(init_file: str) -> dict[str, str]:
    """{public name: module defining it} of a package whose __init__ is a lazy_loader.attach."""
    tree = ast.parse(open(init_file, encoding="utf-8").read())
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "attach":
            for keyword in node.keywords:
                if keyword.arg == "submod_attrs":
                    for module, attributes in ast.literal_eval(keyword.value).items():
                        names.update(dict.fromkeys(attributes, module))
    return names


def _import_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}, counting imports inside functions too.

    `from P import name` depends on P.name if that is a module, else on the module P's lazy
    root loads `name` from; importing a module also runs its packages' __init__ files.
    """
    files = _module_files()
    lazy = {package: _lazy_names(files[package]) for package in files if package in files}
    graph = {}
    for module, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    if candidate in files:
                        targets.add(candidate)
                    elif alias.name in lazy.get(node.module, {}):
                        targets.add(f"{node.module}.{lazy[node.module][alias.name]}")
                    else:
                        targets.add(node.module)
        dependencies = set()
        for target in targets:
            parts = target.split(".")
            dependencies.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        graph[module] = {name for name in dependencies if name in files and name != module}
    return graph


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "mixmo_tf.models.build" in graph["mixmo_tf.training.checkpoints"]
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")
    assert len(order) == len(graph)


# The layers, lowest first: a subpackage imports from its own layer or lower ones, never
# higher. Within the fourth layer imports run one way (training uses tuning; evaluation and
# importing use training), which the test of mutual pairs below holds.
LAYERS = (
    ("config",),
    ("data",),
    ("mixing",),
    ("models",),
    ("training", "tuning", "evaluation", "importing"),
    ("serving",),
    ("cli",),
)
# Imports allowed to run up a layer, each with its reason.
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _subpackage_imports() -> dict[tuple[str, str], list[str]]:
    """{(subpackage, subpackage it imports): ["module -> module", ...]} across subpackages."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, dependencies in _import_graph().items():
        for dependency in dependencies:
            source, target = module.split(".")[1:2], dependency.split(".")[1:2]
            if source and target and source != target and dependency != f"mixmo_tf.{target[0]}":
                edges.setdefault((source[0], target[0]), []).append(f"{module} -> {dependency}")
    return edges


def test_every_subpackage_has_a_layer():
    layered = {name for layer in LAYERS for name in layer}
    subpackages = {name.split(".")[1] for name in _module_files() if name.count(".") >= 1}
    assert subpackages == layered


def test_imports_run_down_the_layers():
    rank = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    edges = _subpackage_imports()
    assert ("models", "config") in edges  # the graph sees imports across subpackages
    upward = {
        pair: modules
        for pair, modules in edges.items()
        if rank[pair[1]] > rank[pair[0]] and pair not in UPWARD_EXCEPTIONS
    }
    assert not upward, f"imports up the layers: {upward}"
    assert set(UPWARD_EXCEPTIONS) <= set(edges), "an exception no longer needed: remove it"


def test_no_two_subpackages_import_each_other():
    edges = _subpackage_imports()
    mutual = sorted({tuple(sorted(pair)) for pair in edges if pair[::-1] in edges})
    assert len(mutual) <= len(UPWARD_EXCEPTIONS), {
        pair: edges[pair] for pair in edges if tuple(sorted(pair)) in mutual
    }


def test_package_inits_import_nothing_of_the_package():
    files = _module_files()
    packages = [name for name, path in files.items() if path.endswith("__init__.py")]
    assert len(packages) == 11
    graph = _import_graph()
    for package in packages:
        # Only its parents (run anyway on import); every public name loads on first use.
        assert graph[package] <= {package.rsplit(".", 1)[0], "mixmo_tf"}, package


def test_the_top_level_holds_only_the_package_root():
    entries = sorted(name for name in os.listdir(PACKAGE) if not name.startswith("__pycache__"))
    assert [name for name in entries if name.endswith(".py")] == ["__init__.py"]
    assert {
        "cli",
        "config",
        "data",
        "evaluation",
        "importing",
        "mixing",
        "models",
        "serving",
        "training",
        "tuning",
    } <= set(entries)
