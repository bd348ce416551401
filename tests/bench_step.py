"""Benchmark: seconds per GRPO step on the toy world, by phase and engine, and peak resident memory (prints numbers).

    python tests/bench_step.py [--engine hf|vllm] [--steps 6] [extra rlvr_min flags...]

Each engine runs in its own process (peak memory is per process); the first step (warm-up) is left out of the means.
"""

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

PHASES = ["rollout_seconds", "reward_seconds", "old_logprob_seconds", "update_seconds", "step_seconds"]


def one_engine(engine: str, steps: int, extra: list[str]) -> None:
    import rlvr_min

    out = Path(tempfile.mkdtemp(prefix=f"bench-{engine}-"))
    args = ["--engine", engine, "--steps", str(steps), "--eval-every", "0", "--reward", "random", "--out", str(out), *extra]
    rlvr_min.main(args, standalone_mode=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    means = {phase: sum(r[phase] for r in rows) / len(rows) for phase in PHASES}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = sum(r["response_length"] for r in rows) / len(rows)
    print(f"RESULT {engine:>4}: " + "  ".join(f"{p.removesuffix('_seconds')} {means[p]:.2f}s" for p in PHASES)
          + f"  | mean response {tokens:.1f} tokens | peak RSS {peak_mib:.0f} MiB")


def main() -> None:
    args = sys.argv[1:]
    if "--engine" in args:  # a child: one engine
        i = args.index("--engine")
        engine, rest = args[i + 1], args[:i] + args[i + 2:]
        steps = 6
        if "--steps" in rest:
            j = rest.index("--steps")
            steps, rest = int(rest[j + 1]), rest[:j] + rest[j + 2:]
        one_engine(engine, steps, rest)
        return
    for engine in ("hf", "vllm"):
        output = subprocess.run([sys.executable, __file__, "--engine", engine, *args], capture_output=True, text=True)
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT")]
        print(lines[-1] if lines else f"{engine}: failed\n{output.stderr[-2000:]}")


if __name__ == "__main__":
    main()
