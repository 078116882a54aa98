"""A CPU miniature of the paper's CIFAR table: every method of flags/ on digits, equal budget.

Each method takes its method settings (mixing, members, input MSDA, their parameters) from
its CIFAR-100 flagfile; model, data and budget are the same for all: WRN-10-1 on
scikit-learn's digits (32x32, 1437 train / 360 test), B = 64 slots per step, the same number
of steps, float32. MixMo-family methods use b = 2 (as flags/digits_wrn10-1_cut_mixmo.flags)
instead of the paper's b = 4, single networks b = 1; the learning rate follows the paper's
rule lr = 0.8 * (B / b) / 128 of the digits flagfile. Each (method, seed) is trained, then
evaluated with mixmo_tf.evaluation (temperature scaling: the paper's split-halves protocol on
the test split). One JSON line per run goes to --output; a finished or partial file is
turned into a Markdown table (mean +- std over seeds) and a plot by --table_only.

    python experiments/digits_table.py --output=experiments/results/digits_table.jsonl \
        --steps=600 --seeds=0,1,2 [--shard=i/n]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (row name, CIFAR-100 flagfile) in the paper's order.
METHODS = (
    ("Vanilla", "vanilla"),
    ("Vanilla + MixUp", "vanilla_mixup"),
    ("Vanilla + CutMix", "vanilla_cutmix"),
    ("MIMO (M=2)", "mimo"),
    ("Linear-MixMo", "linear_mixmo"),
    ("Linear-MixMo + CutMix", "linear_mixmo_cutmix"),
    ("Cut-MixMo", "cut_mixmo"),
    ("Cut-MixMo + CutMix", "cut_mixmo_cutmix"),
)
STEPS_PER_EPOCH = 50


def decay_epochs(epochs: int) -> str:
    """x0.1 at 5/6 of the run and again for its last epoch, as the digits flagfile's 10,12 of 12."""
    first = max(1, round(epochs * 5 / 6))
    return str(epochs) if first >= epochs else f"{first},{epochs}"


def method_config(flagfile: str, steps: int, seed: int, model_dir: str):
    """The Config of one method's row on the digits budget."""
    from absl import flags

    from mixmo_tf.cli import flags as mixmo_flags

    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["digits_table", f"--flagfile={os.path.join(REPO, 'flags', flagfile)}"])
    single = values["num_members"].value == 1
    repetitions = 1 if single else 2
    epochs = steps // STEPS_PER_EPOCH
    values(
        [
            "digits_table",
            "--dataset=digits",
            f"--model_dir={model_dir}",
            "--depth=10",
            "--width=1",
            "--batch_size=64",
            f"--batch_repetitions={repetitions}",
            f"--epochs={epochs}",
            f"--steps_per_epoch={STEPS_PER_EPOCH}",
            "--lr=0.8",
            "--warmup_epochs=0.2",
            f"--lr_decay_epochs={decay_epochs(epochs)}",
            "--l2=1e-4",
            f"--seed={seed}",
            "--eval_batch_size=360",
            "--precision=float32",
        ]
    )
    return mixmo_flags.config_from_flags(values)


def train_and_evaluate(args) -> None:
    from mixmo_tf.evaluation.run import evaluate
    from mixmo_tf.training.run import train

    done = set()
    if os.path.exists(args.output):
        with open(args.output) as stream:
            recorded = [json.loads(line) for line in stream]
        other_budgets = {row["steps"] for row in recorded} - {args.steps}
        if other_budgets:
            raise SystemExit(
                f"{args.output} holds runs of {sorted(other_budgets)} steps, not --steps="
                f"{args.steps}: one table is one budget. Pass another --output."
            )
        done = {(row["method"], row["seed"]) for row in recorded}
    # Seeds outer: a partial run still has every method.
    pairs = [(seed, name, stem) for seed in args.seeds for name, stem in METHODS]
    index, count = args.shard
    for seed, name, stem in pairs[index::count]:
        if (name, seed) in done:
            continue
        model_dir = os.path.join(args.runs_dir, f"{stem}_seed{seed}")
        config = method_config(f"cifar100_wrn28-10_{stem}.flags", args.steps, seed, model_dir)
        start = time.perf_counter()
        train(config)
        results = evaluate(config)
        row = {
            "method": name,
            "seed": seed,
            "steps": args.steps,
            "seconds": round(time.perf_counter() - start, 1),
            **{k: results[k] for k in ("accuracy", "nll", "ece", "mean_member_accuracy")},
            "ts": {k: results["temperature_scaled"][k] for k in ("nll", "ece", "temperature")},
        }
        with open(args.output, "a") as stream:
            stream.write(json.dumps(row) + "\n")


def _cell(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    values = np.asarray(values) * scale
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def write_table(args) -> None:
    """Markdown table and plot from the JSON lines in --output."""
    with open(args.output) as stream:
        rows = [json.loads(line) for line in stream]
    lines = [
        "| Method | Seeds | Top-1 (%) | NLL | NLL (TS) | ECE (TS) | Mean member top-1 (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    names, means, stds = [], [], []
    for name, _ in METHODS:
        runs = [row for row in rows if row["method"] == name]
        if not runs:
            continue
        member = [r["mean_member_accuracy"] for r in runs]
        lines.append(
            f"| {name} | {len(runs)} | {_cell([r['accuracy'] for r in runs], 100)} | "
            f"{_cell([r['nll'] for r in runs], digits=3)} | "
            f"{_cell([r['ts']['nll'] for r in runs], digits=3)} | "
            f"{_cell([r['ts']['ece'] for r in runs], digits=4)} | {_cell(member, 100)} |"
        )
        names.append(name)
        means.append(100 * np.mean([r["accuracy"] for r in runs]))
        stds.append(100 * np.std([r["accuracy"] for r in runs]))
    table = os.path.splitext(args.output)[0] + ".md"
    with open(table, "w") as stream:
        stream.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4))
    axis.barh(names[::-1], means[::-1], xerr=stds[::-1], color="tab:blue", alpha=0.8)
    axis.set(xlabel="digits test top-1 (%), mean ± std over seeds", xlim=(min(means) - 10, 100))
    axis.set_title(f"Equal budget: {rows[0]['steps']} steps of 64 slots, WRN-10-1")
    figure.tight_layout()
    figure.savefig(os.path.splitext(args.output)[0] + ".png", dpi=100)
    print("\n".join(lines))


def _shard(text: str) -> tuple[int, int]:
    index, count = (int(part) for part in text.split("/"))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard must be i/n with 0 <= i < n, got {text}")
    return index, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="experiments/results/digits_table.jsonl")
    parser.add_argument("--runs_dir", default="runs/digits_table")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    parser.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        help="i/n: run every n-th (seed, method) pair from the i-th, so n processes share the "
        "table (each appends its lines to --output).",
    )
    parser.add_argument("--table_only", action="store_true")
    args = parser.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if not args.table_only:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line),
            "?",
        )
        print(f"Machine: {platform.machine()} {model}, {os.cpu_count()} CPUs")
        train_and_evaluate(args)
    write_table(args)


if __name__ == "__main__":
    main()
