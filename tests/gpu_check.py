"""GPU check (not part of CI): GRPO steps of randomly initialised models with real shapes, on one GPU, no model hub.

    python tests/gpu_check.py [--shape qwen2.5-math-1.5b] [--before DIR] [--seven-b]

A model with Qwen2.5-Math-1.5B's shapes (config written here) and the toy tokenizer runs 2 GRPO steps through
rlvr_min.py's CLI in bf16 (--engine hf; --engine vllm as well where vLLM is installed), 16 prompts x 8 samples of 256
new tokens (a random model never stops: every response is 256 tokens). Printed: each phase's seconds, the response
tokens per second of the two passes over the batch (old log-probs, update), peak GPU memory and the estimate that
rlvr_min.py checks before loading (infra.memory_estimate). --before DIR runs the same with the code in DIR (an
older rlvr-min) for a comparison; --seven-b then one step of Qwen2.5-Math-7B's shapes in one process
(--gradient-checkpointing, 4 prompts x 4, 512 new tokens): does the optimizer step fit one GPU. The run's final
checkpoint is not written (a 7B's would not fit this machine's disk). Toy runs on such a machine go to the GPU; CPU
sweeps there need CUDA_VISIBLE_DEVICES=.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # the models' published config.json values that set their size
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-math-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                              num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-math-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                            num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}  # fmt: skip
STEPS = "--steps 2 --prompts-per-step 16 --group-size 8 --max-new-tokens 256 --max-prompt-tokens 256"
SEVEN_B = "--steps 1 --prompts-per-step 4 --group-size 4 --max-new-tokens 512 --max-prompt-tokens 256"
COMMON = "--dataset toy --eval-dataset toy --eval-every 0 --reward random --lr 1e-6 --micro-batch-size 4"


def build(shape: str, directory: Path) -> None:
    """Random weights of the shape, saved in bf16, with the toy tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(ROOT))
    import toy

    tokenizer = toy.build_tokenizer()
    ids = {"bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"), "eos_token_id": tokenizer.eos_token_id}
    config = Qwen2Config(**SHAPES[shape], **ids, pad_token_id=tokenizer.pad_token_id, max_position_embeddings=4096)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    torch.cuda.empty_cache()  # the runs are other processes: leave them the whole GPU


def child(code: str, model: str, flags: list[str]) -> None:
    """One run with the code in `code`, its final checkpoint not written; prints the metrics, peak memory, estimate."""
    sys.path.insert(0, code)
    import torch

    import infra
    import rlvr_min

    infra.save_checkpoint = lambda *args, **kwargs: None
    out = tempfile.mkdtemp()
    started = time.time()
    rlvr_min.main(["--model", model, "--out", out, *flags], standalone_mode=False)
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    estimate = None
    if hasattr(infra, "memory_estimate"):
        from transformers import AutoConfig

        import lab

        config = lab.run_config(["--model", model, *flags])
        model_config = AutoConfig.from_pretrained(model)
        parameters = infra.parameter_count(model_config, False)
        gpu = infra.gpu_memory()
        estimate = infra.memory_estimate(config, model_config, parameters, 1, gpu)
    peak = torch.cuda.max_memory_allocated()
    print("RESULT " + json.dumps({"rows": rows, "peak": peak, "estimate": estimate, "seconds": time.time() - started}))


def report(name: str, result: dict, responses: int) -> None:
    rows = [row for row in result["rows"] if "step_seconds" in row]
    for row in rows:
        tokens = row["response_length"] * responses
        phases = "  ".join(f"{p} {row[p + '_seconds']:.2f}s" for p in ("rollout", "reward", "old_logprob", "update"))
        print(
            f"{name} step {row['step']}: {phases}  | old log-probs {tokens / row['old_logprob_seconds']:,.0f} tok/s, "
            f"update {tokens / row['update_seconds']:,.0f} tok/s"
        )
    estimate = result["estimate"]
    shown = ", ".join(f"{k} {v / 2**30:.1f}" for k, v in estimate.items()) if estimate else "-"
    print(
        f"{name}: peak GPU memory {result['peak'] / 2**30:.1f} GiB; estimate (GiB): {shown}; {result['seconds']:.0f}s"
    )


def run(name: str, code: Path, model: Path, flags: str, timeout: int, responses: int = 128) -> None:
    command = [sys.executable, __file__, "--child", str(code), str(model), *flags.split()]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name}: did not finish in {timeout}s")
        return
    lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        print(f"{name}: failed\n{output.stderr[-3000:]}")
        return
    report(name, json.loads(lines[-1].removeprefix("RESULT ")), responses)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    parser.add_argument("--shape", default="qwen2.5-math-1.5b", choices=[*SHAPES, "none"])
    parser.add_argument("--before", help="a folder with an older rlvr_min.py and infra.py, run the same way")
    parser.add_argument("--seven-b", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2:])
        return
    import importlib.util

    import torch

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    work = Path(tempfile.mkdtemp())
    started = time.time()
    flags = f"{STEPS} {COMMON}"
    if args.shape != "none":
        build(args.shape, work / args.shape)
        print(f"built {args.shape} in {time.time() - started:.0f}s")
        run(f"{args.shape} hf", ROOT, work / args.shape, flags + " --engine hf", 200)
    if importlib.util.find_spec("vllm") and args.shape != "none":
        run(f"{args.shape} vllm", ROOT, work / args.shape, flags + " --engine vllm", 300)
    else:
        print("vllm: not installed here, not run")
    if args.seven_b:
        started = time.time()
        build("qwen2.5-math-7b", work / "7b")
        print(f"built qwen2.5-math-7b in {time.time() - started:.0f}s")
        run("7b hf, 1 process", ROOT, work / "7b", f"{SEVEN_B} {COMMON} --engine hf --gradient-checkpointing", 300, 16)
    if args.before:
        run(f"{args.shape} hf (before)", Path(args.before), work / args.shape, flags + " --engine hf", 200)


if __name__ == "__main__":
    main()
