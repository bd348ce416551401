"""evaluate.py: the measuring instrument, on a toy preset and on hand-made result files."""

import json

import pytest
from click.testing import CliRunner
from conftest import needs_vllm

import evaluate
import infra
import rewards
import toy


def invoke(args):
    return CliRunner().invoke(evaluate.cli, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def toy_results(tmp_path_factory, toy_model):
    folder = tmp_path_factory.mktemp("eval")
    plain, forced = folder / "plain.json", folder / "forced.json"
    for out, prefix in ((plain, "none"), (forced, "python")):
        result = invoke(
            [
                "--model",
                toy_model,
                "--dataset",
                "toy",
                "--engine",
                "hf",
                "--out",
                str(out),
                "--prefix",
                prefix,
                "--max-new-tokens",
                "96",
            ]
        )
        assert result.exit_code == 0, result.output
    return json.loads(plain.read_text()), json.loads(forced.read_text())


def test_figures_agree_with_a_recount_of_the_saved_responses(toy_results):
    result, _ = toy_results
    records = result["responses"]
    assert result["n"] == len(records) == 500
    test = toy.dataset("test")
    assert [r["problem"] for r in records] == [p["problem"] for p in test]
    for record in records[:100]:  # each verdict is the grader's verdict on the saved response
        assert record["correct"] == rewards.grade(record["response"], record["answer"])
        assert record["has_code"] == rewards.has_code(record["response"])
        assert record["extracted"] == rewards.extract_answer(record["response"])
    code = [r for r in records if r["has_code"]]
    language = [r for r in records if not r["has_code"]]
    assert result["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 500)
    assert result["code_frequency"] == pytest.approx(len(code) / 500)
    assert result["accuracy_with_code"] == pytest.approx(sum(r["correct"] for r in code) / len(code))
    assert result["accuracy_without_code"] == pytest.approx(sum(r["correct"] for r in language) / len(language))
    assert result["boxed_fraction"] == pytest.approx(sum(r["extracted"] is not None for r in records) / 500)


def test_code_forcing_prefix_raises_code_frequency(toy_results):
    plain, forced = toy_results
    assert forced["code_frequency"] > plain["code_frequency"] + 0.2
    assert all(r["response"].startswith("Let's solve this using Python.") for r in forced["responses"])


def record(problem, correct, code):
    return {"problem": problem, "answer": "1", "response": "", "extracted": None, "correct": correct, "has_code": code}


def test_the_contaminated_variant_is_scored_on_its_seen_and_clean_halves_apart():
    test = toy.dataset("test")
    seen = {p["problem"] for p in toy.SEEN_PROBLEMS}
    texts = [f"$\\boxed{{{p['answer'] if p['problem'] in seen else 'none'}}}$" for p in test]  # right on the seen half
    result = evaluate.score(test, texts, 1, "toy:qwen-math-7b+contaminated")
    assert (result["accuracy"], result["accuracy_seen"], result["accuracy_clean"]) == (0.5, 1.0, 0.0)
    assert "accuracy_seen" in evaluate.summary_table(result, "contaminated").replace(" ", "_")
    assert "accuracy_seen" not in evaluate.score(test, texts, 1, "toy:qwen-math-7b")


def test_compare_by_hand(tmp_path):
    # 6 problems: p1 p2 Lang->Code gaining 1 each, p3 Code->Code gaining 1, p4 Lang->Lang losing 1, p5 Code->Lang
    # staying right, p6 Lang->Lang staying wrong. Total gain 2: shares Lang->Code 2/2, Code->Code 1/2, Lang->Lang -1/2.
    changes = {  # problem: (correct, has code) before -> after
        "p1": ((False, False), (True, True)),
        "p2": ((False, False), (True, True)),
        "p3": ((False, True), (True, True)),
        "p4": ((True, False), (False, False)),
        "p5": ((True, True), (True, False)),
        "p6": ((False, False), (False, False)),
    }
    before = [record(problem, *first) for problem, (first, _) in changes.items()]
    after = [record(problem, *second) for problem, (_, second) in changes.items()]
    (tmp_path / "a.json").write_text(json.dumps({"responses": before}))
    (tmp_path / "b.json").write_text(json.dumps({"responses": after}))
    result = evaluate.strategy_switching({"responses": before}, {"responses": after})
    groups = result["groups"]
    assert {g: groups[g]["count"] for g in groups} == {
        "Code->Code": 1,
        "Code->Lang": 1,
        "Lang->Code": 2,
        "Lang->Lang": 2,
    }
    assert groups["Lang->Code"]["share_of_gain"] == pytest.approx(2 / 2)
    assert groups["Code->Code"]["share_of_gain"] == pytest.approx(1 / 2)
    assert groups["Lang->Lang"]["share_of_gain"] == pytest.approx(-1 / 2)
    assert groups["Code->Lang"]["share_of_gain"] == pytest.approx(0)
    assert groups["Lang->Code"]["accuracy_before"] == 0 and groups["Lang->Code"]["accuracy_after"] == 1
    assert result["total_gain"] == pytest.approx(2 / 6)
    output = invoke(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]).output
    assert "Lang->Code" in output and "1.000" in output


def test_majority_labels_match_a_direct_count(toy_model, tmp_path):
    from collections import Counter

    import rlvr_min

    out = tmp_path / "labels.jsonl"
    result = invoke(
        [
            "labels",
            "--model",
            toy_model,
            "--dataset",
            "toy",
            "--samples",
            "8",
            "--limit",
            "12",
            "--engine",
            "hf",
            "--out",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the same samples (same seed), counted here directly
    config = rlvr_min.Config(model=toy_model, engine="hf", max_new_tokens=96, max_prompt_tokens=128)
    problems = toy.dataset("train")[:12]
    texts = evaluate.generate_responses(infra.load_generator(config), config, problems, 8, 1.0, "", "")
    expected = []
    for i, problem in enumerate(problems):
        counts = Counter(a.strip() for a in map(rewards.extract_answer, texts[i * 8 : (i + 1) * 8]) if a and a.strip())
        if counts:
            expected.append((problem["problem"], counts.most_common(1)[0][0], counts.most_common(1)[0][1]))
    assert [(r["problem"], r["label"], r["label_votes"]) for r in rows] == expected
    assert len(expected) == 12 and len({label for _, label, _ in expected}) > 1


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=[needs_vllm(), pytest.mark.slow])])
def test_checkpoints_of_a_run_are_evaluated_by_one_engine_as_each_alone(engine, tmp_path, toy_model):
    import rlvr_min

    run_dir = tmp_path / "run"
    args = "--steps 3 --prompts-per-step 8 --group-size 4 --mini-batches 4 --max-new-tokens 64 --eval-every 0"
    args = args.split() + ["--save-every", "1", "--lr", "1e-3", "--engine", "hf", "--out", str(run_dir)]
    assert CliRunner().invoke(rlvr_min.main, args, catch_exceptions=False).exit_code == 0
    result = invoke(["checkpoints", str(run_dir), "--engine", engine, "--limit", "50"])
    assert result.exit_code == 0, result.output
    points = json.loads((run_dir / "checkpoints.json").read_text())
    assert [p["step"] for p in points] == [0, 1, 2, 3]
    assert (run_dir / "checkpoints.png").stat().st_size > 1000
    # each checkpoint evaluated on its own, by a freshly loaded HF model: the same greedy answers with HF; with vLLM
    # within 5 of the 50 (its CPU kernels round differently, and after lr 1e-3 updates some answers nearly tie)
    tolerance = 0 if engine == "hf" else 0.1
    for point in points:
        config = evaluate.generation_config(point["model"], None, "hf", 0)
        alone = evaluate.run_evaluation(config, "toy", "", "", None, 50)
        assert abs(point["accuracy"] - alone["accuracy"]) <= tolerance, (point, alone["accuracy"])
        assert abs(point["code_frequency"] - alone["code_frequency"]) <= tolerance, (point, alone["code_frequency"])
    # lr 1e-3 moves the code habit far: an engine that kept the base model's weights would not
    assert abs(points[-1]["code_frequency"] - points[0]["code_frequency"]) > 2 * tolerance + 0.1, points


def test_incorrect_filter_keeps_only_wrong_labels():
    problems = [{"problem": "a", "answer": "3"}, {"problem": "b", "answer": "7"}]
    texts = ["\\boxed{3}", "\\boxed{3}", "\\boxed{8}", "\\boxed{8}"]
    kept = evaluate.majority_labels(problems, texts, 2, incorrect_only=True)
    assert [r["problem"] for r in kept] == ["b"] and kept[0]["label"] == "8"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "gsm9k"], "unknown dataset 'gsm9k'"),
    ],
)
def test_bad_input(args, message):
    result = CliRunner().invoke(evaluate.cli, args)
    assert result.exit_code != 0 and message in result.output


def test_missing_answer_names_file_and_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"problem": "x", "answer": "1"}\n\n{"problem": "y"}\n')
    result = CliRunner().invoke(evaluate.cli, ["--dataset", str(data)])
    assert result.exit_code != 0 and f"{data}, line 3: missing field answer" in result.output


def test_empty_dataset(tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("\n")
    result = CliRunner().invoke(evaluate.cli, ["--dataset", str(data)])
    assert result.exit_code != 0 and "is empty" in result.output


@pytest.mark.parametrize("name, samples", [("math500", 1), ("amc", 8)])
def test_benchmarks_follow_the_paper_protocol_from_a_local_copy(name, samples, toy_model, tmp_path):
    from conftest import SHARED_DATA, load_shared

    load_shared("math500.jsonl")  # skips politely where ../shared/data is absent
    out = tmp_path / "result.json"
    result = invoke(
        [
            "--model",
            toy_model,
            "--dataset",
            name,
            "--data-dir",
            str(SHARED_DATA),
            "--limit",
            "3",
            "--engine",
            "hf",
            "--max-new-tokens",
            "32",
            "--out",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["n"] == 3 and saved["samples_per_problem"] == samples and len(saved["responses"]) == 3 * samples
    assert f"pass_at_{samples}" in saved and "accuracy" in result.output
