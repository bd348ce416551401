"""Benchmark: seconds per GRPO step on the toy world, by phase and engine, and peak resident memory (prints numbers).

    python tests/bench_step.py [--steps 6] [extra rlvr_min flags...]

1. The rollout phase alone, both HF paths side by side in one process, on the same prompts and seeds (toy defaults:
   32 prompts x 8 samples, at most 96 new tokens): `model.generate` against the sampling loop; medians of 9 rounds.
2. Whole steps, each engine in its own process (peak memory is per process): `hf` (the sampling loop), `hf-generate`
   (the same engine through `model.generate`, as before the loop) and `vllm`; the first step (warm-up) is left out.
"""

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
PHASES = ["rollout_seconds", "reward_seconds", "old_logprob_seconds", "update_seconds", "step_seconds"]


def rollouts_side_by_side(rounds: int = 9) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import infra
    import rlvr_min
    import toy

    directory = str(toy.build(toy.DEFAULT_PRESET))
    tokenizer, model = AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory)
    config = rlvr_min.resolve_config({})
    problems = toy.dataset("train")[: config.prompts_per_step]
    prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in problems], max_tokens=config.max_prompt_tokens)
    engines = {"generate": infra.HFEngine(model, tokenizer, loop=False), "loop": infra.HFEngine(model, tokenizer)}
    seconds, tokens = {name: [] for name in engines}, {name: 0 for name in engines}
    for seed in range(rounds):  # alternating, so that both see the same machine load
        for name, engine in engines.items():
            started = time.perf_counter()
            responses = engine.generate(prompts, config.group_size, 1.0, 1.0, config.max_new_tokens, seed)
            seconds[name].append(time.perf_counter() - started)
            tokens[name] += sum(map(len, responses))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        f"rollout, {len(prompts)} prompts x {config.group_size} samples, {torch.get_num_threads()} threads, "
        f"median of {rounds}: generate {medians['generate']:.3f}s  loop {medians['loop']:.3f}s  "
        f"ratio {medians['generate'] / medians['loop']:.2f}x  (mean response: generate "
        f"{tokens['generate'] / rounds / len(responses):.1f}, "
        f"loop {tokens['loop'] / rounds / len(responses):.1f} tokens)"
    )


def one_engine(engine: str, steps: int, extra: list[str]) -> None:
    import infra
    import rlvr_min

    if engine == "hf-generate":  # the HF engine as it was before the sampling loop
        loop_default = infra.HFEngine.__init__
        infra.HFEngine.__init__ = lambda self, model, tokenizer, loop=None: loop_default(self, model, tokenizer, False)
    out = Path(tempfile.mkdtemp(prefix=f"bench-{engine}-"))
    args = [
        "--engine",
        engine.removesuffix("-generate"),
        "--steps",
        str(steps),
        "--eval-every",
        "0",
        "--reward",
        "random",
        "--out",
        str(out),
        *extra,
    ]
    rlvr_min.main(args, standalone_mode=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    means = {phase: sum(r[phase] for r in rows) / len(rows) for phase in PHASES}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = sum(r["response_length"] for r in rows) / len(rows)
    print(
        f"RESULT {engine:>11}: "
        + "  ".join(f"{p.removesuffix('_seconds')} {means[p]:.2f}s" for p in PHASES)
        + f"  | mean response {tokens:.1f} tokens | peak RSS {peak_mib:.0f} MiB | STEP {means['step_seconds']:.4f}"
    )


def main() -> None:
    args = sys.argv[1:]
    if "--engine" in args:  # a child: one engine
        i = args.index("--engine")
        engine, rest = args[i + 1], args[:i] + args[i + 2 :]
        steps = 6
        if "--steps" in rest:
            j = rest.index("--steps")
            steps, rest = int(rest[j + 1]), rest[:j] + rest[j + 2 :]
        one_engine(engine, steps, rest)
        return
    rollouts_side_by_side()
    step = {}
    for engine in ("hf-generate", "hf", "vllm"):
        output = subprocess.run([sys.executable, __file__, "--engine", engine, *args], capture_output=True, text=True)
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT")]
        print(lines[-1].rsplit(" | STEP", 1)[0] if lines else f"{engine}: failed\n{output.stderr[-2000:]}")
        if lines:
            step[engine] = float(lines[-1].rsplit("STEP ", 1)[1])
    if {"hf", "hf-generate"} <= set(step):
        print(
            f"whole step: hf-generate {step['hf-generate']:.2f}s / hf {step['hf']:.2f}s "
            f"= {step['hf-generate'] / step['hf']:.2f}x"
        )


if __name__ == "__main__":
    main()
