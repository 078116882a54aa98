"""The bench/ scripts measure what they say: FLOP counting, interleaving, memory, JSON lines.

The helpers are checked against hand computations; each script runs in-process on WRN-10-1
with tiny batches and few steps (its flags parsed on fresh FlagValues, so the scripts never
share absl's global FLAGS), and peak_memory.py runs its two real child processes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from types import ModuleType

import archive_preparation
import auto_tuning
import checkpoint_check
import digits_accuracy
import harness
import inference
import input_pipeline
import keras
import numpy as np
import peak_memory
import precision
import profile_step
import pytest
import pytorch_step
import serving
import serving_precision
import startup
import suite_time
import train_step
from absl import flags
from helpers.bench_scripts import TINY_RUN, parsed_flags, run_script

from mixmo_tf.config.datasets import dataset_spec
from mixmo_tf.models import MixMoNetwork, build_mixmo_network
from mixmo_tf.training.run import train
from mixmo_tf.tuning import machine, onednn


def by_bench(lines: list[dict], bench: str) -> dict[int, dict]:
    """The lines of `bench`, by M."""
    return {line["members"]: line for line in lines if line["bench"] == bench}


def assert_timed(line: dict, median_key: str, durations_key: str, timed: int) -> None:
    assert len(line[durations_key]) == line["timed_steps"] == timed
    assert line[median_key] > 0 and min(line[durations_key]) > 0
    assert line["images_per_s"] == pytest.approx(line["batch_size"] / line[median_key])
    assert line["achieved_gflops"] > 0 and line["peak_rss_mib"] > 0


def assert_ratio(lines: list[dict], bench: str, quantity: str, values: dict[int, float]) -> None:
    (ratio,) = [line for line in lines if line["bench"] == bench]
    assert (ratio["members"], ratio["quantity"]) == (2, quantity)
    assert ratio["mixmo_over_plain"] == pytest.approx(values[2] / values[1])


# ---- harness ---------------------------------------------------------------------------------


def tiny_network(num_members: int = 2) -> MixMoNetwork:
    """Stems conv 3->4 on 8x8, a nested core with a stride-2 conv 4->5, dense heads 5->6."""
    core_input = keras.Input((8, 8, 4))
    core_output = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(5, 3, strides=2, padding="same", use_bias=False)(core_input)
    )
    return build_mixmo_network(
        lambda member: keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
        keras.Model(core_input, core_output),
        num_classes=6,
        num_members=num_members,
        input_shape=(8, 8, 3),
    )


@pytest.mark.parametrize("members", [1, 2])
def test_flop_counts_match_a_hand_computation_with_the_stem_rule(members):
    stem = 2 * (8 * 8) * (3 * 3 * 3 * 4)  # reads the images: forward + weight gradient
    core_conv = 2 * (4 * 4) * (3 * 3 * 4 * 5)
    head = 2 * 5 * 6
    network = tiny_network(members)
    assert harness.inference_flops(network, 3) == 3 * members * (stem + head) + 3 * core_conv
    assert harness.training_flops(network, 3) == 3 * (
        members * (2 * stem + 3 * head) + 3 * core_conv
    )


def test_interleaved_medians_alternate_and_keep_only_timed_rounds():
    calls = []

    def slow_first_call() -> None:
        calls.append("slow")
        time.sleep(0.05 if len(calls) == 1 else 0.001)

    timings = harness.interleaved_medians(
        {"slow": slow_first_call, "fast": lambda: calls.append("fast")}, warmup=1, timed=3
    )
    assert calls == ["slow", "fast"] * 4
    assert len(timings["slow"]["durations_s"]) == len(timings["fast"]["durations_s"]) == 3
    assert max(timings["slow"]["durations_s"]) < 0.05
    assert timings["slow"]["median_s"] == np.median(timings["slow"]["durations_s"])


@pytest.mark.slow
def test_peak_rss_grows_past_a_larger_allocation():
    before = harness.peak_rss_mib()
    assert before > 0
    array = np.ones(int((before + 64) * 2**20), np.uint8)  # touched: resident
    assert harness.peak_rss_mib() >= before + 64
    del array


def test_cpu_flags_name_the_precision_relevant_features(tmp_path, monkeypatch):
    cpu_info = tmp_path / "cpuinfo"
    cpu_info.write_text("model name\t: Test\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n")
    monkeypatch.setattr(harness, "_CPU_INFO", str(cpu_info))
    assert harness.cpu_flags() == ["avx2", "avx512f", "amx_bf16"]
    assert harness.environment()["cpu_flags"] == ["avx2", "avx512f", "amx_bf16"]


def test_matmul_ceiling_is_positive():
    assert harness.matmul_ceiling_gflops("float32", size=64, repeats=2) > 0


@pytest.mark.parametrize(
    "dataset, shape", [("cifar100", (32, 32, 3)), ("tiny_imagenet", (64, 64, 3))]
)
def test_synthetic_data_has_the_datasets_shapes_and_dtypes(dataset, shape):
    spec = dataset_spec(dataset)
    images, labels = harness.synthetic_data(10, spec, seed=0)
    assert images.shape == (10, *shape) and images.dtype == np.uint8
    assert labels.shape == (10,) and labels.dtype == np.int64 and labels.max() < spec.num_classes


def test_networks_name_their_backbone():
    assert harness.parse_network("28-10") == ("wrn", 28, 10)
    assert harness.network_name("28-10") == "WRN-28-10"
    assert harness.network_name("preact_resnet:18-2") == "preact_resnet18-2"
    config = harness.bench_config("preact_resnet:18-1", 2, batch_size=8)
    assert (config.backbone, config.width, config.dataset) == ("preact_resnet", 1, "tiny_imagenet")


def test_the_plain_network_config_has_no_mixing_and_no_repetition():
    config = harness.bench_config("10-1", 1, batch_size=8, batch_repetitions=4, msda="cutmix")
    assert (config.mixing, config.batch_repetitions, config.msda) == ("none", 1, "none")
    assert config.precision != "auto"
    with pytest.raises(ValueError, match=r"\[backbone:\]depth-width"):
        harness.parse_network("28x10")


@pytest.mark.parametrize("bad_flag", ["--networks=28x10", "--members=2,0"])
def test_bad_networks_or_members_fail_at_parse_time(bad_flag):
    with pytest.raises(flags.IllegalFlagValueError):
        parsed_flags(train_step, bad_flag)


# ---- scripts ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_step_lines(capsys):
    lines = run_script(
        train_step,
        capsys,
        *TINY_RUN,
        "--timed_steps=2",
        "--msda=cutmix",
        "--ceiling_networks=10-1",
        "--ceiling_size=64",
    )
    steps = by_bench(lines, "train_step")
    assert sorted(steps) == [1, 2]
    for line in steps.values():
        assert line["network"] == "WRN-10-1" and line["precision"] != "auto"
        assert_timed(line, "median_step_s", "step_durations", timed=2)
        assert line["fraction_of_ceiling"] == pytest.approx(
            line["achieved_gflops"] / line["matmul_ceiling_gflops"]
        )
    assert (steps[2]["batch_repetitions"], steps[2]["msda"]) == (4, "cutmix")
    assert (steps[1]["batch_repetitions"], steps[1]["msda"]) == (1, "none")
    # M = 2 adds a stem and a head to the same core.
    assert steps[2]["training_gflop_per_step"] > steps[1]["training_gflop_per_step"] > 0
    medians = {m: line["median_step_s"] for m, line in steps.items()}
    assert_ratio(lines, "train_step_ratio", "median_step_s", medians)


def test_inference_lines(capsys):
    lines = run_script(inference, capsys, *TINY_RUN, "--timed_steps=2")
    predictions = by_bench(lines, "inference")
    assert sorted(predictions) == [1, 2]
    for line in predictions.values():
        assert_timed(line, "median_s", "durations_s", timed=2)
    assert predictions[2]["inference_gflop_per_batch"] > predictions[1]["inference_gflop_per_batch"]
    medians = {m: line["median_s"] for m, line in predictions.items()}
    assert_ratio(lines, "inference_ratio", "median_s", medians)


def test_input_pipeline_lines(capsys):
    lines = run_script(
        input_pipeline,
        capsys,
        "--num_examples=256",
        "--batch_size=16",
        "--warmup_batches=1",
        "--block_batches=3",
        "--timed_blocks=2",
    )
    pipelines = {line["msda"]: line for line in lines}
    assert sorted(pipelines) == ["cutmix", "none"]
    for line in pipelines.values():
        assert len(line["block_durations"]) == line["timed_blocks"] == 2
        assert line["images_per_s"] == pytest.approx(16 * 3 / line["median_block_s"])
        assert line["member_images_per_s"] == pytest.approx(2 * line["images_per_s"])
    assert pipelines["cutmix"]["partners"] and not pipelines["none"]["partners"]
    assert "partner_images_per_s" in pipelines["cutmix"]
    assert "partner_images_per_s" not in pipelines["none"]


@pytest.mark.slow
def test_peak_memory_runs_each_member_count_in_its_own_process(capsys):
    lines = run_script(peak_memory, capsys, *TINY_RUN, "--timed_steps=1", "--precision=float32")
    runs = by_bench(lines, "peak_memory")
    assert sorted(runs) == [1, 2]
    for members, line in runs.items():
        assert line["peak_rss_mib"] > 0 and line["median_step_s"] > 0
        assert line["precision"] == "float32"
        assert f"--members={members}" in line["child_command"]
        assert "--ceiling_networks= " in line["child_command"]
    peaks = {m: line["peak_rss_mib"] for m, line in runs.items()}
    assert_ratio(lines, "peak_memory_ratio", "peak_rss_mib", peaks)


@pytest.mark.slow
def test_precision_lines_compare_every_variant_to_the_first(capsys):
    lines = run_script(
        precision,
        capsys,
        *TINY_RUN,
        "--timed_steps=1",
        "--precisions=float32,mixed_bfloat16",
        "--jit_compiles=false",
    )
    assert [(line["precision"], line["jit_compile"]) for line in lines] == [
        ("float32", False),
        ("mixed_bfloat16", False),
    ]
    assert lines[0]["over_first"] == 1.0
    assert lines[1]["over_first"] == pytest.approx(
        lines[1]["median_step_s"] / lines[0]["median_step_s"]
    )


def parsed_precisions(*args: str) -> list[str]:
    """--precisions as precision.py parses `args`."""
    return parsed_flags(precision, *args).precisions


def test_precisions_flag_takes_a_comma_separated_list():
    assert parsed_precisions() == ["float32", "mixed_bfloat16"]
    assert parsed_precisions("--precisions=mixed_bfloat16,float32,mixed_float16") == [
        "mixed_bfloat16",
        "float32",
        "mixed_float16",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precisions=float32,float64"], "'float64' is not a precision; choose from float32, "),
        (["--precisions=auto"], "'auto' is not a precision"),
        (["--precisions="], "name at least one precision"),
        (["--precisions=float32,mixed_bfloat16,float32"], "'float32' is named twice"),
        # Repeating the flag would keep only the last value: refused instead.
        (["--precisions=float32", "--precisions=mixed_bfloat16"], "already defined"),
    ],
)
def test_precisions_flag_refuses_unknown_or_repeated_values(args, message):
    with pytest.raises(flags.IllegalFlagValueError, match=message):
        parsed_precisions(*args)


@pytest.mark.slow
def test_profile_lines_split_the_step_into_its_parts(capsys):
    lines = run_script(profile_step, capsys, *TINY_RUN, "--timed_steps=1", "--precision=float32")
    profiles = by_bench(lines, "profile_step")
    assert sorted(profiles) == [1, 2]
    for line in profiles.values():
        assert line["traces"] == 1  # compiled once, not retraced per step
        # oneDNN kernels run exactly when TensorFlow has oneDNN on (not on every x86 CPU).
        assert (line["onednn_share"] > 0) == line["onednn"] and line["onednn_share"] <= 1
        # The top kernels are part of the total.
        assert 0 < sum(line["ms_by_kernel"].values()) <= line["op_ms_per_step"] * (1 + 1e-9)
        parts = line["ms_by_part"]
        assert {"convolutions", "batch_norm", "stems", "heads", "rest_of_step"} <= parts.keys()
        assert sum(parts.values()) == pytest.approx(line["op_ms_per_step"])
    # Only a MixMo network mixes features.
    assert "mixing" in profiles[2]["ms_by_part"] and "mixing" not in profiles[1]["ms_by_part"]


@pytest.mark.parametrize(
    "op_name, part",
    [
        (
            "gradient_tape/net/core/group1_block0_conv1_1/convolution/Conv2DBackpropInput",
            "convolutions",
        ),
        ("net/core/group2_block0_shortcut_1/convolution", "convolutions"),
        ("net/core/group0_block0_pre_bn_1/FusedBatchNormV3", "batch_norm"),
        ("net/stem_1_1/convolution", "stems"),
        ("net/feature_mixing_1/mul", "mixing"),
        ("net/head_0_1/MatMul", "heads"),
        ("SGD/AssignAddVariableOp", "rest_of_step"),
    ],
)
def test_ops_are_attributed_to_their_part(op_name, part):
    assert profile_step.part_of(op_name) == part


def test_archive_preparation_line(capsys, monkeypatch):
    """A small archive instead of the full size: the line says what was prepared, and how long."""
    small = dataclasses.replace(
        archive_preparation.dataset_spec("cifar10"), num_train=50, num_test=20
    )
    monkeypatch.setattr(archive_preparation, "dataset_spec", lambda name: small)
    (line,) = run_script(archive_preparation, capsys, "--datasets=cifar10")
    assert (line["dataset"], line["num_train"], line["num_test"]) == ("cifar10", 50, 20)
    assert line["preparation_s"] > 0 and line["archive_mib"] > 0


def short_digits_flagfile(folder, *extra: str) -> str:
    """A two-step version of the digits demo flagfile (plus `extra` flags), written in `folder`."""
    flagfile = folder / "short.flags"
    flagfile.write_text(
        "\n".join(
            [
                f"--flagfile={digits_accuracy.DIGITS_FLAGFILE}",
                "--epochs=1",
                "--steps_per_epoch=2",
                "--eval_steps=1",
                "--lr_decay_epochs=1",
                *extra,
            ]
        )
        + "\n"
    )
    return str(flagfile)


@pytest.mark.slow
def test_checkpoint_check_line_times_the_check_beside_restore_and_save(capsys):
    (line,) = run_script(checkpoint_check, capsys, "--networks=10-1", "--rounds=2")
    assert line["bench"] == "checkpoint_check" and line["network"] == "WRN-10-1"
    # WRN-10-1, M=2, CIFAR-100: ~80k weights, the same again as momentum, in float32.
    assert 0.3 < line["checkpoint_mib"] < 3
    for name in ("check", "restore", "save"):
        assert line[f"{name}_median_s"] > 0
    ratio = line["check_median_s"] / line["restore_median_s"]
    assert line["check_over_restore"] == pytest.approx(ratio)


def test_digits_accuracy_line(capsys, tmp_path):
    """Without --seeds, one run with the flagfile's seed: its metrics, then the summary."""
    flagfile = short_digits_flagfile(tmp_path, "--seed=3")
    line, summary = run_script(digits_accuracy, capsys, f"--flagfile_path={flagfile}")
    assert (line["precision"], line["seed"], line["steps"]) == ("float32", 3, 2)
    assert 0 <= line["accuracy"] <= 1 and len(line["member_accuracies"]) == 2
    assert line["mean_member_accuracy"] == pytest.approx(np.mean(line["member_accuracies"]))
    assert line["train_s"] > 0 and line["nll"] > 0 and 0 <= line["ece"] <= 1
    assert (summary["bench"], summary["seeds"]) == ("digits_accuracy_summary", [3])
    assert summary["mean_accuracy"] == line["accuracy"]


@pytest.mark.slow
def test_digits_accuracy_trains_each_seed_and_averages_them(capsys, tmp_path):
    flagfile = short_digits_flagfile(tmp_path)
    *runs, summary = run_script(
        digits_accuracy, capsys, f"--flagfile_path={flagfile}", "--seeds=0,1"
    )
    assert [(line["precision"], line["seed"]) for line in runs] == [("float32", 0), ("float32", 1)]
    # The seed reaches the run: other initial weights and batches, other predictions.
    assert runs[0]["nll"] != runs[1]["nll"]
    assert (summary["precision"], summary["seeds"]) == ("float32", [0, 1])
    for key in ("accuracy", "mean_member_accuracy", "nll", "ece", "train_s"):
        assert summary[f"mean_{key}"] == pytest.approx(np.mean([line[key] for line in runs]))


def test_suite_time_line(capsys, tmp_path):
    """Times a one-test pytest run: wall time and pytest's summary; a failing run raises."""
    passing = tmp_path / "test_passing.py"
    passing.write_text("def test_one():\n    assert True\n")
    (line,) = run_script(suite_time, capsys, f"--pytest_args={passing},-q")
    assert line["wall_s"] > 0 and "1 passed" in line["summary"]
    failing = tmp_path / "test_failing.py"
    failing.write_text("def test_one():\n    assert False\n")
    with pytest.raises(RuntimeError, match="1 failed"):
        suite_time.time_suite([str(failing), "-q"])


@pytest.mark.slow
def test_serving_bench_times_the_export_against_keras_and_keeps_its_kernels(capsys):
    lines = run_script(
        serving, capsys, *TINY_RUN, "--timed_steps=2", "--latency_rounds=4", "--members=2"
    )
    throughput = {line["variant"]: line for line in lines if line["bench"] == "serving_throughput"}
    assert set(throughput) == {"keras_predict", "predict_normalized", "serving_default"}
    keras = throughput["keras_predict"]
    keras_median = keras["median_s"]
    for line in throughput.values():
        assert line["over_keras"] == pytest.approx(line["median_s"] / keras_median)
        paired = [a / b for a, b in zip(line["durations_s"], keras["durations_s"])]
        assert line["paired_over_keras"] == pytest.approx(np.median(paired))
        assert line["images_per_s"] == pytest.approx(8 / line["median_s"])
    latency = {line["signature"]: line for line in lines if line["bench"] == "serving_latency"}
    assert set(latency) == {"serving_default", "predict_image_bytes"}
    for line in latency.values():
        assert line["rounds"] == 4 and 0 < line["p50_ms"] <= line["p99_ms"]
        assert line["p99_ms"] <= 1000 * max(line["durations_s"])
    (graph,) = [line for line in lines if line["bench"] == "serving_graph"]
    assert graph["fused_batch_norm_ops"] > 0 and graph["py_func_ops"] == 0
    # The served graph runs the kernels Keras' prediction runs (oneDNN's where it is on).
    served, native = graph["serving_default_kernels"], graph["keras_predict_kernels"]
    assert {k for k in served["ms_by_kernel"] if "Conv" in k or "BatchNorm" in k} == {
        k for k in native["ms_by_kernel"] if "Conv" in k or "BatchNorm" in k
    }
    assert served["onednn_share"] == pytest.approx(native["onednn_share"], abs=0.1)


def of_bench(lines: list[dict], kind: str) -> list[dict]:
    """The serving_precision lines of one kind (throughput, latency or agreement), in order."""
    return [line for line in lines if line["bench"] == f"serving_precision_{kind}"]


@pytest.mark.slow
def test_serving_precision_compares_a_bfloat16_export_with_the_float32_one(capsys, tmp_path):
    config = dataclasses.replace(
        digits_accuracy.flagfile_config(short_digits_flagfile(tmp_path)),
        model_dir=str(tmp_path / "run"),
    )
    with harness.progress_to_stderr():
        train(config)
    lines = run_script(
        serving_precision,
        capsys,
        f"--run_dir={config.model_dir}",
        "--batch_size=8",
        "--warmup_steps=1",
        "--timed_steps=2",
        "--latency_rounds=3",
    )
    throughput = {line["precision"]: line for line in of_bench(lines, "throughput")}
    assert list(throughput) == ["float32", "mixed_bfloat16"]
    reference = throughput["float32"]
    for line in throughput.values():
        assert line["over_first"] == pytest.approx(line["median_s"] / reference["median_s"])
        paired = [a / b for a, b in zip(line["durations_s"], reference["durations_s"])]
        assert line["paired_over_first"] == pytest.approx(np.median(paired))
        assert line["images_per_s"] == pytest.approx(8 / line["median_s"])
    latency = of_bench(lines, "latency")
    assert [line["precision"] for line in latency] == ["float32", "mixed_bfloat16"]
    for line in latency:
        assert line["rounds"] == 3 and 0 < line["p50_ms"] <= line["p99_ms"]
    (agreement,) = of_bench(lines, "agreement")
    assert (agreement["precision"], agreement["num_examples"]) == ("mixed_bfloat16", 360)
    # The bfloat16 export computes in bfloat16: its probabilities differ, but slightly.
    assert 0 < agreement["max_abs_probability_difference"] < 0.5
    assert agreement["max_abs_member_probability_difference"] > 0
    assert 0.5 < agreement["top1_agreement"] <= 1
    assert 0 <= agreement["accuracy"] <= 1 and agreement["reference_nll"] > 0


def test_input_pipeline_compares_memory_cache_and_folder_storage(capsys):
    lines = run_script(
        input_pipeline,
        capsys,
        "--sources=memory,cache,folder",
        "--image_size=16",
        "--num_examples=64",
        "--batch_size=8",
        "--msda=none",
        "--warmup_batches=1",
        "--block_batches=2",
        "--timed_blocks=1",
    )
    assert [line["source"] for line in lines] == ["memory", "cache", "folder"]
    for line in lines:
        assert line["image_shape"] == [16, 16, 3] and line["images_per_s"] > 0


def test_random_access_times_tfds_data_source_against_the_cache(capsys):
    import random_access

    lines = run_script(
        random_access,
        capsys,
        "--num_examples=32",
        "--image_size=16",
        "--batch_size=4",
        "--batches=2",
        "--timed_blocks=1",
    )
    assert [line["reader"] for line in lines] == ["tfds_data_source", "npy_cache"]
    for line in lines:
        assert line["images_per_s"] == pytest.approx(4 * 2 / line["median_block_s"])


@pytest.mark.slow
def test_startup_lines_time_each_command_against_importing_tensorflow(capsys):
    lines = run_script(startup, capsys, "--rounds=1")
    by_variant = {line["variant"]: line for line in lines}
    assert set(by_variant) == {"main_help", "main_refused_flag", "import_tensorflow"}
    reference = by_variant["import_tensorflow"]["median_s"]
    for line in lines:
        assert line["bench"] == "startup" and len(line["durations_s"]) == 1
        assert line["over_import_tensorflow"] == pytest.approx(line["median_s"] / reference)


def test_import_checkpoint_lines_time_the_import_and_its_phases(capsys, monkeypatch, tmp_path):
    """WRN-10-1's weights-only zip file, its children's measurements run in-process: a line
    with and without a run folder, the phases' times within the import's."""
    import import_checkpoint

    monkeypatch.setattr(
        import_checkpoint.read_bench,
        "child_record",
        lambda path, kind, script: import_checkpoint.measure(path, kind),
    )
    lines = run_script(
        import_checkpoint,
        capsys,
        "--network=10-1",
        "--rounds=1",
        "--warmup_rounds=0",
        "--contents=weights",
        "--formats=zip",
        f"--directory={tmp_path}",
    )
    by_target = {line["run_folder"]: line for line in lines}
    assert sorted(by_target) == [False, True] and len(lines) == 2
    for line in lines:
        assert line["network"] == "WRN-10-1" and line["format"] == "zip"
        assert not line["momentum_buffers"]
        assert len(line["import_durations_s"]) == 1 and 0 < line["median_import_s"] < 60
        # In-process, TensorFlow was imported before: the baseline is the RSS before it.
        assert line["baseline_rss_mib"] >= line["rss_before_tensorflow_mib"] > 0
        assert line["peak_rss_growth_over_file"] == pytest.approx(
            line["peak_rss_growth_mib"] / line["file_mib"]
        )
        assert isinstance(line["within_targets"], bool)
        phases = line["phases"]
        assert (
            0
            < sum(phase["median_s"] for phase in phases.values())
            <= (line["phases_median_total_s"])
        )
        # The file holds the model's variables (plus its pickle and zip records); the SGD
        # slots are as large (zero: the file has no momentum).
        assert line["model_variables_mib"] == pytest.approx(line["file_mib"], rel=0.2)
        assert line["optimizer_variables_mib"] == pytest.approx(
            line["model_variables_mib"], rel=0.05
        )
    assert list(by_target[False]["phases"]) == ["read", "build", "assign"]
    assert list(by_target[True]["phases"]) == ["read", "build", "assign", "write"]
    assert set(by_target[True]["write_parts"]) == {"checkpoint", "keras_save"}
    folder = by_target[True]["folder_mib"]
    assert {"model.keras", "imported_from.json", "run_config.json", "checkpoints"} <= set(folder)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["wrn10-1_m2_weights_zip.pt"]


# ---- bench/pytorch_step.py: the TensorFlow half and the refusals run without torch -----------


@pytest.mark.slow
def test_pytorch_step_times_our_two_precisions_without_torch(capsys):
    """The tf_* variants alone need neither torch nor the authors' code: a line per variant,
    in the asked order, with its ratio to the first and no PyTorch fields."""
    lines = run_script(
        pytorch_step,
        capsys,
        *TINY_RUN,
        "--batch_repetitions=2",
        "--timed_steps=2",
        "--variants=tf_mixed_bfloat16,tf_float32",
    )
    assert [line["variant"] for line in lines] == ["tf_mixed_bfloat16", "tf_float32"]
    assert [line["precision"] for line in lines] == ["mixed_bfloat16", "float32"]
    for line in lines:
        assert line["framework"] == "tensorflow" and line["network"] == "WRN-10-1"
        assert (line["members"], line["batch_size"], line["batch_repetitions"]) == (2, 8, 2)
        assert len(line["step_durations"]) == line["timed_steps"] == 2
        assert line["median_step_s"] == pytest.approx(np.median(line["step_durations"]))
        assert line["over_first"] == pytest.approx(
            line["median_step_s"] / lines[0]["median_step_s"]
        )
        assert "over_pytorch" not in line and "torch" not in line
    assert lines[0]["over_first"] == 1.0


@pytest.mark.parametrize(
    "stubbed, args, message",
    [
        # No torch: the fix is the extra that installs it.
        ({"torch": None}, (), 'need torch: pip install -e ".[bench_torch]"'),
        # torch (stubbed) but no checkout of the authors' code: none given, or not one.
        (
            {"torch": ModuleType("torch"), "yaml": ModuleType("yaml")},
            (),
            "need --authors_code=PATH, a checkout of mixmo-pytorch: none given",
        ),
        (
            {"torch": ModuleType("torch"), "yaml": ModuleType("yaml")},
            ("--authors_code=/nonexistent",),
            "need --authors_code=PATH, a checkout of mixmo-pytorch: no config/cifar100/",
        ),
    ],
)
def test_pytorch_step_refuses_in_one_line_before_timing_anything(
    capsys, monkeypatch, stubbed, args, message
):
    for name, module in stubbed.items():
        monkeypatch.setitem(sys.modules, name, module)  # None: `import name` fails
    values = parsed_flags(pytorch_step, "--networks=10-1", *args)
    with pytest.raises(SystemExit) as exit_info:
        pytorch_step.run(values)
    assert exit_info.value.code == 2
    output = capsys.readouterr()
    assert output.out == ""  # no JSON line: nothing was timed
    (line,) = output.err.splitlines()
    assert line.startswith("ERROR: ") and message in line


@pytest.mark.parametrize(
    "bad_flag",
    [
        "--variants=tf_float32,pytorch_float16",
        "--variants=tf_float32,tf_float32",
        "--members=1",
        "--networks=preact_resnet:18-1",
    ],
)
def test_pytorch_step_refuses_bad_flags_at_parse_time(bad_flag):
    with pytest.raises(flags.IllegalFlagValueError):
        parsed_flags(pytorch_step, bad_flag)


# ---- bench/auto_tuning.py: what the start-up choices cost, measured as main.py makes them --


def test_auto_tuning_line_times_the_choices_and_restores_the_environment(capsys, monkeypatch):
    children = []

    def time_in_children(config, precisions):
        children.append((config.batch_size, precisions))
        return {False: {name: 2.0 for name in precisions}, True: {name: 1.0 for name in precisions}}

    monkeypatch.setattr(onednn, "time_in_children", time_in_children)
    monkeypatch.setenv(machine.ONEDNN_VARIABLE, "1")
    (line,) = run_script(
        auto_tuning, capsys, "--networks=10-1", "--batch_size=8", "--batch_repetitions=2",
        "--time_both",
    )  # fmt: skip
    assert os.environ[machine.ONEDNN_VARIABLE] == "1"
    assert (line["network"], line["batch_size"], line["batch_repetitions"]) == ("WRN-10-1", 8, 2)
    assert line["precisions_timed"] == ["float32", "mixed_bfloat16"]
    assert sorted(line["precision_step_s"]) == line["precisions_timed"]
    assert all(seconds > 0 for seconds in line["precision_step_s"].values())
    assert line["precision_timing_s"] > max(line["precision_step_s"].values())
    # CIFAR-100 at B=8, b=2: 12,500 steps of the float32 step per epoch.
    assert line["epoch_s_float32"] == 12500 * line["precision_step_s"]["float32"]
    facts = machine.this_machine()
    assert line["auto_times_precisions"] == facts.has_bfloat16_instructions
    paid = line["precision_timing_s"] if facts.has_bfloat16_instructions else 0.0
    assert line["auto_cost_s"] == line["onednn_choice_s"] + paid
    assert line["cost_over_epoch"] == line["auto_cost_s"] / line["epoch_s_float32"]
    # Where TensorFlow leaves oneDNN off the choice is timed (here by the stand-in children).
    if facts.onednn_on_by_default:
        assert line["onednn_choice"]["reason"] == "TensorFlow's default" and not children
    else:
        timed = ("float32", "mixed_bfloat16") if facts.has_bfloat16_instructions else ("float32",)
        assert children == [(8, timed)]
        assert line["onednn_choice"] == {
            "enabled": True,
            "reason": "measured",
            "seconds": {"off": 2.0, "on": 1.0},
        }
