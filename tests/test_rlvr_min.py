"""The GRPO loop end to end on the toy world, the CLI, and its errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import load_weights, needs_vllm, read_metrics

import infra
import rlvr_min
import toy

SHORT = (
    "--steps 2 --prompts-per-step 8 --group-size 4 --mini-batches 4 --max-new-tokens 64 --eval-every 2 --eval-size 40"
).split()


def run(args, tmp_path):
    result = CliRunner().invoke(rlvr_min.main, args + ["--out", str(tmp_path / "run")], catch_exceptions=False)
    return result


def weights_differ(directory_a, directory_b) -> bool:
    a, b = load_weights(directory_a), load_weights(directory_b)
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=[needs_vllm(), pytest.mark.slow])])
def test_short_run_writes_everything_and_changes_the_policy(engine, tmp_path, toy_model):
    result = run(SHORT + ["--engine", engine, "--reward", "random"], tmp_path)
    assert result.exit_code == 0, result.output
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [0, 1, 2]  # step 0: the base model's evaluation
    evaluation = {"eval_accuracy", "eval_code_frequency", "eval_fork_probability", "eval_fork_polarisation"}  # a toy
    evaluation |= {"eval_closing_probability"}
    assert set(metrics[0]) == {"step"} | evaluation
    required = {
        "step",
        "reward_mean",
        "accuracy",
        "code_frequency",
        "fork_probability",
        "closing_probability",
        "clip_fraction",
        "clip_fraction_low",
        "clip_fraction_high",
        "clip_fraction_high[0.5,0.833)",
        "token_share[0.833,1]",
        "clip_fraction_per_epoch",
        "approx_kl",
        "entropy",
        "mean_token_prob",
        "response_length",
        "step_seconds",
    }
    assert required | evaluation <= set(metrics[-1])
    bands = list(rlvr_min.CLIP_BANDS)
    for m in metrics[1:]:  # the bands partition the response tokens, and the clipped tokens with them
        assert sum(m[f"token_share{band}"] for band in bands) == pytest.approx(1)
        for side in ("low", "high"):
            assert sum(m[f"clip_fraction_{side}{band}"] for band in bands) == pytest.approx(m[f"clip_fraction_{side}"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["engine"] == engine and config["reward"] == "random" and config["group_size"] == 4
    assert (tmp_path / "run" / "plot.png").stat().st_size > 1000
    checkpoint = tmp_path / "run" / "checkpoint-000002"
    assert (checkpoint / "config.json").exists() and (checkpoint / "tokenizer_config.json").exists()
    assert weights_differ(checkpoint, toy_model)


def test_the_contaminated_variant_is_evaluated_on_its_seen_and_clean_halves_apart(tmp_path):
    args = SHORT + ["--steps", "1", "--eval-size", "60", "--model", "toy:qwen-math-7b+contaminated"]
    assert run(args, tmp_path).exit_code == 0
    seen = {p["problem"] for p in toy.SEEN_PROBLEMS}
    count = sum(p["problem"] in seen for p in toy.dataset("test")[:60])
    for row in read_metrics(tmp_path / "run"):  # the step-0 evaluation and the last
        halves = count * row["eval_accuracy_seen"] + (60 - count) * row["eval_accuracy_clean"]
        assert halves / 60 == pytest.approx(row["eval_accuracy"])


def test_same_seed_same_metrics(tmp_path):
    args = SHORT + ["--engine", "hf", "--reward", "random", "--eval-every", "0"]
    assert run(args, tmp_path / "a").exit_code == 0
    assert run(args, tmp_path / "b").exit_code == 0
    assert run(args + ["--seed", "1"], tmp_path / "c").exit_code == 0
    timeless = lambda name: read_metrics(tmp_path / name / "run", timings=False)
    assert timeless("a") == timeless("b")
    assert timeless("a") != timeless("c")


@pytest.mark.slow
@needs_vllm()
def test_vllm_generations_follow_the_synced_weights(toy_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_model)
    model = AutoModelForCausalLM.from_pretrained(toy_model)
    hf, vllm = (
        infra.HFEngine(model, tokenizer),
        infra.VLLMEngine(toy_model, rlvr_min.Config(max_prompt_tokens=128, max_new_tokens=64), torch.float32),
    )
    prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in toy.dataset("test")[:16]])
    greedy = lambda engine: engine.generate(prompts, 1, 0.0, 1.0, 64, seed=0)
    before = greedy(vllm)
    with torch.no_grad():  # a large change of the weights: the answers change
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05, alpha=1.0)
    vllm.sync(model)
    after = greedy(vllm)
    assert after == greedy(hf)
    assert after != before


@pytest.mark.slow
def test_ground_truth_reward_raises_accuracy(tmp_path):
    # Toy defaults (32 prompts x 8, 8 updates, lr 1e-4) on toy:qwen-math-7b. Measured on seed 0: held-out greedy
    # accuracy 0.51 (base) -> 0.70 after 20 steps -> 0.75 after 30 (code use 0.64 -> 0.82); it barely moves in the
    # first 10.
    result = run(["--reward", "ground_truth", "--engine", "hf", "--steps", "20", "--eval-every", "20"], tmp_path)
    assert result.exit_code == 0, result.output
    evaluated = [m for m in read_metrics(tmp_path / "run") if "eval_accuracy" in m]
    assert [m["step"] for m in evaluated] == [0, 20]  # the base model, then after 20 steps
    assert evaluated[-1]["eval_accuracy"] > evaluated[0]["eval_accuracy"] + 0.08, evaluated


# ------------------------------------------------------------------------------------------------- bad input
# One case per row of the README's "Bad input" table: the flags ({tmp} is a scratch directory holding the files below)
# and the start of the one line the user sees.
FILES = {
    "no_answer.jsonl": '{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?"}\n',
    "not_json.jsonl": '{"problem": "1+1?", "answer": "2"}\nproblem: 2+2\n',
    "empty.jsonl": "\n",
    "run/config.json": json.dumps({"model": "toy:qwen-math-7b", "dataset": "toy", "eval_dataset": "toy"}),
}
BAD_INPUT = [
    (["--reward", "accuracy"], "unknown reward 'accuracy'"),
    (["--reward", "random", "--gamma", "1.5"], "gamma must lie in [0, 1]"),
    (["--reward", "majority"], "'label' column"),
    (["--model", "{tmp}/nowhere"], "model path {tmp}/nowhere has no config.json"),
    (["--model", "toy:gpt-5"], "unknown toy preset 'gpt-5'"),
    (["--dataset", "{tmp}/missing.jsonl"], "dataset file {tmp}/missing.jsonl does not exist"),
    (["--dataset", "{tmp}/no_answer.jsonl"], "{tmp}/no_answer.jsonl, line 2: missing field answer"),
    (["--dataset", "{tmp}/not_json.jsonl"], "{tmp}/not_json.jsonl, line 2: not JSON"),
    (["--dataset", "{tmp}/empty.jsonl"], "dataset {tmp}/empty.jsonl is empty"),
    (["--mini-batches", "3"], "--mini-batches 3 does not divide the rollout batch"),
    (["--group-size", "1", "--mini-batches", "1"], "--group-size must be at least 2"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--vllm-sleep"], "--vllm-sleep needs a GPU"),
    (["--resume", "{tmp}/missing-run"], "--resume {tmp}/missing-run: no config.json there"),
    (["--resume", "{tmp}/run"], "--resume {tmp}/run: no checkpoint there yet"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_fails_with_one_clear_line(args, message, tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = CliRunner().invoke(rlvr_min.main, args + ([] if "--resume" in args else ["--out", str(tmp_path / "out")]))
    assert result.exit_code == 2, result.output  # click's usage-error code
    [error] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert message.replace("{tmp}", str(tmp_path)) in error
    assert "Traceback" not in result.output


def test_vllm_engine_without_vllm_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(infra, "vllm_installed", lambda: False)
    result = CliRunner().invoke(rlvr_min.main, ["--engine", "vllm", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Error: --engine vllm needs vLLM" in result.output
    assert infra.choose_engine(rlvr_min.Config(engine="auto")) == "hf"


def test_report_to_tensorboard_logs_every_number_of_metrics_jsonl(tmp_path, toy_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(SHORT + ["--engine", "hf", "--reward", "random", "--report-to", "tensorboard"], tmp_path)
    assert result.exit_code == 0, result.output
    expected = {}  # tag -> {step: value}: every number of metrics.jsonl, a list's entries as name/0, name/1, ...
    for row in read_metrics(tmp_path / "run"):
        for key, value in row.items():
            entries = [(f"{key}/{i}", v) for i, v in enumerate(value)] if isinstance(value, list) else [(key, value)]
            for tag, number in entries:
                if key != "step" and isinstance(number, (int, float)):
                    expected.setdefault(tag, {})[row["step"]] = number
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    logged = {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    assert set(logged) == set(expected) and {"eval_accuracy", "clip_fraction_per_epoch/0"} <= set(logged)
    for tag, values in expected.items():
        assert logged[tag].keys() == values.keys(), tag
        assert all(logged[tag][step] == pytest.approx(value, rel=1e-6, abs=1e-6) for step, value in values.items()), tag


def test_report_to_a_tracker_that_is_not_installed_fails_clearly(tmp_path, monkeypatch):
    real_find_spec = rlvr_min.importlib.util.find_spec
    monkeypatch.setattr(
        rlvr_min.importlib.util, "find_spec", lambda name: None if name == "wandb" else real_find_spec(name)
    )
    result = CliRunner().invoke(rlvr_min.main, ["--report-to", "wandb", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Error: --report-to wandb needs wandb: pip install wandb" in result.output


def test_a_process_count_that_does_not_split_the_batch_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(rlvr_min, "world_size", lambda: 3)  # as under torchrun --nproc-per-node 3
    result = CliRunner().invoke(rlvr_min.main, ["--prompts-per-step", "8", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "3 processes must split both --prompts-per-step 8 and each mini-batch (8 rollouts) evenly" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model", "nobody/no-such-model", "--dataset", "toy", "--eval-dataset", "toy"],
            "cannot load model nobody/no-such-model: ",
        ),
        (["--dataset", "nobody/no-such-dataset"], "cannot load dataset nobody/no-such-dataset (split train): "),
    ],
)
def test_hub_names_that_cannot_be_loaded_fail_clearly(args, message, tmp_path):
    # A fresh process: the hub libraries read HF_HUB_OFFLINE when they are imported (this machine has no hub anyway).
    result = subprocess.run(
        [sys.executable, "rlvr_min.py", *args, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=Path(rlvr_min.__file__).parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_help_names_every_knob_of_the_paper():
    text = CliRunner().invoke(rlvr_min.main, ["--help"]).output
    for flag in [
        "--model",
        "--reward",
        "--dataset",
        "--steps",
        "--seed",
        "--out",
        "--engine",
        "--prompts-per-step",
        "--group-size",
        "--max-new-tokens",
        "--temperature",
        "--clip / --no-clip",
        "--clip-low",
        "--clip-high",
        "--mini-batches",
        "--lr",
        "--eval-every",
        "--save-every",
        "--kl-coef",
        "--gamma",
    ]:
        assert flag in text, flag


def test_gradient_checkpointing_recomputes_the_forward_and_changes_no_result(tmp_path, monkeypatch):
    load_policy, forwards = infra.load_policy, []

    def counting_load_policy(config, weights=None):  # counts the first decoder layer's forwards that build a graph
        model, tokenizer, engine = load_policy(config, weights)
        # a pre-hook: the recomputation in backward stops as soon as it has what it needs, before any forward hook
        model.model.layers[0].register_forward_pre_hook(
            lambda *_: forwards.append(1) if torch.is_grad_enabled() else None
        )
        return model, tokenizer, engine

    monkeypatch.setattr(infra, "load_policy", counting_load_policy)
    args = SHORT + ["--steps", "1", "--eval-every", "0", "--engine", "hf", "--reward", "random"]
    assert run(args, tmp_path / "plain").exit_code == 0
    plain_forwards = len(forwards)
    assert run(args + ["--gradient-checkpointing"], tmp_path / "checkpointed").exit_code == 0
    assert (
        plain_forwards == 4 and len(forwards) - plain_forwards == 2 * plain_forwards
    )  # each forward again in backward
    [plain], [checkpointed] = read_metrics(tmp_path / "plain" / "run"), read_metrics(tmp_path / "checkpointed" / "run")
    for key in ("grad_norm", "approx_kl", "clip_fraction", "entropy"):
        assert checkpointed[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-9), key


def test_paper_defaults_for_real_models_and_toy_defaults_for_toy_models():
    real = rlvr_min.resolve_config({"model": "Qwen/Qwen2.5-Math-7B"})
    assert (real.lr, real.prompts_per_step, real.group_size, real.mini_batches, real.max_new_tokens) == (
        5e-7,
        64,
        16,
        8,
        3072,
    )
    assert (real.clip, real.clip_low, real.clip_high, real.kl_coef, real.temperature) == (True, 0.2, 0.2, 0.0, 1.0)
    assert (real.beta1, real.beta2, real.weight_decay, real.max_grad_norm) == (0.9, 0.95, 0.0, 1.0)
    toy_config = rlvr_min.resolve_config({})
    assert toy_config.model == "toy:qwen-math-7b" and toy_config.dataset == "toy"
    assert rlvr_min.resolve_config({"lr": 3e-4}).lr == 3e-4  # every toy default yields to its flag


# ------------------------------------------------------------------------------------------------- sample reuse
def test_epochs_reuse_each_rollout_batch_with_fixed_old_log_probs(tmp_path, monkeypatch):
    steps, ratios = [], []
    real_step, real_loss = torch.optim.Adam.step, rlvr_min.policy_loss

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return real_step(self, *args, **kwargs)

    def recording_loss(logprobs, old_logprobs, advantages, mask, *args, **kwargs):
        ratios.append(((logprobs - old_logprobs).abs() * mask).max().item())  # |log rho| over the real tokens
        return real_loss(logprobs, old_logprobs, advantages, mask, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    monkeypatch.setattr(rlvr_min, "policy_loss", recording_loss)
    args = SHORT + ["--steps", "1", "--eval-every", "0", "--engine", "hf", "--reward", "random", "--lr", "1e-3"]
    assert run(args + ["--epochs", "1"], tmp_path / "one").exit_code == 0
    assert len(steps) == 4 and len(ratios) == 4  # 4 mini-batches of 8 rollouts, one micro-batch each
    steps.clear(), ratios.clear()
    assert run(args + ["--epochs", "2"], tmp_path / "two").exit_code == 0
    assert len(steps) == 8  # twice the optimizer steps
    assert ratios[0] == 0.0  # rho = 1 exactly: the old log-probs were computed in these very micro-batches
    assert all(r > 0 for r in ratios[1:]), ratios  # every later mini-batch, the second pass's first one included
    [row] = read_metrics(tmp_path / "two" / "run")
    assert len(row["clip_fraction_per_epoch"]) == 2
    assert row["clip_fraction_per_epoch"][1] > 0  # the second pass sees its own first-pass updates: clipping fires
    assert row["clip_fraction"] == pytest.approx(sum(row["clip_fraction_per_epoch"]) / 2)
    assert row["clip_fraction"] == pytest.approx(
        sum(row[f"clip_fraction_{side}{band}"] for band in rlvr_min.CLIP_BANDS for side in ("low", "high"))
    )
    assert sum(row[f"token_share{band}"] for band in rlvr_min.CLIP_BANDS) == pytest.approx(1.0)


NO_DEFAULT_SYSTEM = (  # a chat template with no default system prompt of its own
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_prompts_send_only_the_user_turn_unless_a_system_prompt_is_given(toy_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_model)
    question = "Compute $3 + 4$."
    # the toy's template is Qwen2.5-Math's, whose own default system prompt is the paper's
    with_paper_prompt = [{"role": "system", "content": toy.SYSTEM_PROMPT}, {"role": "user", "content": question}]
    expected = tokenizer.apply_chat_template(with_paper_prompt, tokenize=False, add_generation_prompt=True)
    assert rlvr_min.prompt_text(tokenizer, question) == expected
    tokenizer.chat_template = NO_DEFAULT_SYSTEM
    assert (
        rlvr_min.prompt_text(tokenizer, question) == f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert rlvr_min.prompt_text(tokenizer, question, system="Be brief.").startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    )


def test_training_and_its_evaluation_use_the_system_flag(tmp_path, monkeypatch):
    seen, real = [], rlvr_min.prompt_text
    monkeypatch.setattr(rlvr_min, "prompt_text", lambda *args, **kwargs: seen.append(args[2]) or real(*args, **kwargs))
    args = SHORT + ["--steps", "1", "--eval-every", "1", "--eval-size", "4", "--system", "Be brief."]
    assert run(args, tmp_path).exit_code == 0
    assert set(seen) == {"Be brief."} and len(seen) == 8 + 2 * 4  # 8 prompts, the held-out 4 before and after
