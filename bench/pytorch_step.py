"""The MixMo authors' PyTorch training step against this project's, interleaved in one process.

The PyTorch step is the authors' own code (a checkout of alexrame/mixmo-pytorch, given by
--authors_code), imported and run, never copied: their WideResNetMixMo built by their network
factory with their init, their feature mixing (`mixing_blocks.mix_manifolds`, inside their
network), their loss wrapper (`core.loss.get_loss`: the members' soft cross-entropies plus
their L2 term) and their SGD (`core.optimizer.get_optimizer`: torch.optim.SGD, Nesterov), with
the settings of their CIFAR-100 Cut-MixMo config file (config/cifar100/, p=0.5, weight_root 3,
b=4; the msdacutmix file for --msda=cutmix). Their batches come from their own data path run
before the timing, as their DataLoader workers would run it beside the step: their
`MixMoDataset` (mixing masks, loss weights folded into the soft targets by their target
balancing) and `BatchRepetitionSampler`, over synthetic CIFAR-100-shaped images. A timed step
is what their `Learner._train_subloop` does: zero_grad, forward of the M inputs (concatenated on
channels, as their `_prepare_batch_train`), loss, backward, optimizer step. Left out: their
train-accuracy update (a softmax and argmax of one member's logits), as their metrics module
imports torchvision. PyTorch runs channels_last on `--torch_threads` threads, in float32 and under
`torch.autocast("cpu", dtype=torch.bfloat16)` around the forward pass and the loss (PyTorch's
mixed-precision recipe: backward outside autocast).

This project's step is `MixMoModel.train_step` as bench/train_step.py times it (the same
WRN, B, b, M and mixing, in float32 and mixed_bfloat16); it also draws the mixing masks and,
with --msda=cutmix, mixes the input images, which the authors' data path does outside their
step.

Every variant is timed in alternating rounds (`harness.interleaved_medians`) and printed as
one JSON line with its median over the first variant's (`over_first`) and, for this project's
variants, over the authors' step in the same compute dtype (`over_pytorch`).

Needs torch and the modules the authors' code imports: pip install -e ".[bench_torch]". The
TensorFlow variants alone (--variants=tf_float32,tf_mixed_bfloat16) need neither.

Example:
    TF_ENABLE_ONEDNN_OPTS=1 python bench/pytorch_step.py --authors_code=/tmp/authors \
        --networks=28-10 --warmup_steps=1 --timed_steps=3
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import importlib.util
import itertools
import os
import random
import sys
import types
from collections.abc import Callable
from typing import Any, NoReturn

import harness
import keras
import numpy as np
from absl import flags
from pipeline_batches import NUM_EXAMPLES
from train_step import prepare_steps

from mixmo_tf.cli import exit_codes
from mixmo_tf.config import Config
from mixmo_tf.config.datasets import dataset_spec
from mixmo_tf.models.build import build_model

INSTALL_HINT = 'pip install -e ".[bench_torch]"'
# The authors' CIFAR-100 Cut-MixMo configs (M=2, b=4), by this bench's --msda.
AUTHORS_CONFIGS = {
    "none": "config/cifar100/exp_cifar100_wrn2810-2_cutmixmo-p5_standard_bar4.yaml",
    "cutmix": "config/cifar100/exp_cifar100_wrn2810-2_cutmixmo-p5_msdacutmix_bar4.yaml",
}
# What their CIFAR loaders tell their dataset wrapper (mixmo/loaders/loader.py, properties):
# the shape of a stem's output, on which the mixing masks are drawn.
CIFAR_PROPERTIES = {
    "conv1_input_size": (16, 32, 32),
    "conv1_is_half_size": False,
    "pixels_size": 32,
}
# Their loss config lists three heads, so their code runs M = 2 or 3.
AUTHORS_MEMBERS = (2, 3)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One timed training step: whose code, and in which precision.

    `precision` is a Keras dtype policy for TensorFlow; for PyTorch "float32" or "bfloat16"
    (autocast), named by the compute dtype so that `over_pytorch` pairs them.
    """

    framework: str
    precision: str


VARIANTS = {
    "pytorch_float32": Variant("pytorch", "float32"),
    "pytorch_bfloat16": Variant("pytorch", "bfloat16"),
    "tf_float32": Variant("tensorflow", "float32"),
    "tf_mixed_bfloat16": Variant("tensorflow", "mixed_bfloat16"),
}


@dataclasses.dataclass(frozen=True)
class AuthorsCode:
    """torch and the authors' modules this bench runs, and their config file read as a dict."""

    torch: types.ModuleType
    networks: types.ModuleType
    loss: types.ModuleType
    optimizer: types.ModuleType
    dataset_wrapper: types.ModuleType
    sampler: types.ModuleType
    config: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class AuthorsBatch:
    """One training batch as their `Learner._prepare_batch_train` hands it to their step."""

    pixels: Any  # torch.Tensor (B, 3M, H, W), channels_last
    metadata: dict[str, Any]
    targets: dict[str, Any]


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_string(
        "authors_code",
        None,
        "A checkout of alexrame/mixmo-pytorch (needed by the pytorch_* variants).",
        flag_values=values,
    )
    flags.DEFINE_list(
        "networks", ["28-10"], "WRNs as depth-width (CIFAR-100 shapes).", flag_values=values
    )
    flags.DEFINE_integer(
        "members", 2, "M (2 or 3: the authors' loss has 3 heads).", flag_values=values
    )
    flags.DEFINE_integer("batch_size", 64, "Slots per batch B.", flag_values=values)
    flags.DEFINE_integer("batch_repetitions", 4, "b.", flag_values=values)
    flags.DEFINE_enum(
        "msda",
        "none",
        list(AUTHORS_CONFIGS),
        "Input mixing: none (their *_standard_bar4.yaml) or cutmix (*_msdacutmix_bar4.yaml).",
        flag_values=values,
    )
    flags.DEFINE_list(
        "variants",
        list(VARIANTS),
        f"Steps to time, in this order; the first is the reference of over_first. Of: "
        f"{', '.join(VARIANTS)}.",
        flag_values=values,
    )
    flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.", flag_values=values)
    flags.DEFINE_integer("warmup_steps", 1, "Untimed rounds.", flag_values=values)
    flags.DEFINE_integer("timed_steps", 3, "Timed rounds; medians reported.", flag_values=values)
    flags.register_validator(
        "variants",
        lambda names: bool(names) and len(set(names)) == len(names) and set(names) <= set(VARIANTS),
        f"--variants must be distinct names among {', '.join(VARIANTS)}.",
        flag_values=values,
    )
    flags.register_validator(
        "networks",
        lambda networks: all(_is_wrn(network) for network in networks),
        "--networks must be WRNs written depth-width, e.g. 28-10 (the authors' CIFAR network).",
        flag_values=values,
    )
    flags.register_validator(
        "members",
        lambda members: members in AUTHORS_MEMBERS,
        "--members must be 2 or 3 (the authors' loss config has three heads).",
        flag_values=values,
    )


def _is_wrn(network: str) -> bool:
    """Whether `network` parses as a WRN depth-width."""
    try:
        return harness.parse_network(network)[0] == "wrn"
    except ValueError:
        return False


def refuse(message: str) -> NoReturn:
    """Prints `message` as one ERROR line on stderr and exits with status 2."""
    sys.exit(exit_codes.report_error(message))


def _module_from_file(root: str, relative_path: str, name: str) -> types.ModuleType:
    """Runs one file of the authors' code as module `name`, without its package's __init__."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_authors_code(authors_code: str | None, msda: str) -> AuthorsCode:
    """Imports torch and the authors' modules; refuses (exit 2, one line) what is missing.

    Their mixmo/loaders package imports torchvision (their CIFAR loaders), which the step does
    not need, so its dataset wrapper and sampler files are run on their own. Their CutMix box
    calls `np.int`, an alias NumPy 1.24 removed: their mixing module alone is given a NumPy
    namespace where `int` is the builtin again (what the alias was).
    """
    try:
        import torch
        import yaml
    except ImportError as error:
        refuse(f"The pytorch_* variants need {error.name}: {INSTALL_HINT}")
    needs_checkout = "The pytorch_* variants need --authors_code=PATH, a checkout of mixmo-pytorch"
    if not authors_code:
        refuse(f"{needs_checkout}: none given.")
    config_path = os.path.join(authors_code, AUTHORS_CONFIGS[msda])
    if not os.path.isfile(config_path):
        refuse(f"{needs_checkout}: no {AUTHORS_CONFIGS[msda]} in {authors_code}.")
    root = os.path.abspath(authors_code)
    sys.path.insert(0, root)
    try:
        networks = importlib.import_module("mixmo.networks")
        loss = importlib.import_module("mixmo.core.loss")
        optimizer = importlib.import_module("mixmo.core.optimizer")
        mixing_blocks = importlib.import_module("mixmo.augmentations.mixing_blocks")
        dataset_wrapper = _module_from_file(
            root, "mixmo/loaders/dataset_wrapper.py", "mixmo_authors_dataset_wrapper"
        )
        sampler = _module_from_file(
            root, "mixmo/loaders/batch_repetition_sampler.py", "mixmo_authors_sampler"
        )
    except ImportError as error:
        refuse(f"The authors' code needs {error.name}: {INSTALL_HINT}")
    mixing_blocks.np = types.SimpleNamespace(**vars(np), int=int)
    with open(config_path) as stream:
        config = yaml.safe_load(stream)
    return AuthorsCode(torch, networks, loss, optimizer, dataset_wrapper, sampler, config)


def authors_config(authors: AuthorsCode, network: str, values: flags.FlagValues) -> dict[str, Any]:
    """Their config dict with this run's WRN, M, B and b, as their yaml files set them."""
    _, depth, width = harness.parse_network(network)
    config = copy.deepcopy(authors.config)
    config["num_members"] = values.members
    config["training"]["batch_size"] = values.batch_size
    config["training"]["batch_sampler"]["batch_repetitions"] = values.batch_repetitions
    config["model_wrapper"]["network"].update(depth=depth, widen_factor=width)
    return config


def authors_batches(authors: AuthorsCode, config: dict[str, Any], steps: int) -> list[AuthorsBatch]:
    """`steps` batches of their training data path on synthetic CIFAR-100-shaped images.

    Their `MixMoDataset` (masks, MSDA, target balancing) over the images this project's bench
    uses (`harness.synthetic_data`, as floats in [0, 1]), their `BatchRepetitionSampler`
    (drop_last, as their loader) over a RandomSampler, collated by torch's DataLoader in this
    process; then formatted as their `Learner._prepare_batch_train` does.
    """
    torch = authors.torch
    members = config["num_members"]
    images, labels = harness.synthetic_data(NUM_EXAMPLES, dataset_spec("cifar100"), seed=0)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    dataset = list(zip(pixels, labels.tolist()))
    wrapper = authors.dataset_wrapper.MixMoDataset(
        dataset=dataset,
        num_classes=config["data"]["num_classes"],
        num_members=members,
        dict_config=config["training"]["dataset_wrapper"],
        properties=CIFAR_PROPERTIES.__getitem__,
    )
    batch_sampler = authors.sampler.BatchRepetitionSampler(
        sampler=torch.utils.data.RandomSampler(wrapper),
        batch_size=config["training"]["batch_size"],
        num_members=members,
        config_batch_sampler=config["training"]["batch_sampler"],
        drop_last=True,
    )
    loader = torch.utils.data.DataLoader(wrapper, batch_sampler=batch_sampler, num_workers=0)
    batches = []
    for data in itertools.islice(loader, steps):
        stacked = torch.cat([data[f"pixels_{m}"] for m in range(members)], dim=1)
        batches.append(
            AuthorsBatch(
                pixels=stacked.contiguous(memory_format=torch.channels_last),
                metadata={**data["metadata"], "mode": "train"},
                targets={f"target_{m}": data[f"target_{m}"] for m in range(members)},
            )
        )
    if len(batches) < steps:
        raise ValueError(f"{NUM_EXAMPLES} images make fewer than {steps} batches.")
    return batches


def authors_step(
    authors: AuthorsCode, config: dict[str, Any], bfloat16: bool, steps: int
) -> Callable[[], None]:
    """One of their training steps per call, each on the next of `steps` prepared batches.

    Network, loss and SGD as their `ModelWrapper._init_main` builds them (network seeded 0,
    channels_last); the step as their `Learner._train_subloop`; `bfloat16` runs the forward
    pass and the loss under CPU autocast.
    """
    torch = authors.torch
    model_wrapper = config["model_wrapper"]
    torch.manual_seed(0)
    network = authors.networks.get_network(
        config_network=model_wrapper["network"], config_args=config
    ).to(memory_format=torch.channels_last)
    # Their WrapperLoss rewrites its config's "<num_members" coefficients: give it a copy.
    loss = authors.loss.get_loss(
        config_loss=copy.deepcopy(model_wrapper["loss"]), config_args=config, device="cpu"
    )
    loss.set_regularized_network(network)
    optimizer = authors.optimizer.get_optimizer(
        optimizer=model_wrapper["optimizer"],
        list_param_groups=[{"params": list(network.parameters())}],
    )
    network.train()
    loss.start_accumulator()
    remaining = iter(authors_batches(authors, config, steps))

    def precision_scope() -> contextlib.AbstractContextManager:
        if bfloat16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> None:
        batch = next(remaining)
        optimizer.zero_grad()
        with precision_scope():
            output = network({"pixels": batch.pixels, "metadata": batch.metadata})
            value = loss(output, batch.targets)  # their loss reads it back: synchronised
        value.backward()
        optimizer.step()

    return step


def tf_config(network: str, precision: str, values: flags.FlagValues) -> Config:
    """This project's Config of the same run (bench/train_step.py's, without XLA)."""
    return harness.bench_config(
        network,
        values.members,
        batch_size=values.batch_size,
        batch_repetitions=values.batch_repetitions,
        msda=values.msda,
        precision=precision,
        jit_compile=False,
        steps_per_epoch=values.warmup_steps + values.timed_steps,
        epochs=1,
    )


def tf_step(network: str, precision: str, values: flags.FlagValues) -> Callable[[], None]:
    """This project's compiled training step on its pipeline's batches (bench/train_step.py)."""
    config = tf_config(network, precision, values)
    keras.utils.set_random_seed(0)
    return prepare_steps(build_model(config), config)


def pytorch_fields(
    authors: AuthorsCode, variant: Variant, values: flags.FlagValues
) -> dict[str, Any]:
    """What a PyTorch line records besides the shared fields."""
    torch = authors.torch
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_format": "channels_last",
        "autocast": variant.precision == "bfloat16",
        "authors_code": os.path.abspath(values.authors_code),
        "authors_config": AUTHORS_CONFIGS[values.msda],
    }


def compare_network(
    network: str, values: flags.FlagValues, authors: AuthorsCode | None
) -> list[dict[str, Any]]:
    """One record per variant of `network`, timed interleaved.

    `authors` is None when no pytorch_* variant is asked for.
    """
    variants = {name: VARIANTS[name] for name in values.variants}
    steps = values.warmup_steps + values.timed_steps
    # Their data path draws from Python's, NumPy's and torch's (seeded per network) generators.
    random.seed(0)
    np.random.seed(0)
    functions = {}
    for name, variant in variants.items():
        if variant.framework == "pytorch":
            config = authors_config(authors, network, values)
            functions[name] = authors_step(authors, config, variant.precision == "bfloat16", steps)
        else:
            functions[name] = tf_step(network, variant.precision, values)
    timings = harness.interleaved_medians(functions, values.warmup_steps, values.timed_steps)
    medians = {name: timing["median_s"] for name, timing in timings.items()}
    first = values.variants[0]
    pytorch_by_dtype = {
        variant.precision: medians[name]
        for name, variant in variants.items()
        if variant.framework == "pytorch"
    }
    records = []
    for name, variant in variants.items():
        record = {
            "bench": "pytorch_step",
            "variant": name,
            "framework": variant.framework,
            "precision": variant.precision,
            "network": harness.network_name(network),
            "members": values.members,
            "batch_size": values.batch_size,
            "batch_repetitions": values.batch_repetitions,
            "msda": values.msda,
            "median_step_s": medians[name],
            "step_durations": timings[name]["durations_s"],
            "timed_steps": len(timings[name]["durations_s"]),
            "images_per_s": values.batch_size / medians[name],
            "first_variant": first,
            "over_first": medians[name] / medians[first],
        }
        if variant.framework == "pytorch":
            record.update(pytorch_fields(authors, variant, values))
        else:
            dtype = harness.compute_dtype(variant.precision)
            if dtype in pytorch_by_dtype:
                record["over_pytorch"] = medians[name] / pytorch_by_dtype[dtype]
        records.append(record)
    return records


def run(values: flags.FlagValues) -> None:
    """Compares the variants for each network of --networks and prints its JSON lines.

    Refuses (exit 2, one line on stderr) before any timing when a pytorch_* variant is asked
    for and torch, a module of the authors' code or the checkout is missing.
    """
    authors = None
    if any(VARIANTS[name].framework == "pytorch" for name in values.variants):
        authors = load_authors_code(values.authors_code, values.msda)
        authors.torch.set_num_threads(values.torch_threads)
    harness.emit_networks(
        values, lambda network, flag_values: compare_network(network, flag_values, authors)
    )


if __name__ == "__main__":
    harness.run_script(define_flags, run)
