"""mixmo-tf: MixMo (ICCV 2021) in Keras 3 / TensorFlow."""

from setuptools import find_packages, setup

# Pinned to the version of the CPU wheel the tests and the bench results were measured with
# (2.13.0+cpu): an unpinned `torch` can pull a newer multi-GB CUDA build. PyPI's Linux wheel of
# 2.13.0 is a CUDA build too; for the CPU one add
# --extra-index-url https://download.pytorch.org/whl/cpu.
_TORCH = "torch==2.13.0"

setup(
    name="mixmo-tf",
    version="0.1.0",
    description=(
        "MixMo: Mixing Multiple Inputs for Multiple Outputs via Deep Subnetworks, "
        "in Keras 3 / TensorFlow"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mixmo_tf", "mixmo_tf.*"]),
    # Class names shipped with exported models (mixmo_tf.data.class_names).
    package_data={"mixmo_tf.data": ["labels/*.txt"]},
    python_requires=">=3.10",
    install_requires=[
        # CPU build; GPU users install `tensorflow==2.21.0` instead (same API).
        "tensorflow-cpu==2.21.0",
        "keras==3.15.1",
        "tensorflow-datasets==4.9.10",
        # tensorflow-datasets 4.9.10 imports it without declaring it.
        "importlib_resources>=6.0",
        # tensorflow-cpu 2.21 does not pull it in; Keras' TensorBoard callback needs it.
        "tensorboard==2.21.0",
        "absl-py>=2.1",
        # The package's lazy public names (PEP 562): the settings layer loads no TensorFlow.
        "lazy_loader>=0.4",
        "numpy>=1.26",
        # Evaluation figures (reliability diagrams) as PNG.
        "matplotlib==3.10.8",
        # --checkpoint=ROW: the authors' files on Google Drive, whose "can't scan for viruses"
        # and quota pages gdown reads (its get_url_from_gdrive_confirmation, not in its __all__:
        # hence the upper bound); it streams the file with a progress bar and checks its size.
        "gdown>=6.5.1,<7",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "scikit-learn>=1.5"],
        "dev": ["ruff>=0.6"],
        # The documentation site (docs/): Sphinx with Markdown pages (MyST) and the furo theme.
        # Sphinx 9 and MyST-Parser 5 need Python 3.11; on 3.10 the last releases that run there.
        "docs": [
            "sphinx==9.0.4; python_version >= '3.11'",
            "sphinx==8.1.3; python_version < '3.11'",
            "myst-parser==5.2.0; python_version >= '3.11'",
            "myst-parser==4.0.1; python_version < '3.11'",
            "furo==2025.12.19",
        ],
        # The other two Keras 3 backends, chosen with KERAS_BACKEND=jax or torch; CI runs the
        # backend-agnostic tests on each (pytest.ini's `backends` marker). CPU builds; for a GPU,
        # install JAX's CUDA extra of the same version in the venv afterwards.
        "jax": ["jax[cpu]==0.10.2"],
        "torch": [_TORCH],
        # bench/pytorch_step.py only: the MixMo authors' PyTorch step, timed against ours. The
        # other packages are what the authors' modules import.
        "bench_torch": [
            _TORCH,
            "pyyaml>=6.0",
            "easydict>=1.10",
            "coloredlogs>=15.0",
            "verboselogs>=1.7",
        ],
    },
    entry_points={"console_scripts": ["mixmo-tf=mixmo_tf.cli:run"]},
)
