"""The laboratory: trainings of rlvr_min.py across conditions x seeds, their summaries and plots.

    python lab.py sweep --regime paper --condition clip --condition no-clip --seeds 6 --out runs/paper
    python lab.py sweep --regime clipping-active --seeds 4 --out runs/active --steps 40 --model toy:llama-8b-instruct

Every condition is one flag away from its regime, and every other setting is the same for all (README: the
clipping-bias laboratory). A sweep is resumable: finished runs found in its folder with the same configuration are read,
not run again (also after the folder was moved), and a finished run of another configuration is never overwritten. The
tutorials run and plot their trainings through `sweep`, `plot_trajectories` and `show_change`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import statistics
import sys
from pathlib import Path

import click

import infra
import rlvr_min

# ========================================================================================================= conditions
REGIMES = {
    "paper": [],  # the paper's shape: one pass over each rollout batch, eps 0.2 both sides
    "clipping-active": ["--epochs", "4", "--clip-high", "0.05"],  # deliberately amplified: sample reuse, tight eps_high
}
SWEEP_CONDITIONS = {
    "clip": [],  # random rewards, the clipped surrogate
    "no-clip": ["--no-clip"],  # the same updates without clipping
    "one-update": ["--mini-batches", "1", "--epochs", "1"],  # one update per rollout: rho = 1, clipping cannot fire
    "ground-truth": ["--reward", "ground_truth"],
}


def run_config(args: list[str]) -> rlvr_min.Config:
    """The configuration rlvr_min.py would run with these command-line arguments."""
    flags = dict(rlvr_min.main.make_context("rlvr_min.py", list(args)).params)
    flags.pop("resume")
    return rlvr_min.resolve_config(flags)


def sweep_summary(runs: list[dict]) -> dict:
    """Per condition: the median and range over seeds of each run's change in greedy held-out figures, and how many
    seeds gained at least 0.10 in code frequency together with accuracy."""
    summary = {}
    for condition in dict.fromkeys(run["condition"] for run in runs):
        chosen = [run for run in runs if run["condition"] == condition]
        figures = {
            key: [run["change"][key] for run in chosen if run["change"].get(key) is not None]
            for key in chosen[0]["change"]
        }
        summary[condition] = {
            "seeds": len(chosen),
            **{
                f"{key}_change": {"median": statistics.median(values), "min": min(values), "max": max(values)}
                for key, values in figures.items()
                if values
            },
            "seeds_code_up_0.10_and_accuracy_up": sum(
                run["change"]["code_frequency"] >= 0.10 and run["change"]["accuracy"] > 0 for run in chosen
            ),
            **{
                f"{key}_median": statistics.median(run[key] for run in chosen)
                for key in ("clip_fraction", "clip_fraction_low", "clip_fraction_high")
            },
        }
    return summary


def run_summary(metrics: list[dict]) -> dict:
    """One run: its greedy held-out trajectory, the change from the base model, and its mean clip fraction."""
    evaluated = [m for m in metrics if "eval_accuracy" in m]
    trajectory = [
        {
            "step": m["step"],
            "accuracy": m["eval_accuracy"],
            "code_frequency": m["eval_code_frequency"],
            "fork_probability": m.get("eval_fork_probability"),
            "fork_polarisation": m.get("eval_fork_polarisation"),
            "closing_probability": m.get("eval_closing_probability"),
            "accuracy_seen": m.get("eval_accuracy_seen"),  # the contaminated variant's halves of the test split
            "accuracy_clean": m.get("eval_accuracy_clean"),
        }
        for m in evaluated
    ]
    trained = [m for m in metrics if "accuracy" in m]
    first, last = (
        trained[: max(len(trained) // 10, 1)],
        trained[-max(len(trained) // 10, 1) :],
    )  # the first and last tenth
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)
    change = {
        key: trajectory[-1][key] - trajectory[0][key] if None not in (trajectory[0][key], trajectory[-1][key]) else None
        for key in [key for key in trajectory[0] if key != "step"]
    }
    change["mean_token_prob"] = mean(last, "mean_token_prob") - mean(first, "mean_token_prob")
    return {
        "trajectory": trajectory,
        "change": change,
        **{key: mean(trained, key) for key in ("clip_fraction", "clip_fraction_low", "clip_fraction_high")},
    }


# ============================================================================================================== sweep
def sweep(
    conditions: list[str] | dict[str, list[str]],
    seeds: list[int],
    out: Path,
    regime: str = "paper",
    flags: list[str] = (),
    log=click.echo,
    quiet: bool = False,
) -> dict:
    """Run every condition with every seed (rlvr_min.train, in this process) and write OUT/sweep.json and
    OUT/sweep.png. A condition is a name of SWEEP_CONDITIONS or, given a dict, any name and its rlvr_min.py flags
    (e.g. {"format": ["--reward", "format"]}). Finished runs found in OUT with the same configuration are read, not run
    again; an unfinished one is restarted; a finished one of another configuration stops the sweep (finished_metrics);
    the JSON and PNG are rewritten atomically after each run. quiet: each run's step lines go to its train.log instead
    of standard output."""
    if not isinstance(conditions, dict):
        unknown = [c for c in conditions if c not in SWEEP_CONDITIONS]
        if unknown:
            raise click.UsageError(f"unknown condition {unknown[0]!r}; choose one of: {', '.join(SWEEP_CONDITIONS)}")
        conditions = {c: SWEEP_CONDITIONS[c] for c in conditions}
    if regime not in REGIMES:
        raise click.UsageError(f"unknown regime {regime!r}; choose one of: {', '.join(REGIMES)}")
    import torch

    out.mkdir(parents=True, exist_ok=True)
    common = ["--reward", "random", *REGIMES[regime], *flags]
    runs = []
    for condition, condition_flags in conditions.items():
        for seed in seeds:
            run_dir = out / f"{condition}-seed{seed}"
            config = run_config([*common, *condition_flags, "--seed", str(seed), "--out", str(run_dir)])
            metrics = finished_metrics(run_dir, config)
            if metrics is None:
                shutil.rmtree(run_dir, ignore_errors=True)  # a run cut short starts again from its seed
                log(f"sweep: {condition}, seed {seed} -> {run_dir}")
                run_dir.mkdir(parents=True)
                with open(run_dir / "train.log", "w") if quiet else contextlib.nullcontext(sys.stdout) as output:
                    with contextlib.redirect_stdout(output):
                        metrics = rlvr_min.train(config)
            runs.append({"condition": condition, "seed": seed, "run": str(run_dir), **run_summary(metrics)})
            result = {
                "regime": regime,
                "flags": common,
                "conditions": conditions,
                "seeds": list(seeds),
                "steps": config.steps,
                "model": config.model,
                "threads": torch.get_num_threads(),
                "summary": sweep_summary(runs),
                "runs": runs,
            }
            infra.write_atomically(out / "sweep.json", json.dumps(result, indent=1))
            plot_sweep(result, out / "sweep.png")
    return result


def finished_metrics(run_dir: Path, config: rlvr_min.Config) -> list[dict] | None:
    """The metrics of the finished run in `run_dir` if it ran this configuration (its folder may have been moved: `out`
    is not compared), None if there is none or it was cut short. A finished run of another configuration is never
    deleted: that is an error naming the first setting that differs."""
    metrics_file = run_dir / "metrics.jsonl"
    if not (run_dir / "config.json").exists() or not metrics_file.exists():
        return None
    saved, wanted = json.loads((run_dir / "config.json").read_text()), dataclasses.asdict(config)
    lines = metrics_file.read_text().splitlines()
    if not lines or json.loads(lines[-1])["step"] != saved.get("steps"):
        return None
    differs = [key for key in wanted if key != "out" and saved.get(key) != wanted[key]]
    if differs:
        raise click.UsageError(
            f"{run_dir} holds a finished run with {differs[0]}={saved.get(differs[0])!r}, not {wanted[differs[0]]!r}; "
            "move it away or choose another --out"
        )
    return [json.loads(line) for line in lines]


# ============================================================================================================== plots
def plot_sweep(result: dict, path: Path) -> None:
    """Greedy held-out code frequency and accuracy over steps: one thin line per seed, the median bold."""
    conditions = list(result["summary"])
    figure = infra.new_figure(figsize=(3.6 * len(conditions), 6))
    axes = figure.subplots(2, len(conditions), squeeze=False, sharey=True)
    for column, condition in enumerate(conditions):
        runs = [run for run in result["runs"] if run["condition"] == condition]
        for row, key in enumerate(("code_frequency", "accuracy")):
            axis = axes[row][column]
            for run in runs:
                axis.plot(
                    [p["step"] for p in run["trajectory"]],
                    [p[key] for p in run["trajectory"]],
                    color="C0",
                    alpha=0.35,
                    lw=1,
                )
            steps = [p["step"] for p in runs[0]["trajectory"]]
            medians = [
                statistics.median(run["trajectory"][i][key] for run in runs if i < len(run["trajectory"]))
                for i in range(len(steps))
            ]
            axis.plot(steps, medians, color="C3", lw=2.5, label="median")
            axis.set_title(f"{condition}: {key.replace('_', ' ')}", fontsize=10)
            axis.set_ylim(-0.02, 1.02)
            axis.set_xlabel("step")
    axes[0][0].legend()
    figure.suptitle(
        f"regime {result['regime']} ({' '.join(result['flags'])}), {len(result['seeds'])} seeds, greedy held-out"
    )
    infra.save_figure(figure, path, dpi=90)


def plot_trajectories(result: dict, keys=("accuracy", "code_frequency"), axes=None, style="o-", label=""):
    """A sweep's greedy held-out trajectories (the tutorials' plots): one axis per key, one colour per condition, one
    line per seed; returns the axes."""
    if axes is None:
        import matplotlib.pyplot as plt  # shown where the caller is (a notebook), not saved

        _, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4))
    for colour, condition in enumerate(result["summary"]):
        runs = [run for run in result["runs"] if run["condition"] == condition]
        for seed, run in enumerate(runs):
            steps = [point["step"] for point in run["trajectory"]]
            for axis, key in zip(axes, keys):
                values = [point[key] for point in run["trajectory"]]
                axis.plot(steps, values, style, color=f"C{colour}", label=None if seed else label + condition)
    for axis, key in zip(axes, keys):
        axis.set(title=f"greedy held-out {key.replace('_', ' ')}", xlabel="step")
    axes[0].legend(fontsize=7)
    return axes


SHOWN_CHANGES = {
    "code": "code_frequency",
    "accuracy": "accuracy",
    "fork": "fork_probability",
    "polarisation": "fork_polarisation",
    "closing": "closing_probability",
    "seen": "accuracy_seen",
    "clean": "accuracy_clean",
    "token prob": "mean_token_prob",
}


def show_change(row: dict, key: str) -> str:
    """A summary's change of `key` over seeds: median [min, max]."""
    change = row.get(f"{key}_change")
    return "{median:+.3f} [{min:+.3f}, {max:+.3f}]".format(**change) if change else "-"


# ================================================================================================================ CLI
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """The laboratory of rlvr-min: sweeps of trainings."""


@cli.command("sweep", context_settings={"ignore_unknown_options": True})
@click.option(
    "--condition",
    "conditions",
    multiple=True,
    default=("clip", "no-clip", "one-update"),
    show_default=True,
    help=f"Repeatable: {', '.join(SWEEP_CONDITIONS)}.",
)
@click.option("--seeds", default=8, show_default=True, help="Seeds 0..N-1 of every condition.")
@click.option(
    "--regime", default="paper", show_default=True, help=f"Flags every condition starts from: {', '.join(REGIMES)}."
)
@click.option("--out", default="runs/sweep", show_default=True, help="Folder of the runs, sweep.json and sweep.png.")
@click.argument("flags", nargs=-1, type=click.UNPROCESSED)
def sweep_command(conditions, seeds, regime, out, flags):
    """Random rewards across conditions x seeds (the clipping-bias laboratory); FLAGS go to every rlvr_min.py run,
    e.g. --steps 100 --model toy:llama-8b-instruct."""
    result = sweep(list(conditions), list(range(seeds)), Path(out), regime, list(flags))
    for condition, row in result["summary"].items():
        shown = "  ".join(
            f"{name} {show_change(row, key)}" for name, key in SHOWN_CHANGES.items() if f"{key}_change" in row
        )
        click.echo(
            f"{condition:>12}: {shown}  clip {row['clip_fraction_median']:.4f}  seeds code +0.10 and accuracy "
            f"up: {row['seeds_code_up_0.10_and_accuracy_up']}/{row['seeds']}"
        )
    click.echo(f"{Path(out) / 'sweep.json'}, {Path(out) / 'sweep.png'}")


if __name__ == "__main__":
    cli()
