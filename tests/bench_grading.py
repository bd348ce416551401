"""Benchmark: responses graded per second (prints numbers; not a test).

    python tests/bench_grading.py [path/to/math500.jsonl]

Two workloads from MATH-500, each graded one response at a time (rewards.grade) and as one batch
(rewards.grade_batch, which sends what needs math-verify to worker processes):
  matching    each solution against its own answer (a good policy's common case: the cheap exact-match path)
  mismatched  each solution against another row's answer (almost every response goes through math-verify)
"""

import json
import sys
import time
from pathlib import Path

import rewards


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/math500.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    solutions = [row["solution"] for row in rows]
    workloads = {
        "matching": [row["answer"] for row in rows],
        "mismatched": [rows[(i + 1) % len(rows)]["answer"] for i in range(len(rows))],
    }
    rewards.grade_batch(["\\boxed{y}"] * 64, ["x"] * 64)  # start the worker pool outside the timing
    for name, golds in workloads.items():
        for mode, run in [
            ("grade", lambda g: [rewards.grade(s, a) for s, a in zip(solutions, g)]),
            ("grade_batch", lambda g: rewards.grade_batch(solutions, g)),
        ]:
            rewards._parse_gold.cache_clear()
            rewards._boxed_answer_equal.cache_clear()
            start = time.perf_counter()
            verdicts = run(golds)
            seconds = time.perf_counter() - start
            print(
                f"{name:>10} {mode:>11}: {len(verdicts) / seconds:8.0f} responses/s "
                f"({sum(verdicts)}/{len(verdicts)} correct)"
            )


if __name__ == "__main__":
    main()
