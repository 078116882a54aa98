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

from mixmo_tf import data
from mixmo_tf.config import run_folder
from mixmo_tf.config.run_folder import (
    ResultsNotSavedError,
    RunFolder,
    describe_os_error,
    space_errors_as_os_errors,
    write_text_atomically,
)
from mixmo_tf.config.run_record import check_one_dataset, with_recorded_spec
from mixmo_tf.config.settings import Config
from mixmo_tf.evaluation import epochs, plots, report, shifts, temperature
from mixmo_tf.evaluation.metrics import ensemble_metrics, prediction_metrics, softmax
from mixmo_tf.evaluation.options import EvaluationOptions
from mixmo_tf.evaluation.predictions import predict_logits
from mixmo_tf.training.checkpoints import restore_run


def output_dir(configs: Sequence[Config]) -> str:
    """Where the evaluation of `configs` is written."""
    folder = RunFolder(configs[0].model_dir)
    return folder.ensemble_evaluation if len(configs) > 1 else folder.evaluation


class _Ensemble:
    """The restored models of the runs, predicting as one ensemble."""

    def __init__(self, configs: Sequence[Config]):
        self.config = configs[0]
        runs = [restore_run(config) for config in configs]
        self.models = [run.model for run in runs]
        self.steps = [run.step for run in runs]

    def run_logits(self, images: np.ndarray, labels: np.ndarray):
        """(each run's member logits `(examples, members, classes)`, the labels kept), with
        the first run's batch size and --eval_steps limit."""
        config = self.config
        logits = [
            predict_logits(
                model, images, labels, config.spec, config.eval_batch_size, config.eval_steps
            )
            for model in self.models
        ]
        return [run for run, _ in logits], logits[0][1]

    def __call__(self, images: np.ndarray, labels: np.ndarray):
        """(every run's members side by side, the ensemble logits, the labels kept). Each
        run's ensemble counts once in the mean, whatever its number of members."""
        run_logits, kept = self.run_logits(images, labels)
        ensemble = np.mean([logits.mean(axis=1) for logits in run_logits], axis=0)
        return np.concatenate(run_logits, axis=1), ensemble, kept


def _validation_temperature(
    ensemble: _Ensemble, test_logits: np.ndarray, test_labels: np.ndarray
) -> dict:
    """T fitted on the held-out training slice, and the test metrics with it."""
    config = ensemble.config
    images, labels = data.open_split(config.spec, "train", config.data_dir, config.download)
    _, (images, labels) = data.split_validation(images, labels, config.num_validation_examples)
    _, logits, labels = ensemble(images, labels)
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
    sections = {"test": results, "test_scaled": results["temperature_scaled"]}
    if "corruptions" in results:
        sections["corrupted"] = results["corruptions"]["mean"]
    writer = tf.summary.create_file_writer(RunFolder(config.model_dir).evaluation_logs)
    with space_errors_as_os_errors():  # a full disk: the results are printed, then the error
        with writer.as_default():
            for prefix, values in sections.items():
                for name, value in values.items():
                    if isinstance(value, float):
                        tf.summary.scalar(f"{prefix}/{name}", value, step=results["step"])
        writer.close()


def _write_outputs(configs: Sequence[Config], results: dict, figures: dict) -> None:
    """results.json, report.md and the figures in `output_dir(configs)`; for a single run also
    the TensorBoard scalars and the validation temperature.

    Args:
        figures: {file name: function writing that figure to a path}.
    """
    config = configs[0]
    folder = output_dir(configs)
    os.makedirs(folder, exist_ok=True)
    for name, draw in figures.items():
        draw(os.path.join(folder, name))
    results["figures"] = list(figures)
    write_text_atomically(os.path.join(folder, run_folder.REPORT), report.markdown_report(results))
    write_text_atomically(
        os.path.join(folder, run_folder.RESULTS), json.dumps(results, indent=2, allow_nan=False)
    )
    if len(configs) > 1:
        return
    _write_scalars(config, results)
    if "validation_temperature" in results:
        fitted = results["validation_temperature"]
        record = {key: value for key, value in fitted.items() if key != "test"}
        record.update(step=results["step"], fitted_on="validation_split")
        write_text_atomically(RunFolder(config.model_dir).temperature, json.dumps(record, indent=2))


def evaluate_runs(configs: Sequence[Config], options: EvaluationOptions | None = None) -> dict:
    """Evaluates the newest checkpoint of each run in `configs` as one ensemble.

    Writes `results.json`, `report.md` and the figures (reliability diagram; with options,
    accuracy and ECE against corruption severity and OOD score histograms) to
    `output_dir(configs)`; for a single run also the scalars to TensorBoard
    (`<model_dir>/logs/eval`) and, if it was trained with --validation_split, the
    temperature fitted on that slice to `<model_dir>/temperature.json` (read by export and
    prediction).

    Returns:
        The results: the ensemble's raw metrics at the top level (with `step`), and
        `temperature_scaled`, `epochs` (best and final per-epoch test metrics of training),
        `validation_temperature`, `runs` (each run's own metrics, for an ensemble of runs),
        `corruptions`, `ood`. NaN (a metric undefined here, e.g. diversity of one member)
        is None.

    Raises:
        FileNotFoundError: a run has no checkpoint, or data is missing.
        ResultsNotSavedError: the results could not be written; it holds them.
        ValueError: the runs are not of one dataset, or an option does not fit the run.
    """
    check_one_dataset(configs)
    # A Config of a tfds or folder source given without its spec: the run's recorded one.
    configs = [with_recorded_spec(config) for config in configs]
    options = options or EvaluationOptions()
    config = configs[0]
    ensemble = _Ensemble(configs)
    images, labels = data.open_split(config.spec, "test", config.data_dir, config.download)
    run_logits, labels = ensemble.run_logits(images, labels)
    member_logits = np.concatenate(run_logits, axis=1)
    ensemble_logits = np.mean([logits.mean(axis=1) for logits in run_logits], axis=0)
    results = {
        "model_dir": config.model_dir,
        "dataset": config.dataset,
        "num_examples": len(labels),
        "step": ensemble.steps[0],
        **ensemble_metrics(member_logits, labels, ensemble_logits),
        "temperature_scaled": temperature.cross_validated_scaling(ensemble_logits, labels),
    }
    figures = {
        run_folder.RELIABILITY_FIGURE: lambda path: plots.reliability_diagram(
            path,
            softmax(ensemble_logits),
            temperature.cross_validated_probabilities(ensemble_logits, labels),
            labels,
            results["temperature_scaled"]["temperature"],
            results["temperature_scaled"]["ece"],
        )
    }
    if len(configs) > 1:
        results["runs"] = [
            {"model_dir": c.model_dir, "step": s, **ensemble_metrics(logits, labels)}
            for c, s, logits in zip(configs, ensemble.steps, run_logits)
        ]
    else:
        results["epochs"] = epochs.best_and_final(epochs.test_history(config.model_dir))
    # Every run must hold out the same slice (the same count of the same seeded choice).
    if config.validation_split and len({c.num_validation_examples for c in configs}) == 1:
        results["validation_temperature"] = _validation_temperature(
            ensemble, ensemble_logits, labels
        )
    if options.corruptions:
        corrupted = shifts.corruption_results(
            ensemble, config.dataset, options.corruptions_dir, config.data_dir
        )
        results["corruptions"] = corrupted
        figures[run_folder.SEVERITY_FIGURE] = lambda path: plots.severity_curves(
            path, results, corrupted["by_severity"]
        )
    if options.ood_dataset:
        results["ood"], scores = shifts.ood_results(
            ensemble,
            (member_logits, ensemble_logits),
            options.ood_dataset,
            config.data_dir,
            config.spec,
        )
        figures[run_folder.OOD_FIGURE] = lambda path: plots.ood_histograms(
            path, scores, options.ood_dataset
        )
    results = _json_ready(results)
    try:
        _write_outputs(configs, results, figures)
    except OSError as error:
        message = describe_os_error(error, "--model_dir")
        raise ResultsNotSavedError(message, results) from error
    return results


def evaluate(config: Config, *ensemble: Config, options: EvaluationOptions | None = None) -> dict:
    """Evaluates the newest checkpoint of `config.model_dir` on the test split.

    With further runs in `ensemble`, evaluates the ensemble of all of them (mean of their
    ensemble logits); `options` adds corrupted and OOD test sets. See `evaluate_runs` for
    what is written where.

    Returns:
        The results, the raw test metrics of the ensemble at the top level, with `step`.

    Raises:
        FileNotFoundError: a run has no checkpoint, or the data is missing.
    """
    return evaluate_runs([config, *ensemble], options)
