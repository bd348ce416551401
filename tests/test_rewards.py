import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from rewards import Rollouts, compute_rewards, extract_answer, grade, has_code


# ------------------------------------------------------------------------------------------------- extract_answer
@pytest.mark.parametrize(
    "response, expected",
    [
        ("so \\boxed{5}.", "5"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\fbox{7}", "7"),
        ("\\boxed{a} and \\fbox{b}", "b"),
        ("\\boxed {x^{2}}", "x^{2}"),
        ("\\boxed{}", ""),
        ("no box here", None),
        ("\\boxed{unclosed", None),
        ("\\boxed{3} and later \\boxed{unclosed", "3"),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


# ------------------------------------------------------------------------------------------------- grade
@pytest.mark.parametrize(
    "gold, predicted",
    [
        ("70", "070"),
        ("070", "70"),
        ("27", "27.0"),
        ("27.0", "27"),
        ("0.5", "\\frac12"),
        ("\\frac12", "0.5"),
        ("10000", "10,000"),
        ("10,000", "10000"),
        ("5", "x = 5"),
        ("5", "5 \\text{ cm}"),
        ("C", "\\text{(C)}"),
        ("\\text{(C)}", "C"),
        ("12.8", "\\frac{64}{5}"),
    ],
)
def test_grade_equivalences(gold, predicted):
    assert grade(f"The answer is \\boxed{{{predicted}}}.", gold)


@pytest.mark.parametrize(
    "gold, predicted",
    [
        ("(1,2)", "[1,2]"),
        ("[1,2]", "(1,2)"),
        ("27", "0.27"),
        ("0.27", "27"),
        ("3.14", "\\pi"),
        ("\\pi", "3.14"),
        ("\\text{east}", "\\text{west}"),
        ("5", "6"),
        ("-3", "3"),
    ],
)
def test_grade_differences(gold, predicted):
    assert not grade(f"The answer is \\boxed{{{predicted}}}.", gold)


def test_grade_takes_the_last_box_and_falls_back_without_one():
    assert grade("first \\boxed{3}, finally \\boxed{4}", "4")
    assert not grade("first \\boxed{4}, finally \\boxed{3}", "4")
    assert grade("The final answer is $\\frac{3}{4}$", "0.75")  # math-verify's own extraction
    assert not grade("I do not know.", "4")


def test_amc_float_gold():
    assert grade("\\boxed{27}", 27.0)


def test_every_math500_solution_grades_correct(math500):
    wrong = [row["unique_id"] for row in math500 if not grade(row["solution"], row["answer"])]
    assert wrong == []


def test_math_verify_alone_agrees_with_the_exact_match_path(math500):
    # The cheap path says "equal" for identical strings; math-verify must say so too on every MATH-500 answer.
    disagree = [
        row["answer"] for row in math500 if not rewards._math_verify_equal(f"\\boxed{{{row['answer']}}}", row["answer"])
    ]
    assert disagree == []


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_integer_path_agrees_with_math_verify(a, b, zeros):
    answer = "0" * zeros + str(abs(a)) if a >= 0 else str(a)
    assert rewards._quick_verdict(answer, str(b)) == rewards._math_verify_equal(f"\\boxed{{{answer}}}", str(b))


def test_solutions_against_other_answers_are_wrong(math500):
    pairs = [
        (row["solution"], other["answer"])
        for row, other in zip(math500, math500[1:] + math500[:1])
        if other["answer"].strip() != row["answer"].strip()
    ]
    verdicts = rewards.grade_batch([s for s, _ in pairs], [a for _, a in pairs])
    assert sum(verdicts) <= 0.01 * len(pairs)


def test_grade_batch_equals_grade_one_by_one(math500):
    rows = math500[:80]
    golds = [r["answer"] for r in rows[1:]] + [rows[0]["answer"]]
    responses = [r["solution"] for r in rows]
    assert rewards.grade_batch(responses, golds) == [grade(r, g) for r, g in zip(responses, golds)]


def test_grade_from_another_thread_uses_a_worker():
    import threading

    results = []
    thread = threading.Thread(
        target=lambda: results.append((grade("\\boxed{\\frac{1}{2}}", "0.5"), grade("\\boxed{2}", "0.5")))
    )
    thread.start()
    thread.join(60)
    assert results == [(True, False)]


# ------------------------------------------------------------------------------------------------- robustness
latex_pieces = st.sampled_from(
    [
        "\\boxed{",
        "\\fbox{",
        "{",
        "}",
        "\\frac",
        "^",
        "_",
        "\\sqrt",
        "(",
        ")",
        "[",
        "]",
        "=",
        ",",
        "\\text{",
        "x",
        "1",
        "0",
        ".",
        "\\pi",
        "\\infty",
        " ",
        "$",
        "\\\\",
        "\\left(",
        "\\right)",
    ]
)


@given(st.one_of(st.text(max_size=300), st.lists(latex_pieces, max_size=80).map("".join)), st.text(max_size=20))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_grade_never_raises_and_respects_the_timeout(response, gold):
    start = time.perf_counter()
    assert grade(response, gold) in (True, False)
    # a parse and each comparison are bounded by the timeout; a handful of comparisons at most
    assert time.perf_counter() - start < 2 * rewards.GRADE_TIMEOUT_SECONDS + 1


@pytest.mark.parametrize(
    "response",
    [
        "\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}",
        "\\boxed{10^{10^{100}}}",
        "\\boxed{100!!!}",
        "x" * 200_000 + "\\boxed{2}",
        "\\boxed{(" * 2000,
        "\\sqrt{" * 500 + "2" + "}" * 500,
    ],
)
def test_pathological_inputs_are_wrong_and_bounded(response):
    start = time.perf_counter()
    assert grade(response, "5") is False
    assert time.perf_counter() - start < 2 * rewards.GRADE_TIMEOUT_SECONDS + 1


# ------------------------------------------------------------------------------------------------- rewards
def rollouts(responses, answers=None, **kw):
    return Rollouts(responses=responses, answers=answers or ["1"] * len(responses), **kw)


def test_ground_truth():
    assert compute_rewards("ground_truth", rollouts(["\\boxed{1}", "\\boxed{2}", "none"])) == [1.0, 0.0, 0.0]


def test_format():
    responses = ["\\boxed{wrong but boxed}", "\\boxed{}", "\\boxed{ }", "no box", "\\boxed{1} then \\boxed{}"]
    assert compute_rewards("format", rollouts(responses)) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_python_and_has_code():
    responses = ["```python\nprint(1)\n```", "I use PYTHON", "Pythonic", "plain words"]
    assert [has_code(r) for r in responses] == [True, True, True, False]
    assert compute_rewards("python", rollouts(responses)) == [1.0, 1.0, 1.0, 0.0]


def test_no_repetition():
    unit = "abcdefghij"  # 10 characters
    rng = random.Random(0)
    long_unit = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(257))
    responses = [unit * 10, unit * 9 + "x", "ab" * 200, long_unit[:256] * 10, long_unit * 10]
    # "ab" * 200 repeats the 12-character "abababababab"; a 257-character unit is too long to count
    assert compute_rewards("no_repetition", rollouts(responses)) == [0.0, 1.0, 0.0, 0.0, 1.0]


@given(
    st.lists(st.sampled_from(["ab", "abc", "x", "abcdefghij", "0123456789a", "\n", " "]), max_size=60).map("".join),
    st.integers(1, 30),
)
@settings(max_examples=200, deadline=None)
def test_has_repetition_matches_its_regex_definition(text, copies):
    import re

    for candidate in (text, text * copies, "q" + text[: len(text) // 2] * copies + "z"):
        definition = re.search(r"(.{10,256}?)\1{9,}", candidate, re.DOTALL) is not None
        assert rewards.has_repetition(candidate) == definition


def test_label_rewards_grade_against_the_label_column():
    batch = rollouts(["\\boxed{7}", "\\boxed{1}"], answers=["1", "1"], labels=["7", "7"])
    assert compute_rewards("majority", batch) == [1.0, 0.0]
    assert compute_rewards("incorrect", batch) == [1.0, 0.0]


def test_ttrl_votes_within_each_group():
    responses = r"\boxed{3} \boxed{3} \boxed{4} none \boxed{9} \boxed{8} \boxed{8} \boxed{08}".split()
    assert compute_rewards("ttrl", rollouts(responses, group_size=4)) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert compute_rewards("ttrl", rollouts(["none", "none"], group_size=2)) == [0.0, 0.0]


def test_without_python_zeroes_responses_that_mention_python():
    responses = ["```python\n```\\boxed{1}", "\\boxed{1}", "\\boxed{2}"]
    assert compute_rewards("ground_truth_without_python", rollouts(responses)) == [0.0, 1.0, 0.0]
    assert compute_rewards("format without python", rollouts(responses)) == [0.0, 1.0, 1.0]


def test_random_mean_is_gamma_seeded_and_independent_of_text():
    for gamma in (0.0, 0.3, 0.5, 0.7, 1.0):
        values = compute_rewards("random", rollouts(["x"] * 20000, gamma=gamma, rng=random.Random(0)))
        assert abs(sum(values) / len(values) - gamma) < 0.015
    a = compute_rewards("random", rollouts(["\\boxed{1}"] * 500, rng=random.Random(7)))
    b = compute_rewards("random", rollouts([f"text {i} python" for i in range(500)], rng=random.Random(7)))
    c = compute_rewards("random", rollouts(["\\boxed{1}"] * 500, rng=random.Random(8)))
    assert a == b  # the same seed gives the same rewards, whatever the responses say
    assert a != c


@pytest.mark.parametrize("name", rewards.reward_names())
def test_every_reward_gives_one_number_in_0_1_per_response(name):
    batch = rollouts(
        ["\\boxed{1}", "python \\boxed{2}", "", "\\boxed{1}"], labels=["1"] * 4, group_size=2, rng=random.Random(0)
    )
    values = compute_rewards(name, batch)
    assert len(values) == 4 and all(v in (0.0, 1.0) for v in values)


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: rewards.check_reward("accuracy"), "unknown reward 'accuracy'"),
        (lambda: rewards.check_reward("random", gamma=1.5), "gamma must lie in [0, 1]"),
        (lambda: rewards.check_reward("random", gamma=-0.1), "gamma must lie in [0, 1]"),
        (lambda: rewards.check_reward("majority", columns={"problem", "answer"}), "'label' column"),
        (lambda: rewards.check_reward("incorrect_without_python", columns={"problem", "answer"}), "'label' column"),
        (lambda: compute_rewards("majority", rollouts(["\\boxed{1}"])), "'label' column"),
    ],
)
def test_bad_reward_configurations_fail_clearly(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        call()


def test_one_shot_problem_is_graded_by_its_answer():
    assert len(rewards.ONE_SHOT) == 1 and "sail" in rewards.ONE_SHOT[0]["problem"]
    assert grade("so $V = \\boxed{12.8}$", rewards.ONE_SHOT[0]["answer"])
    assert grade("\\boxed{\\frac{64}{5}}", rewards.ONE_SHOT[0]["answer"])


# ------------------------------------------------------------------------------------------------- grading pool
# A batch whose every response needs math-verify (none is settled by the exact-match path), two of them pathological.
MIXED = [
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\frac{2}{4}}", "\\frac12"),
    ("\\boxed{x = 5}", "5"),
    ("\\boxed{27.0}", "27"),
    ("\\boxed{5 \\text{ cm}}", "5"),
    ("\\boxed{\\frac{1}{3}}", "0.5"),
    ("\\boxed{2\\pi}", "6.28"),
    ("\\boxed{\\sqrt{4}}", "2"),
    ("\\boxed{10^{10^{100}}}", "5"),
    ("\\sqrt{" * 500 + "2" + "}" * 500, "5"),
    ("\\boxed{(1, 2)}", "(1,2)"),
    ("\\boxed{070}", "70"),
]
GRADE_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import rewards
if __name__ == "__main__":  # as any script that starts processes must (the workers import it)
    pairs = json.loads({pairs!r})
    responses, golds = [r for r, _ in pairs], [g for _, g in pairs]
    print(json.dumps([rewards.grade_batch(responses, golds, chunk_size=2) for _ in range(2)]))
"""


@pytest.fixture(scope="module")
def one_by_one():
    return [grade(r, g) for r, g in MIXED]  # each alone, in this process's main thread


def grade_script():
    import json
    from pathlib import Path

    return GRADE_SCRIPT.format(root=str(Path(__file__).resolve().parent.parent), pairs=json.dumps(MIXED))


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_batch_grading_from_a_script_file_or_standard_input_matches_one_by_one(how, one_by_one, tmp_path):
    import json
    import subprocess
    import sys

    script = tmp_path / "grade.py"
    script.write_text(grade_script())
    if how == "file":
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    else:  # forkserver workers cannot re-import a main module read from stdin: they die at start
        run = subprocess.run(
            [sys.executable, "-"], input=script.read_text(), capture_output=True, text=True, timeout=300
        )
    first, second = json.loads(run.stdout.strip().splitlines()[-1])
    assert first == second == one_by_one and True in one_by_one and False in one_by_one
    assert run.stderr.count("grading worker pool failed") == (1 if how == "stdin" else 0), run.stderr


def test_batch_grading_from_a_notebook_kernel_matches_one_by_one(one_by_one):
    import json

    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(grade_script())])
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    stdout = "".join(o.get("text", "") for o in notebook.cells[0].outputs if o.get("name") == "stdout")
    first, second = json.loads(stdout.strip().splitlines()[-1])
    assert first == second == one_by_one


def test_batch_grading_from_another_thread_matches_one_by_one(one_by_one):
    import threading

    responses, golds = [r for r, _ in MIXED], [g for _, g in MIXED]
    results = []
    thread = threading.Thread(target=lambda: results.append(rewards.grade_batch(responses, golds, chunk_size=2)))
    thread.start()
    thread.join(300)
    assert results == [one_by_one]


def test_a_pool_whose_workers_crash_at_start_falls_back_and_says_so_once(one_by_one, monkeypatch, capsys):
    import functools
    import os
    import threading

    monkeypatch.setattr(rewards, "_worker_ready", functools.partial(os._exit, 3))  # every worker dies at start
    monkeypatch.setattr(rewards, "_pool", None)
    responses, golds = [r for r, _ in MIXED], [g for _, g in MIXED]
    assert rewards.grade_batch(responses, golds, chunk_size=2) == one_by_one  # in this process's main thread
    assert rewards.grade_batch(responses, golds, chunk_size=2) == one_by_one
    assert capsys.readouterr().err.count("grading worker pool failed") == 1
    # outside the main thread, where there is no in-process fallback: an error naming the cause, not all False
    monkeypatch.setattr(rewards, "_pool", None)
    errors = []

    def grade_in_thread():
        try:
            rewards.grade_batch(responses, golds, chunk_size=2)
        except RuntimeError as error:
            errors.append(str(error))

    thread = threading.Thread(target=grade_in_thread)
    thread.start()
    thread.join(300)
    assert len(errors) == 1 and "grading worker pool failed" in errors[0] and "main thread" in errors[0]
