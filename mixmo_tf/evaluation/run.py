"""Evaluation of trained runs: the numbers, the report, the figures, the TensorBoard scalars.

`evaluate_runs([config])` evaluates one run into `<model_dir>/eval/`;
`evaluate_runs([config_1, config_2, ...])` evaluates the ensemble of several runs (the mean
of their ensemble logits, e.g. the paper's "WRN-28-10 x 3" row) into
`<first model_dir>/eval/ensemble/`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mixmo_tf import checkpointing, data, recorded_run
from mixmo_tf.config import Config
from mixmo_tf.evaluation import epochs, plots, report, temperature
from mixmo_tf.evaluation.metrics import ensemble_metrics, prediction_metrics, softmax
from mixmo_tf.evaluation.predictions import predict_logits, restore_run

EVAL_SUBDIR = "eval"
RESULTS = "results.json"
REPORT = "report.md"
RELIABILITY = "reliability.png"
TEMPERATURE_FILE = "temperature.json"


def output_dir(configs: Sequence[Config]) -> str:
    """Where the evaluation of `configs` is written."""
    folder = os.path.join(configs[0].model_dir, EVAL_SUBDIR)
    return os.path.join(folder, "ensemble") if len(configs) > 1 else folder


def _validation_temperature(
    models: list, config: Config, test_logits: np.ndarray, test_labels: np.ndarray
) -> dict:
    """T fitted on the held-out training slice, and the test metrics with it."""
    images, labels = data.load_split(config.spec, "train", config.data_dir)
    _, (images, labels) = data.split_validation(images, labels, config.num_validation_examples)
    logits = np.mean(
        [
            predict_logits(model, images, labels, config.spec, config.eval_batch_size)[0].mean(1)
            for model in models
        ],
        axis=0,
    )
    fitted = temperature.fit_temperature(logits, labels)
    return {
        "temperature": fitted,
        "num_examples": len(labels),
        "validation_nll_before": temperature.scaled_nll(logits, labels, 1.0),
        "validation_nll_after": temperature.scaled_nll(logits, labels, fitted),
        "test": prediction_metrics(softmax(test_logits / fitted), test_labels),
    }


def _json_ready(value):
    """`value` with NaN (e.g. diversity of a single member) as None: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_scalars(config: Config, results: dict) -> None:
    """The headline numbers as TensorBoard scalars in `<model_dir>/logs/eval`."""
    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "logs", EVAL_SUBDIR))
    with writer.as_default():
        for prefix, values in (("test", results), ("test_scaled", results["temperature_scaled"])):
            for name, value in values.items():
                if isinstance(value, float) and np.isfinite(value):
                    tf.summary.scalar(f"{prefix}/{name}", value, step=results["step"])
    writer.close()


def _predict_runs(configs: Sequence[Config], images: np.ndarray, labels: np.ndarray):
    """(models, newest steps, member logits of each run, the labels of the predicted images)."""
    config = configs[0]
    models, steps, run_logits = [], [], []
    for run_config in configs:
        model, step = restore_run(run_config)
        logits, kept_labels = predict_logits(
            model, images, labels, config.spec, config.eval_batch_size, config.eval_steps
        )
        models.append(model)
        steps.append(step)
        run_logits.append(logits)
    return models, steps, run_logits, kept_labels


def _write_outputs(
    configs: Sequence[Config], results: dict, ensemble_logits: np.ndarray, labels: np.ndarray
) -> None:
    """results.json, report.md and the figures in `output_dir(configs)`; for a single run also
    the TensorBoard scalars and the validation temperature."""
    config = configs[0]
    folder = output_dir(configs)
    os.makedirs(folder, exist_ok=True)
    plots.reliability_diagram(
        os.path.join(folder, RELIABILITY),
        softmax(ensemble_logits),
        temperature.cross_validated_probabilities(ensemble_logits, labels),
        labels,
        results["temperature_scaled"]["temperature"],
    )
    checkpointing.write_text_atomically(
        os.path.join(folder, REPORT), report.markdown_report(results)
    )
    checkpointing.write_text_atomically(
        os.path.join(folder, RESULTS), json.dumps(results, indent=2, allow_nan=False)
    )
    if len(configs) > 1:
        return
    _write_scalars(config, results)
    if "validation_temperature" in results:
        fitted = results["validation_temperature"]
        record = {key: value for key, value in fitted.items() if key != "test"}
        record.update(step=results["step"], fitted_on="validation_split")
        checkpointing.write_text_atomically(
            os.path.join(config.model_dir, TEMPERATURE_FILE), json.dumps(record, indent=2)
        )


def evaluate_runs(configs: Sequence[Config]) -> dict:
    """Evaluates the newest checkpoint of each run in `configs` as one ensemble.

    Writes `results.json`, `report.md` and `reliability.png` to `output_dir(configs)`; for a
    single run also the scalars to TensorBoard (`<model_dir>/logs/eval`) and, if it was
    trained with --validation_split, the temperature fitted on that slice to
    `<model_dir>/temperature.json` (read by export and prediction).

    Returns:
        The results: the ensemble's raw metrics at the top level (with `step`), and
        `temperature_scaled`, `epochs` (best and final per-epoch test metrics of training),
        `validation_temperature`, `runs` (each run's own metrics, for an ensemble of runs).
        NaN (a metric undefined here, e.g. diversity of one member) is None.

    Raises:
        FileNotFoundError: a run has no checkpoint, or the data is missing.
        ValueError: the runs are not of one dataset.
    """
    recorded_run.check_one_dataset(configs)
    config = configs[0]
    images, labels = data.load_split(config.spec, "test", config.data_dir)
    models, steps, run_logits, labels = _predict_runs(configs, images, labels)
    # Each run's ensemble counts once, whatever its number of members.
    ensemble_logits = np.mean([logits.mean(axis=1) for logits in run_logits], axis=0)
    results = {
        "model_dir": config.model_dir,
        "dataset": config.dataset,
        "num_examples": len(labels),
        "step": steps[0],
        **ensemble_metrics(np.concatenate(run_logits, axis=1), labels, ensemble_logits),
        "temperature_scaled": temperature.cross_validated_scaling(ensemble_logits, labels),
        "figures": [RELIABILITY],
    }
    if len(configs) > 1:
        results["runs"] = [
            {"model_dir": c.model_dir, "step": s, **ensemble_metrics(logits, labels)}
            for c, s, logits in zip(configs, steps, run_logits)
        ]
    else:
        results["epochs"] = epochs.best_and_final(epochs.test_history(config.model_dir))
    # Every run must hold out the same slice (the same count of the same seeded choice).
    if config.validation_split and len({c.num_validation_examples for c in configs}) == 1:
        results["validation_temperature"] = _validation_temperature(
            models, config, ensemble_logits, labels
        )
    results = _json_ready(results)
    _write_outputs(configs, results, ensemble_logits, labels)
    return results
