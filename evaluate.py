"""Evaluation as the paper measures it: MATH-500 / AIME / AMC accuracy, code-reasoning analysis, and label building.

    python evaluate.py --model M --dataset math500 --out base.json      # accuracy, code frequency, per-style accuracy
    python evaluate.py --model M --dataset math500 --prefix python      # force code: "Let's solve this using Python."
    python evaluate.py compare base.json trained.json                   # strategy switching and each group's share
    python evaluate.py labels --model M --dataset D --out labels.jsonl  # majority-vote labels (majority / incorrect)
    python evaluate.py checkpoints runs/latest --dataset math500        # every checkpoint of a run, and a plot

Generation goes through rlvr_min.py's engines (vLLM or HF); grading and code detection through rewards.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

import click

import infra
import rewards
import rlvr_min
import toy

# name: (hub id, split, samples per problem, temperature); avg@k over the samples, pass@k logged too
BENCHMARKS = {
    "math500": ("HuggingFaceH4/MATH-500", "test", 1, 0.0),
    "aime24": ("HuggingFaceH4/aime_2024", "train", 8, 0.6),
    "aime25": ("math-ai/aime25", "test", 8, 0.6),
    "amc": ("math-ai/amc23", "test", 8, 0.6),
    "toy": (None, "test", 1, 0.0),
}
LOCAL_NAMES = {"math500": "math500.jsonl", "aime24": "aime24.jsonl", "amc": "amc23.jsonl"}
PREFIXES = {"none": "", "python": "Let's solve this using Python.\n"}  # the paper's code-forcing response prefix


def load_benchmark(name: str, data_dir: str | None) -> tuple[list[dict], int, float]:
    """Problems, samples per problem and temperature of a benchmark name or a local .jsonl file."""
    if name in BENCHMARKS:
        hub_id, split, samples, temperature = BENCHMARKS[name]
        local = Path(data_dir) / LOCAL_NAMES[name] if data_dir and name in LOCAL_NAMES else None
        source = "toy" if name == "toy" else str(local) if local is not None and local.exists() else hub_id
        return rlvr_min.load_problems(source, split), samples, temperature
    if name.endswith((".jsonl", ".json")) or os.path.exists(name):
        return rlvr_min.load_problems(name), 1, 0.0
    raise click.UsageError(f"unknown dataset {name!r}; choose {', '.join(BENCHMARKS)} or a .jsonl file")


def generate_responses(
    config: rlvr_min.Config, problems: list[dict], samples: int, temperature: float, system: str, prefix: str
) -> list[str]:
    """`samples` responses per problem (grouped), through rlvr_min's engine; a prefix is part of the response."""
    _, tokenizer, engine = infra.load_policy(config)
    _, _, texts = rlvr_min.generate(
        engine, tokenizer, problems, config, samples, temperature, config.seed, system, prefix
    )
    return [prefix + text for text in texts]


def score(problems: list[dict], texts: list[str], samples: int) -> dict:
    """The paper's figures and one record per response."""
    per_sample = [p for p in problems for _ in range(samples)]
    correct = rewards.grade_batch(texts, [p["answer"] for p in per_sample])
    code = [rewards.has_code(t) for t in texts]
    with_code = [c for c, k in zip(correct, code) if k]
    without_code = [c for c, k in zip(correct, code) if not k]
    passed = [any(correct[i : i + samples]) for i in range(0, len(correct), samples)]
    fraction = lambda values: sum(values) / len(values) if values else None
    return {
        "n": len(problems),
        "samples_per_problem": samples,
        "accuracy": fraction(correct),  # avg@k; pass@1 for one sample
        f"pass_at_{samples}": fraction(passed),
        "code_frequency": fraction(code),
        "accuracy_with_code": fraction(with_code),
        "accuracy_without_code": fraction(without_code),
        "boxed_fraction": fraction([rewards.extract_answer(t) is not None for t in texts]),
        "mean_response_characters": fraction([len(t) for t in texts]),
        "responses": [
            {
                "problem": p["problem"],
                "answer": str(p["answer"]),
                "response": t,
                "extracted": rewards.extract_answer(t),
                "correct": c,
                "has_code": k,
            }
            for p, t, c, k in zip(per_sample, texts, correct, code)
        ],
    }


def summary_table(result: dict, title: str) -> str:
    rows = [("problems", result["n"]), ("samples per problem", result["samples_per_problem"])]
    rows += [
        (key.replace("_", " "), result[key])
        for key in (
            "accuracy",
            f"pass_at_{result['samples_per_problem']}",
            "code_frequency",
            "accuracy_with_code",
            "accuracy_without_code",
            "boxed_fraction",
            "mean_response_characters",
        )
    ]
    show = lambda v: (
        "-"
        if v is None
        else (f"{v:.3f}" if isinstance(v, float) and v <= 1 else str(round(v, 1)) if isinstance(v, float) else str(v))
    )
    return "\n".join([title] + [f"  {name:<24} {show(value)}" for name, value in rows])


def write_json(path: Path, data) -> None:
    infra.write_atomically(path, json.dumps(data, indent=1))


def generation_config(model: str, max_new_tokens: int | None, engine: str, seed: int) -> rlvr_min.Config:
    """rlvr_min.py's configuration for this model (the toy's lengths for a toy, the paper's for any other)."""
    flags = {"model": model, "max_new_tokens": max_new_tokens, "engine": engine, "seed": seed}
    config = rlvr_min.resolve_config(flags)
    rlvr_min.check_config(config)
    return config


def run_evaluation(config: rlvr_min.Config, dataset: str, system: str, prefix: str, data_dir, limit) -> dict:
    problems, samples, temperature = load_benchmark(dataset, data_dir)
    problems = problems[:limit] if limit else problems
    if not problems:
        raise click.UsageError(f"dataset {dataset} is empty")
    texts = generate_responses(config, problems, samples, temperature, system, prefix)
    setting = {"model": config.model, "dataset": dataset, "system": system, "prefix": prefix}
    return {**setting, **score(problems, texts, samples)}


# ---------------------------------------------------------------------------------------------------------- compare
def strategy_switching(before: dict, after: dict) -> dict:
    """Per problem: its style before and after (code if most samples have code), and each group's share of the gain.

    The share of a group is its change in correct answers over the total change: the paper's partial contribution.
    """

    def by_problem(result):
        groups = {}
        for record in result["responses"]:
            groups.setdefault(record["problem"], []).append(record)
        return {
            p: (sum(r["has_code"] for r in rs) * 2 > len(rs), sum(r["correct"] for r in rs) / len(rs))
            for p, rs in groups.items()
        }

    first, second = by_problem(before), by_problem(after)
    if set(first) != set(second):
        raise click.UsageError("the two result files evaluate different problems")
    name = lambda is_code: "Code" if is_code else "Lang"
    table = {
        f"{a}->{b}": {"count": 0, "accuracy_before": 0.0, "accuracy_after": 0.0}
        for a in ("Code", "Lang")
        for b in ("Code", "Lang")
    }
    for problem, (code_before, accuracy_before) in first.items():
        code_after, accuracy_after = second[problem]
        row = table[f"{name(code_before)}->{name(code_after)}"]
        row["count"] += 1
        row["accuracy_before"] += accuracy_before
        row["accuracy_after"] += accuracy_after
    total_gain = sum(row["accuracy_after"] - row["accuracy_before"] for row in table.values())
    for row in table.values():
        gain = row["accuracy_after"] - row["accuracy_before"]
        row["share_of_gain"] = gain / total_gain if total_gain else None
        row["accuracy_before"] = row["accuracy_before"] / row["count"] if row["count"] else None
        row["accuracy_after"] = row["accuracy_after"] / row["count"] if row["count"] else None
    return {"problems": len(first), "total_gain": total_gain / len(first), "groups": table}


# ---------------------------------------------------------------------------------------------------------- labels
def majority_labels(problems: list[dict], texts: list[str], samples: int, incorrect_only: bool) -> list[dict]:
    """Each problem with `label` = its most common extracted answer (problems with no answer at all are dropped)."""
    rows = []
    for index, problem in enumerate(problems):
        answers = [rewards.extract_answer(t) for t in texts[index * samples : (index + 1) * samples]]
        counts = Counter(a.strip() for a in answers if a and a.strip())
        if not counts:
            continue
        label = counts.most_common(1)[0][0]
        if incorrect_only and rewards.grade(f"\\boxed{{{label}}}", str(problem["answer"])):
            continue
        rows.append({**problem, rewards.LABEL_COLUMN: label, "label_votes": counts[label], "label_samples": samples})
    return rows


# ---------------------------------------------------------------------------------------------------------- sweep
# The clipping-bias laboratory: conditions x seeds of rlvr_min.py, each condition one flag away from the regime.
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
        for key in ("accuracy", "code_frequency", "fork_probability", "fork_polarisation")
    }
    change["mean_token_prob"] = mean(last, "mean_token_prob") - mean(first, "mean_token_prob")
    return {
        "trajectory": trajectory,
        "change": change,
        **{key: mean(trained, key) for key in ("clip_fraction", "clip_fraction_low", "clip_fraction_high")},
    }


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
    again; an unfinished one is restarted; the JSON and PNG are rewritten atomically after each run. quiet: each run's
    step lines go to its train.log instead of standard output."""
    if not isinstance(conditions, dict):
        unknown = [c for c in conditions if c not in SWEEP_CONDITIONS]
        if unknown:
            raise click.UsageError(f"unknown condition {unknown[0]!r}; choose one of: {', '.join(SWEEP_CONDITIONS)}")
        conditions = {c: SWEEP_CONDITIONS[c] for c in conditions}
    if regime not in REGIMES:
        raise click.UsageError(f"unknown regime {regime!r}; choose one of: {', '.join(REGIMES)}")
    import shutil

    import torch

    out.mkdir(parents=True, exist_ok=True)
    common = ["--reward", "random", *REGIMES[regime], *flags]
    runs = []
    for condition, condition_flags in conditions.items():
        for seed in seeds:
            run_dir = out / f"{condition}-seed{seed}"
            config = run_config([*common, *condition_flags, "--seed", str(seed), "--out", str(run_dir)])
            metrics_file = run_dir / "metrics.jsonl"
            done = (
                (run_dir / "config.json").exists()
                and json.loads((run_dir / "config.json").read_text()) == dataclasses.asdict(config)
                and metrics_file.exists()
                and json.loads(metrics_file.read_text().splitlines()[-1])["step"] == config.steps
            )
            if done:
                metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()]
            else:
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
            write_json(out / "sweep.json", result)
            plot_sweep(result, out / "sweep.png")
    return result


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


# ---------------------------------------------------------------------------------------------------------- CLI
def common_options(function):
    for decorator in reversed(
        [
            click.option(
                "--dataset", default="math500", show_default=True, help=f"{', '.join(BENCHMARKS)}, or a .jsonl file."
            ),
            click.option("--max-new-tokens", default=None, type=int, help="[default: 3072; toy models: 96]"),
            click.option("--engine", type=click.Choice(["auto", "hf", "vllm"]), default="auto", show_default=True),
            click.option(
                "--data-dir",
                default=os.environ.get("RLVR_MIN_DATA"),
                help="Folder of local copies (math500.jsonl, ...) used instead of the hub. [env: RLVR_MIN_DATA]",
            ),
            click.option("--seed", default=0, show_default=True),
            click.option("--limit", default=None, type=int, help="Evaluate only the first N problems."),
        ]
    ):
        function = decorator(function)
    return function


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model", default=rlvr_min.DEFAULT_MODEL, show_default=True, help="Hub id, local directory, or toy:PRESET."
)
@click.option("--system", default=rlvr_min.SYSTEM_PROMPT, help="System prompt. [default: Qwen2.5-Math's]")
@click.option(
    "--prefix", default="none", help='Response prefix: none, python ("Let\'s solve this using Python."), or any text.'
)
@click.option("--out", default=None, help="Result JSON (every response and its verdicts). [default: eval-DATASET.json]")
@common_options
@click.pass_context
def cli(context, model, system, prefix, out, dataset, max_new_tokens, engine, data_dir, seed, limit):
    """Evaluate a model (greedy pass@1 on MATH-500; avg@8 at temperature 0.6 on AIME and AMC)."""
    if context.invoked_subcommand is not None:
        return
    if toy.is_toy(model) and dataset == "math500" and context.get_parameter_source("dataset").name == "DEFAULT":
        dataset = "toy"  # a toy model's own held-out set
    config = generation_config(model, max_new_tokens, engine, seed)
    result = run_evaluation(config, dataset, system, PREFIXES.get(prefix, prefix), data_dir, limit)
    path = Path(out or f"eval-{Path(dataset).stem}.json")
    write_json(path, result)
    click.echo(summary_table(result, f"{model} on {dataset}") + f"\nresponses: {path}")


@cli.command()
@click.argument("before", type=click.Path(exists=True, dir_okay=False))
@click.argument("after", type=click.Path(exists=True, dir_okay=False))
def compare(before, after):
    """Strategy switching between two result files of the same problems (e.g. the base model and a checkpoint)."""
    result = strategy_switching(json.loads(Path(before).read_text()), json.loads(Path(after).read_text()))
    click.echo(f"{result['problems']} problems, accuracy change {result['total_gain']:+.3f}")
    click.echo(f"  {'group':<12} {'count':>6} {'acc before':>11} {'acc after':>10} {'share of gain':>14}")
    show = lambda v: "-" if v is None else f"{v:.3f}"
    for group, row in result["groups"].items():
        click.echo(
            f"  {group:<12} {row['count']:>6} {show(row['accuracy_before']):>11} {show(row['accuracy_after']):>10} "
            f"{show(row['share_of_gain']):>14}"
        )


@cli.command()
@click.option("--model", default=rlvr_min.DEFAULT_MODEL, show_default=True)
@click.option("--samples", default=64, show_default=True, help="Samples per problem (the paper: 64 at temperature 1).")
@click.option("--temperature", default=1.0, show_default=True)
@click.option(
    "--incorrect-only", is_flag=True, help="Keep only problems whose majority label is wrong (the incorrect reward)."
)
@click.option("--out", required=True, help="JSONL to write; train on it with rlvr_min.py --dataset OUT.")
@common_options
def labels(model, samples, temperature, incorrect_only, out, dataset, max_new_tokens, engine, data_dir, seed, limit):
    """Majority-vote labels for the majority and incorrect rewards."""
    problems = (toy.dataset("train") if dataset == "toy" else load_benchmark(dataset, data_dir)[0])[:limit]
    config = generation_config(model, max_new_tokens, engine, seed)
    texts = generate_responses(config, problems, samples, temperature, rlvr_min.SYSTEM_PROMPT, "")
    rows = majority_labels(problems, texts, samples, incorrect_only)
    infra.write_atomically(Path(out), "".join(json.dumps(row) + "\n" for row in rows))
    click.echo(f"{len(rows)} of {len(problems)} problems labelled -> {out}")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@common_options
def checkpoints(run_dir, dataset, max_new_tokens, engine, data_dir, seed, limit):
    """Evaluate the base model and every checkpoint of a run; write checkpoints.json and checkpoints.png there."""
    run = Path(run_dir)
    base = json.loads((run / "config.json").read_text())["model"]
    if toy.is_toy(base) and dataset == "math500":
        dataset = "toy"
    models = [(0, base)] + [(int(d.name.split("-")[1]), str(d)) for d in sorted(run.glob("checkpoint-*"))]
    base_config = generation_config(base, max_new_tokens, engine, seed)  # the lengths of the base model's kind
    points = []
    for step, model in models:
        config = dataclasses.replace(base_config, model=model)
        result = run_evaluation(config, dataset, rlvr_min.SYSTEM_PROMPT, "", data_dir, limit)
        points.append(
            {"step": step, "model": model, "accuracy": result["accuracy"], "code_frequency": result["code_frequency"]}
        )
        click.echo(f"step {step:6d}  accuracy {result['accuracy']:.3f}  code {result['code_frequency']:.3f}  ({model})")
    write_json(run / "checkpoints.json", points)
    figure = infra.new_figure(figsize=(6, 3.6))
    axis = figure.subplots()
    for key in ("accuracy", "code_frequency"):
        axis.plot([p["step"] for p in points], [p[key] for p in points], "o-", label=key.replace("_", " "))
    axis.set_xlabel("step")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(f"{dataset}, per checkpoint")
    axis.legend()
    infra.save_figure(figure, run / "checkpoints.png")
    click.echo(f"plot: {run / 'checkpoints.png'}")


SHOWN_CHANGES = {
    "code": "code_frequency",
    "accuracy": "accuracy",
    "fork": "fork_probability",
    "polarisation": "fork_polarisation",
    "token prob": "mean_token_prob",
}


def show_change(row: dict, key: str) -> str:
    """A summary's change of `key` over seeds: median [min, max]."""
    change = row.get(f"{key}_change")
    return "{median:+.3f} [{min:+.3f}, {max:+.3f}]".format(**change) if change else "-"


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
        shown = "  ".join(f"{name} {show_change(row, key)}" for name, key in SHOWN_CHANGES.items())
        click.echo(
            f"{condition:>12}: {shown}  clip {row['clip_fraction_median']:.4f}  seeds code +0.10 and accuracy "
            f"up: {row['seeds_code_up_0.10_and_accuracy_up']}/{row['seeds']}"
        )
    click.echo(f"{Path(out) / 'sweep.json'}, {Path(out) / 'sweep.png'}")


if __name__ == "__main__":
    cli()
