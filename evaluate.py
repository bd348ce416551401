"""Evaluation as the paper measures it: MATH-500 / AIME / AMC accuracy, code-reasoning analysis, and label building.

    python evaluate.py --model M --dataset math500 --out base.json      # accuracy, code frequency, per-style accuracy
    python evaluate.py --model M --dataset math500 --prefix python      # force code: "Let's solve this using Python."
    python evaluate.py compare base.json trained.json                   # strategy switching and each group's share
    python evaluate.py labels --model M --dataset D --out labels.jsonl  # majority-vote labels (majority / incorrect)
    python evaluate.py checkpoints runs/latest --dataset math500        # every checkpoint of a run, and a plot

Generation goes through rlvr_min.py's engines (vLLM or HF); grading and code detection through rewards.py. Sweeps of
trainings (conditions x seeds) are the laboratory's: lab.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
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
        return infra.load_problems(source, split), samples, temperature
    if name.endswith((".jsonl", ".json")) or os.path.exists(name):
        return infra.load_problems(name), 1, 0.0
    raise click.UsageError(f"unknown dataset {name!r}; choose {', '.join(BENCHMARKS)} or a .jsonl file")


def generate_responses(
    generator, config: rlvr_min.Config, problems: list[dict], samples: int, temperature: float, system: str, prefix: str
) -> list[str]:
    """`samples` responses per problem (grouped), through a (tokenizer, engine) of infra.load_generator; a prefix is
    part of the response."""
    tokenizer, engine = generator
    _, _, texts = rlvr_min.generate(
        engine, tokenizer, problems, config, samples, temperature, config.seed, system, prefix
    )
    return [prefix + text for text in texts]


def score(problems: list[dict], texts: list[str], samples: int, model: str = "") -> dict:
    """The paper's figures and one record per response; for a contaminated toy `model` also the accuracy of the seen
    and the clean half of its test split."""
    per_sample = [p for p in problems for _ in range(samples)]
    correct = rewards.grade_batch(texts, [p["answer"] for p in per_sample])
    code = [rewards.has_code(t) for t in texts]
    with_code = [c for c, k in zip(correct, code) if k]
    without_code = [c for c, k in zip(correct, code) if not k]
    passed = [any(correct[i : i + samples]) for i in range(0, len(correct), samples)]
    fraction = lambda values: sum(values) / len(values) if values else None
    halves = {f"accuracy_{half}": fraction(values) for half, values in toy.by_half(model, per_sample, correct).items()}
    return {
        "n": len(problems),
        "samples_per_problem": samples,
        "accuracy": fraction(correct),  # avg@k; pass@1 for one sample
        **halves,
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
            *[key for key in ("accuracy_seen", "accuracy_clean") if key in result],
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
    flags = {"model": model, "max_new_tokens": max_new_tokens, "engine": engine, "seed": seed, "memory_check": False}
    config = rlvr_min.resolve_config(flags)
    rlvr_min.check_config(config)
    return config


def run_evaluation(
    config: rlvr_min.Config, dataset: str, system: str, prefix: str, data_dir, limit, generator=None, base: str = ""
) -> dict:
    """The benchmark's figures for config.model, generated by `generator` (loaded from config.model if not given);
    `base` names the model a checkpoint was trained from (its test split may have seen and clean halves)."""
    problems, samples, temperature = load_benchmark(dataset, data_dir)
    problems = problems[:limit] if limit else problems
    if not problems:
        raise click.UsageError(f"dataset {dataset} is empty")
    generator = generator or infra.load_generator(config)
    texts = generate_responses(generator, config, problems, samples, temperature, system, prefix)
    setting = {"model": config.model, "dataset": dataset, "system": system, "prefix": prefix}
    return {**setting, **score(problems, texts, samples, base or config.model)}


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
@click.option(
    "--system", default="", help="System prompt. [default: the chat template's own; Qwen2.5-Math's is the paper's]"
)
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
    texts = generate_responses(infra.load_generator(config), config, problems, samples, temperature, "", "")
    rows = majority_labels(problems, texts, samples, incorrect_only)
    infra.write_atomically(Path(out), "".join(json.dumps(row) + "\n" for row in rows))
    click.echo(f"{len(rows)} of {len(problems)} problems labelled -> {out}")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@common_options
def checkpoints(run_dir, dataset, max_new_tokens, engine, data_dir, seed, limit):
    """Evaluate the base model and every checkpoint of a run, with one engine that takes each checkpoint's weights in
    turn; write checkpoints.json and checkpoints.png there."""
    run = Path(run_dir)
    base = json.loads((run / "config.json").read_text())["model"]
    if toy.is_toy(base) and dataset == "math500":
        dataset = "toy"
    models = [(0, base)] + [(int(d.name.split("-")[1]), str(d)) for d in sorted(run.glob("checkpoint-*"))]
    base_config = generation_config(base, max_new_tokens, engine, seed)  # the lengths of the base model's kind
    generator, points = infra.load_generator(base_config), []
    for step, model in models:
        if step:
            generator[1].load(model)
        config = dataclasses.replace(base_config, model=model)
        result = run_evaluation(config, dataset, "", "", data_dir, limit, generator, base)
        keys = [key for key in ("accuracy", "accuracy_seen", "accuracy_clean", "code_frequency") if key in result]
        points.append({"step": step, "model": model, **{key: result[key] for key in keys}})
        shown = "  ".join(f"{key.replace('_', ' ')} {result[key]:.3f}" for key in keys)
        click.echo(f"step {step:6d}  {shown}  ({model})")
    write_json(run / "checkpoints.json", points)
    figure = infra.new_figure(figsize=(6, 3.6))
    axis = figure.subplots()
    for key in keys:
        axis.plot([p["step"] for p in points], [p[key] for p in points], "o-", label=key.replace("_", " "))
    axis.set_xlabel("step")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(f"{dataset}, per checkpoint")
    axis.legend()
    infra.save_figure(figure, run / "checkpoints.png")
    click.echo(f"plot: {run / 'checkpoints.png'}")


if __name__ == "__main__":
    cli()
