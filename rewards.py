"""Rewards of "Spurious Rewards: Rethinking Training Signals in RLVR" (Shao et al., 2025), and the grader.

A reward turns one rollout batch (the responses, their problems' answers and labels, the group size G) into one
number per response. Ground truth grades the final answer; every other reward here is "spurious": it carries little or
no information about correctness, and yet the paper finds most of them lift Qwen2.5-Math on MATH-500.

Grading uses math-verify: "070" = 70, 27.0 = 27, \\frac12 = 0.5, x = 5 -> 5, 5 \\text{ cm} -> 5, \\text{(C)} = C.
math-verify times out with SIGALRM, which works only in a process's main thread, so grading runs in the main thread or
in worker processes; a parse error or a timeout is a wrong answer, never an exception.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import multiprocessing
import os
import random
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException

GRADE_TIMEOUT_SECONDS = 2.0  # per response: parsing and comparing its answer
logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that its own timeouts are off (ours are on)
LABEL_COLUMN = "label"  # the dataset column that the majority and incorrect rewards grade against

# One-shot RL is a dataset of one problem, not a reward: the paper's single training example.
ONE_SHOT = [
    {
        "problem": "The pressure $P$ exerted by wind on a sail varies jointly as the area $A$ of the sail and the cube "
        "of the wind's velocity $V$. When the velocity is $8$ miles per hour, the pressure on a sail of $2$ square "
        "feet is $4$ pounds. Find the wind velocity when the pressure on $4$ square feet of sail is $32$ pounds.",
        "answer": "12.8",
    }
]


# ---------------------------------------------------------------------------------------------------------- rewards
@dataclass
class Rollouts:
    """What a reward sees: the responses of one step, G consecutive responses per prompt."""

    responses: list[str]
    answers: list[str]  # each response's problem's dataset answer
    labels: list[str] | None = None  # each response's problem's `label` column, where the dataset has one
    group_size: int = 1
    gamma: float = 0.5  # the random reward's probability of a 1
    rng: random.Random | None = None  # the random reward's generator: seed it for reproducible runs

    @functools.cached_property
    def correct(self) -> list[bool]:
        """Each response graded against its problem's answer (computed once: rewards and logs both need it)."""
        return grade_batch(self.responses, self.answers)


def ground_truth(rollouts: Rollouts) -> list[float]:
    """1 if the final answer equals the dataset's answer, else 0."""
    return [float(v) for v in rollouts.correct]


def label_match(rollouts: Rollouts) -> list[float]:
    """1 if the final answer equals the dataset's `label` (a majority-vote answer; wrong ones only for incorrect)."""
    if rollouts.labels is None:
        raise ValueError(f"this reward needs the dataset's {LABEL_COLUMN!r} column")
    return [float(v) for v in grade_batch(rollouts.responses, rollouts.labels)]


def random_reward(rollouts: Rollouts) -> list[float]:
    """1 with probability gamma, independent of the response."""
    rng = rollouts.rng or random.Random()
    return [float(rng.random() < rollouts.gamma) for _ in rollouts.responses]


def format_reward(rollouts: Rollouts) -> list[float]:
    """1 if the last \\boxed{} of the response has non-empty content, else 0."""
    return [float(bool((extract_answer(r) or "").strip())) for r in rollouts.responses]


def python_reward(rollouts: Rollouts) -> list[float]:
    """1 if "python" appears anywhere in the response (any case), else 0."""
    return [float(has_code(r)) for r in rollouts.responses]


def has_repetition(text: str, shortest: int = 10, longest: int = 256, times: int = 10) -> bool:
    """Does some substring of shortest..longest characters repeat `times` or more times in a row?"""
    # A unit of length L repeated 10 times in a row is a stretch where text[j] == text[j + L] for 9 * L positions
    # in a row; one array operation per L, about 7x faster than the regex (.{10,256}?)\1{9,}.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    for unit in range(shortest, min(longest, len(codes) // times) + 1):
        stretch = (times - 1) * unit
        mismatches = np.concatenate(([0], np.cumsum(codes[unit:] != codes[:-unit])))
        if (mismatches[stretch:] == mismatches[:-stretch]).any():
            return True
    return False


def no_repetition(rollouts: Rollouts) -> list[float]:
    """0 if some substring of 10-256 characters repeats 10 or more times in a row, else 1."""
    return [float(not has_repetition(r)) for r in rollouts.responses]


def ttrl(rollouts: Rollouts) -> list[float]:
    """1 if the final answer equals the most common final answer of its group of G samples, else 0."""
    answers = [extract_answer(r) for r in rollouts.responses]
    targets = []
    for start in range(0, len(answers), rollouts.group_size):
        group = [a.strip() for a in answers[start : start + rollouts.group_size] if a and a.strip()]
        vote = Counter(group).most_common(1)[0][0] if group else None
        targets += [vote] * len(answers[start : start + rollouts.group_size])
    verdicts = grade_batch(rollouts.responses, [t or "" for t in targets])
    return [float(v and t is not None) for v, t in zip(verdicts, targets)]


REWARDS: dict[str, Callable[[Rollouts], list[float]]] = {
    "ground_truth": ground_truth,
    "random": random_reward,
    "format": format_reward,
    "incorrect": label_match,
    "majority": label_match,
    "python": python_reward,
    "no_repetition": no_repetition,
    "ttrl": ttrl,
}
NEEDS_LABEL = {"incorrect", "majority"}
WITHOUT_PYTHON = "_without_python"  # "X without python": reward X, and 0 wherever the response mentions python


def reward_names() -> list[str]:
    return list(REWARDS) + [name + WITHOUT_PYTHON for name in REWARDS if name != "python"]


def _split(reward: str) -> tuple[str, bool]:
    name = "_".join(reward.strip().lower().replace("-", " ").split())  # "format without python" = format_without_python
    return (name.removesuffix(WITHOUT_PYTHON), True) if name.endswith(WITHOUT_PYTHON) else (name, False)


def check_reward(reward: str, gamma: float = 0.5, columns: set[str] | None = None) -> None:
    """Raise ValueError with a one-line reason if this reward cannot run on a dataset with these columns."""
    name, _ = _split(reward)
    if name not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; choose one of: {', '.join(reward_names())}")
    if name == "random" and not 0.0 <= gamma <= 1.0:
        raise ValueError(f"the random reward's gamma must lie in [0, 1], got {gamma}")
    if name in NEEDS_LABEL and columns is not None and LABEL_COLUMN not in columns:
        raise ValueError(
            f"the {name} reward grades against a {LABEL_COLUMN!r} column that this dataset lacks "
            f"(it has: {', '.join(sorted(columns))}); build one with `python evaluate.py labels`"
        )


def reward_function(reward: str) -> Callable[[Rollouts], list[float]]:
    """The reward named `reward` (see reward_names(); check it first with check_reward) as a function of a batch."""
    name, without_python = _split(reward)
    if not without_python:
        return REWARDS[name]
    return lambda rollouts: [r * (not has_code(t)) for r, t in zip(REWARDS[name](rollouts), rollouts.responses)]


def compute_rewards(reward: str, rollouts: Rollouts) -> list[float]:
    """The rewards of a whole rollout batch under the reward named `reward`, checked first."""
    check_reward(reward, rollouts.gamma, None if rollouts.labels is None else {LABEL_COLUMN})
    return reward_function(reward)(rollouts)


# ---------------------------------------------------------------------------------------------------------- grader
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_answer(response: str) -> str | None:
    """The content of the last \\boxed{...} or \\fbox{...} (nested braces handled); None where there is none.
    Each brace's partner is found in one pass, so a response full of unclosed boxes costs linear time."""
    closing, opened = {}, []
    for position, character in enumerate(response):
        if character == "{":
            opened.append(position)
        elif character == "}" and opened:
            closing[opened.pop()] = position
    for match in reversed(list(_BOX.finditer(response))):
        if match.end() - 1 in closing:
            return response[match.end() : closing[match.end() - 1]]
    return None  # no box, or only unclosed ones


def has_code(response: str) -> bool:
    """Code reasoning as the paper measures it: "python" appears anywhere in the response, in any case."""
    return "python" in response.lower()


_INTEGER = re.compile(r"-?\d+")


def _quick_verdict(answer: str | None, gold: str) -> bool | None:
    """The verdicts that need no parser (identical strings; two plain integers, "070" = 70); None where unsure."""
    if answer is None:
        return None
    answer, gold = answer.strip(), gold.strip()
    if answer == gold:
        return True
    if _INTEGER.fullmatch(answer) and _INTEGER.fullmatch(gold):
        return int(answer) == int(gold)
    return None


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise TimeoutException in this (main) thread once `seconds` have passed, and again every 0.1 s after that.

    math-verify's own timeouts fire a single SIGALRM; where that lands in a callback that swallows exceptions (a
    garbage-collection hook, a __del__), the timeout is lost and a pathological input runs on. A repeating timer
    cannot be lost that way.
    """
    armed = True

    def expire(signum, frame):
        if armed:
            raise TimeoutException("grading timed out")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.1)
    try:
        yield
    finally:
        while True:  # a late alarm may interrupt this clean-up itself: then do it again
            try:
                armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                break
            except TimeoutException:
                continue


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    # Wrapped in a box so that any gold (a bare number, an interval, \text{...}) goes through the LaTeX parser.
    # Cached: the G responses of a group share their gold.
    return tuple(parse(f"$\\boxed{{{gold}}}$", [LatexExtractionConfig()], parsing_timeout=None))


def _math_verify_equal(prediction: str, gold: str) -> bool:
    try:
        with _deadline(GRADE_TIMEOUT_SECONDS):  # math-verify's own single-shot alarms are off: see _deadline
            predicted = parse(prediction, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=None)
            return bool(verify(list(_parse_gold(gold)), predicted, timeout_seconds=None))
    except (Exception, TimeoutException):  # parser errors, RecursionError, timeouts: a wrong answer
        return False


@functools.lru_cache(maxsize=16384)
def _boxed_answer_equal(answer: str, gold: str) -> bool:
    return _math_verify_equal(f"\\boxed{{{answer}}}", gold)  # cached: samples of a group often agree


def _slow_grade(response: str, gold: str) -> bool:
    answer = extract_answer(response)
    return _math_verify_equal(response, gold) if answer is None else _boxed_answer_equal(answer, gold)


def grade(response: str, gold: str) -> bool:
    """Is the response's final answer (its last boxed answer, else math-verify's own extraction) equal to gold?"""
    return grade_batch([response], [gold])[0]


def _slow_grade_all(pairs: list[tuple[str, str]]) -> list[bool]:
    return [_slow_grade(response, gold) for response, gold in pairs]


def _worker_ready() -> None:
    """Runs first in every grading worker: a worker that cannot get here (say, its parent's main module cannot be
    re-imported, as for a script read from standard input) breaks the pool at once instead of hanging it."""


_pool = None  # the grading workers: None until first needed, BROKEN once they have failed to work
BROKEN = "broken"


def _pool_verdicts(pairs: list[tuple[str, str]], workers: int, chunk_size: int) -> list[bool] | None:
    """math-verify's verdicts from the worker pool, or None if the pool cannot work (workers that die at start or
    later, a pool that cannot start, a chunk past its deadline: the machinery, never the responses)."""
    global _pool
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures.process import BrokenProcessPool

    try:
        if _pool is None:
            # forkserver, not fork: a trainer holds torch and vLLM threads that a fork would copy half-way.
            _pool = ProcessPoolExecutor(workers, multiprocessing.get_context("forkserver"), initializer=_worker_ready)
            atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
        chunks = [pairs[i : i + chunk_size] for i in range(0, len(pairs), chunk_size)]
        pending = [_pool.submit(_slow_grade_all, chunk) for chunk in chunks]
        # each response is bounded by its own deadline inside the worker; this one only catches a stuck worker
        return [
            verdict for result in pending for verdict in result.result(timeout=GRADE_TIMEOUT_SECONDS * chunk_size + 10)
        ]
    except (BrokenProcessPool, FutureTimeout, OSError) as error:
        cause = f"{type(error).__name__}: {error}".strip(": ")
    if _pool is not None:
        for process in list((_pool._processes or {}).values()):  # a stuck worker would block exit (no public kill
            process.kill()  # before Python 3.14's terminate_workers)
        _pool.shutdown(wait=False, cancel_futures=True)
    _pool = BROKEN
    print(f"rewards: the grading worker pool failed ({cause}); grading in this process from now on", file=sys.stderr)
    return None


def grade_batch(responses: list[str], golds: list, chunk_size: int = 16) -> list[bool]:
    """Grade many responses: cheap verdicts here, math-verify in worker processes where there are enough of them.

    math-verify's timeouts use SIGALRM, which works only in a process's main thread: outside it, even one response
    goes to a worker. Each worker grades in its own main thread, so a response past its deadline is a wrong answer
    there as here. A pool that cannot work is not a wrong answer: grading falls back to this process's main thread
    (said once on stderr), and outside the main thread that is an error.
    """
    golds = [str(gold) for gold in golds]
    verdicts = [_quick_verdict(extract_answer(r), g) for r, g in zip(responses, golds, strict=True)]
    slow = [i for i, verdict in enumerate(verdicts) if verdict is None]
    pairs = [(responses[i], golds[i]) for i in slow]
    workers = min(os.cpu_count() or 1, 8)
    in_main_thread = threading.current_thread() is threading.main_thread()
    slow_verdicts = None
    if pairs and _pool is not BROKEN and (not in_main_thread or (workers > 1 and len(pairs) > 2 * chunk_size)):
        slow_verdicts = _pool_verdicts(pairs, workers, chunk_size)
    if slow_verdicts is None:
        if not in_main_thread:
            raise RuntimeError(
                "cannot grade: the grading worker pool failed, and grading in this process needs the "
                "main thread (math-verify's timeouts use SIGALRM); call grade_batch from the main thread"
            )
        slow_verdicts = _slow_grade_all(pairs)
    for i, verdict in zip(slow, slow_verdicts):
        verdicts[i] = verdict
    return verdicts
