"""The mixing on JAX and PyTorch against TensorFlow, each backend in its own process.

Proves that:
- `mixmo_tf.mixing` imports and runs under KERAS_BACKEND=jax and torch with TensorFlow
  unimportable, and loads no TensorFlow module;
- the draws of the three backends are equal in distribution (the same key gives different
  numbers on each backend): ratios on both sampler paths, cut-box areas, the own share after
  input CutMix and the own-majority swap (two-sample Kolmogorov-Smirnov tests), cut frequency
  and box member (two-proportion tests).
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers.mixing import NUM_STANDARD_ERRORS
from helpers.paths import REPO
from scipy import stats

OTHER_BACKENDS = ("jax", "torch")

# Makes TensorFlow unimportable in the child, as on a machine without it: `import tensorflow`
# raises ModuleNotFoundError and `importlib.util.find_spec` answers None (PyTorch asks it).
_WITHOUT_TENSORFLOW = """
sys.modules["tensorflow"] = None
"""

_IMPORT_AND_MIX = """
from mixmo_tf.mixing import features, inputs, keyed_random

key = keyed_random.key(1, 2)
params = features.sample_mixing_params(key, keyed_random.fold_in(key, 1), 4, 2, 0.5, 1.0, 4, 4)
masks = features.mixing_masks(params, 4, 4)
input_mixing = inputs.sample_input_mixing_params(key, 4, 2, 1.0, 1.0, 8, 8)
own = inputs.own_pixel_masks(input_mixing, "cutmix", 8, 8)
inputs.own_majority(own, inputs.corrected_own_share(own, masks))
try:
    import tensorflow
except ImportError:
    pass
else:
    raise AssertionError("TensorFlow should be unimportable here")
loaded = [name for name, module in sys.modules.items() if module is not None]
print(json.dumps(sorted(name for name in loaded if name.split(".")[0] == "tensorflow")))
"""

NUM_SAMPLES, NUM_BATCHES, CUT_PROB = 20_000, 300, 0.3

_DRAWS = f"""
import numpy as np
from keras import ops
from mixmo_tf.mixing import features, inputs, keyed_random

def numpy(value):
    return ops.convert_to_numpy(value)

key = keyed_random.key(11, 0)
draws = {{}}
for alpha in (2.0, 0.5):  # sums of exponentials; the backend's Gamma sampler
    ratio_key = keyed_random.fold_in(key, int(alpha * 2))
    draws[f"ratios_{{alpha}}"] = numpy(features.sample_beta(ratio_key, {NUM_SAMPLES}, alpha))
params = features.sample_mixing_params(
    keyed_random.fold_in(key, 7), keyed_random.fold_in(key, 8), {NUM_SAMPLES}, 2, 2.0, 1.0, 8, 8
)
masks = features.mixing_masks(params, 8, 8)
draws["areas"] = numpy(masks)[..., int(np.argmin(numpy(params.roles)))].mean(axis=(1, 2))
input_mixing = inputs.sample_input_mixing_params(
    keyed_random.fold_in(key, 9), {NUM_SAMPLES}, 2, 1.0, 1.0, 16, 16
)
own = inputs.own_pixel_masks(input_mixing, "cutmix", 16, 16)
shares = numpy(inputs.own_majority(own, inputs.corrected_own_share(own, masks))[1])
draws["own_shares"] = shares[numpy(masks).max(axis=(1, 2)) > 0]
cuts, box_members = [], []
for batch in range({NUM_BATCHES}):
    batch_params = features.sample_mixing_params(
        keyed_random.key(12, batch), key, 1, 2, 2.0, {CUT_PROB}, 2, 2
    )
    cuts.append(bool(numpy(batch_params.use_cut)))
    box_members.append(int(np.argmin(numpy(batch_params.roles))))
draws["cuts"], draws["box_members"] = np.array(cuts), np.array(box_members)
np.savez(sys.argv[1], **draws)
"""


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(backend: str, script: str, *args: str) -> subprocess.Popen:
    """Starts `script` under KERAS_BACKEND=backend, TensorFlow unimportable unless it is it."""
    prelude = "import json, sys\n" + (_WITHOUT_TENSORFLOW if backend != "tensorflow" else "")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": REPO}
    return subprocess.Popen(
        [sys.executable, "-c", prelude + script, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_mixing_runs_without_tensorflow(backend):
    if not _has(backend):
        pytest.skip(f"{backend} is not installed")
    stdout = _finish(_run(backend, _IMPORT_AND_MIX))
    assert json.loads(stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_draws_are_equal_in_distribution_across_backends(tmp_path):
    backends = ["tensorflow", *(name for name in OTHER_BACKENDS if _has(name))]
    if len(backends) == 1:
        pytest.skip("neither JAX nor PyTorch is installed")
    processes = {name: _run(name, _DRAWS, str(tmp_path / f"{name}.npz")) for name in backends}
    for process in processes.values():
        _finish(process)
    draws = {name: np.load(tmp_path / f"{name}.npz") for name in backends}
    reference = draws["tensorflow"]
    for name in backends[1:]:
        for quantity in ("ratios_2.0", "ratios_0.5", "areas", "own_shares"):
            result = stats.ks_2samp(draws[name][quantity], reference[quantity])
            assert result.pvalue > 1e-4, (name, quantity, result)
        for quantity, probability in (("cuts", CUT_PROB), ("box_members", 0.5)):
            difference = draws[name][quantity].mean() - reference[quantity].mean()
            standard_error = math.sqrt(2 * probability * (1 - probability) / NUM_BATCHES)
            assert abs(difference) < NUM_STANDARD_ERRORS * standard_error, (name, quantity)
