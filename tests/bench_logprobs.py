"""Benchmark: peak memory of the log-prob passes, the whole logits (as before) against rlvr_min.token_logprobs.

    python tests/bench_logprobs.py [--length 4096] [--sequences 2] [--vocabulary 151936]

A tiny Qwen2 (one layer, width 64) with Qwen's vocabulary, so that the output layer is all there is: the training pass
(forward and backward of the log-probs) and the no-grad pass of the old log-probs (with the entropy), each measured
alone. On a GPU: peak allocated memory above the model's (bf16 autocast, as training runs); on a CPU: each pass in its
own process, peak resident memory above that of a process that only built the model.
"""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def whole_logits(model, ids, attention, with_entropy=False):
    """The log-probs as rlvr_min computed them before: the full fp32 logits, logsumexp, gather, entropy terms."""
    import torch

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.is_cuda):
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    log_z = logits.logsumexp(-1)
    logprobs = torch.gather(logits, 2, ids[:, 1:, None]).squeeze(2) - log_z
    if not with_entropy:
        return logprobs
    return logprobs, log_z - ((logits - log_z[..., None]).exp() * logits).sum(-1)


def measure(path: str, passes: str, args) -> float:
    """Peak bytes of one pass above the baseline, in this process."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import rlvr_min

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=args.vocabulary,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=args.length,
    )
    model = Qwen2ForCausalLM(config).to(device)
    ids = torch.randint(0, args.vocabulary, (args.sequences, args.length), device=device)
    attention = torch.ones_like(ids)
    compute = whole_logits if path == "whole" else rlvr_min.token_logprobs
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    if passes == "training":
        compute(model, ids, attention).sum().backward()
    elif passes == "old":
        with torch.no_grad():
            compute(model, ids, attention, with_entropy=True)
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - baseline
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--vocabulary", type=int, default=151936)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:  # one pass in this process
        print(json.dumps(measure(*args.child, args)))
        return
    import torch

    on_gpu = torch.cuda.is_available()

    def peak(path, passes):
        if on_gpu:
            return measure(path, passes, args)
        command = [sys.executable, __file__, "--child", path, passes] + sys.argv[1:]
        return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])

    where = f"{'GPU, bf16 autocast' if on_gpu else 'CPU, fp32'}: {args.sequences} x {args.length} tokens, "
    print(where + f"vocabulary {args.vocabulary}; peak memory above the model's, GiB")
    baseline = 0 if on_gpu else peak("whole", "none")
    for passes in ("training", "old"):
        before, after = (peak(path, passes) - baseline for path in ("whole", "chunked"))
        label = "training pass (forward + backward)" if passes == "training" else "old log-probs (no grad, entropy)"
        print(f"{label:<36} whole logits {before / 2**30:6.2f}   chunked {after / 2**30:6.2f}   {before / after:5.1f}x")


if __name__ == "__main__":
    main()
