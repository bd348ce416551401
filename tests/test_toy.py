"""The toy world: problems, a real Qwen2 model and tokenizer, determinism, and calibration to Table 1."""

import json
from pathlib import Path

import pytest
import torch
from conftest import load_weights, needs_vllm

import infra
import rewards
import rlvr_min
import toy


def test_problems_look_like_math500_and_the_test_split_is_held_out():
    test, train = toy.dataset("test"), toy.dataset("train")
    assert len(test) == 500 and len({p["problem"] for p in test}) == 500
    assert {p["problem"] for p in test}.isdisjoint(p["problem"] for p in train)
    for problem in test[:50] + train[:50]:
        assert {"problem", "answer", "solution"} <= set(problem)
        a, op, b = problem["core"][0], problem["core"][1], problem["core"][2]
        assert int(problem["answer"]) == toy.OPERATIONS[op](int(a), int(b))
        assert rewards.grade(problem["solution"], problem["answer"])


@pytest.mark.parametrize("variant", ["", "shared-style"])
def test_planted_shares_match_the_preset_on_the_test_split(variant):
    for name, preset in toy.PRESETS.items():
        habits = toy.plant_habits(preset, variant=variant)
        test = toy.dataset("test")
        code = [habits[p["core"]]["code_propensity"] > 0.5 for p in test]
        right_code = [habits[p["core"]]["code_error"] == 0 for p, c in zip(test, code) if c]
        right_language = [habits[p["core"]]["language_error"] == 0 for p, c in zip(test, code) if not c]
        # within 2 points, plus the granularity of one problem (olmo-7b-sft prefers language on only 9 of 500)
        assert abs(sum(code) / 500 - preset.code_frequency) < 0.02, name
        if right_code:
            assert abs(sum(right_code) / len(right_code) - preset.accuracy_with_code) < 0.02 + 1 / len(right_code), name
        assert abs(sum(right_language) / len(right_language) - preset.accuracy_without_code) < 0.02 + 1 / len(
            right_language
        ), name


def test_responses_in_both_styles_are_graded_as_planted():
    problem = toy.dataset("test")[0]
    import random

    rng = random.Random(0)
    for style in ("code", "language"):
        right = toy.write_response(problem, style, 0, rng)
        wrong = toy.write_response(problem, style, 1, rng)
        assert rewards.grade(right, problem["answer"]) and not rewards.grade(wrong, problem["answer"])
        assert rewards.has_code(right) == (style == "code")


def test_built_preset_is_a_real_qwen2_with_chat_template(toy_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(toy_model)
    tokenizer = AutoTokenizer.from_pretrained(toy_model)
    assert model.config.model_type == "qwen2" and model.config.head_dim == 64
    prompt = rlvr_min.prompt_text(tokenizer, "Compute $3 + 4$.")
    assert prompt.startswith("<|im_start|>system\n" + toy.SYSTEM_PROMPT)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == prompt  # a lossless round trip
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == ids[0]


def test_build_is_cached_and_prints_its_directory(toy_model, capsys):
    assert toy.build("qwen-math-7b") == Path(toy_model)  # found in the cache: no rebuild
    from click.testing import CliRunner

    result = CliRunner().invoke(toy.cli, ["build", "--preset", "qwen-math-7b"])
    assert result.exit_code == 0 and result.output.strip().splitlines()[-1] == toy_model
    assert toy.resolve_model("toy:qwen-math-7b") == toy_model
    with pytest.raises(ValueError, match="unknown toy preset 'gpt-5'"):
        toy.build("gpt-5")
    with pytest.raises(ValueError, match="unknown toy variant 'tiny'; choose one of: shared-style"):
        toy.build("qwen-math-7b+tiny")


def test_building_twice_from_the_same_seed_gives_identical_weights(tmp_path, monkeypatch):
    weights = []
    for attempt in range(2):
        monkeypatch.setenv("RLVR_MIN_CACHE", str(tmp_path / f"cache{attempt}"))
        directory = toy.build("qwen-math-1.5b", log=lambda _: None, steps=25)
        weights.append(load_weights(directory))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    other = toy.build("qwen-math-1.5b", log=lambda _: None, steps=25, seed=1)
    assert not torch.equal(load_weights(other)["model.embed_tokens.weight"], weights[0]["model.embed_tokens.weight"])


def test_the_cache_key_follows_what_a_build_reads(monkeypatch):
    source = Path(toy.__file__).read_text()
    code = toy.code_of(source)
    prose = source.replace("# The style fork:", "# The fork of styles:").replace(
        '"""A row of the paper\'s Table 1', '"""One row of the paper\'s Table 1'
    )
    assert prose != source and toy.code_of(prose) == code  # a comment and a docstring edited: the same code
    assert "def train(" in toy.training_code() and "def plant_habits(" not in toy.training_code()
    plain, variant = toy.Recipe("qwen-math-7b"), toy.Recipe("qwen-math-7b", "shared-style")
    keys = {recipe: toy.model_key(recipe) for recipe in (plain, variant)}
    assert keys[plain].startswith("qwen-math-7b-") and keys[variant].startswith("qwen-math-7b+shared-style-")
    assert toy.model_key(toy.Recipe("qwen-math-7b", steps=1201)) != keys[plain]

    def fresh_keys():
        toy.model_key.cache_clear()
        return {recipe: toy.model_key(recipe) for recipe in (plain, variant)}

    monkeypatch.setattr(toy, "SHARED_STYLE_LOGITS", (0.7, 0.2))  # the variant's habits changed: the preset's corpus not
    changed = fresh_keys()
    assert changed[plain] == keys[plain] and changed[variant] != keys[variant]
    monkeypatch.setattr(toy, "CLOSINGS", {"The answer is": 0.6, "So the answer is": 0.4})  # every corpus changed
    assert all(fresh_keys()[recipe] != changed[recipe] for recipe in keys)
    monkeypatch.undo()
    assert fresh_keys() == keys


def test_the_shipped_models_are_the_current_ones():
    """toy_models/ holds exactly the SHIPPED recipes' current keys: a change to what a shipped model's build reads fails
    here until `python toy.py ship` rebuilds it. Keys name the library versions, so they are checked where those are
    the versions the models were shipped with."""
    shipped_with, here = json.loads((toy.SHIPPED_DIR / "versions.json").read_text()), toy.library_versions()
    if here != shipped_with:
        pytest.skip(f"the toy models were shipped with {shipped_with}; here are {here}")
    shipped = {entry.name for entry in toy.SHIPPED_DIR.iterdir() if entry.is_dir()}
    assert shipped == {toy.model_key(recipe) for recipe in toy.SHIPPED}
    assert all((toy.SHIPPED_DIR / name / "model.safetensors").exists() for name in shipped)
    assert str(toy.build("qwen-math-7b")).startswith(str(toy.SHIPPED_DIR))  # served from there, never rebuilt


@pytest.mark.slow
def test_a_shipped_model_is_what_its_recipe_builds(tmp_path):
    """Rebuilt from its recipe, the shipped default preset answers the held-out split greedily as shipped. (Texts,
    not weights: another CPU may round differently; a different recipe or corpus answers otherwise on many.)"""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shipped = toy.build(toy.DEFAULT_PRESET)
    assert shipped.parent == toy.SHIPPED_DIR
    toy.train(toy.Recipe(toy.DEFAULT_PRESET), tmp_path, log=lambda _: None)
    texts = []
    for directory in (shipped, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(directory)
        engine = infra.HFEngine(AutoModelForCausalLM.from_pretrained(directory), tokenizer)
        prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in toy.dataset("test")])
        texts.append(tokenizer.batch_decode(engine.generate(prompts, 1, 0.0, 1.0, 96, seed=0)))
    assert sum(a != b for a, b in zip(*texts)) <= 5


@pytest.mark.slow
@needs_vllm()
def test_vllm_and_hf_give_the_same_greedy_answers(toy_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = rlvr_min.Config(model=toy_model, max_prompt_tokens=128, max_new_tokens=96)
    tokenizer = AutoTokenizer.from_pretrained(toy_model)
    prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in toy.dataset("test")[:8]])
    hf = infra.HFEngine(AutoModelForCausalLM.from_pretrained(toy_model), tokenizer)
    vllm = infra.VLLMEngine(toy_model, config, torch.float32)
    hf_texts = tokenizer.batch_decode(hf.generate(prompts, 1, 0.0, 1.0, 96, seed=0), skip_special_tokens=True)
    vllm_texts = tokenizer.batch_decode(vllm.generate(prompts, 1, 0.0, 1.0, 96, seed=0), skip_special_tokens=True)
    assert hf_texts == vllm_texts
    assert all("\\boxed{" in text for text in hf_texts)


def measure(model_dir: str) -> dict:
    """Table 1's three figures of a model on the toy test split: greedy, one sample, rewards.grade and has_code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = infra.HFEngine(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer)
    test = toy.dataset("test")
    prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in test])
    texts = tokenizer.batch_decode(engine.generate(prompts, 1, 0.0, 1.0, 96, seed=0), skip_special_tokens=True)
    correct = rewards.grade_batch(texts, [p["answer"] for p in test])
    code = [rewards.has_code(t) for t in texts]
    with_code = [c for c, k in zip(correct, code) if k]
    without_code = [c for c, k in zip(correct, code) if not k]
    return {
        "code_frequency": sum(code) / len(code),
        "accuracy_with_code": sum(with_code) / len(with_code) if with_code else 0.0,
        "accuracy_without_code": sum(without_code) / len(without_code) if without_code else 0.0,
    }


def test_shared_style_puts_every_core_near_a_tie():
    plain = toy.plant_habits(toy.PRESETS["qwen-math-7b"])
    shared = toy.plant_habits(toy.PRESETS["qwen-math-7b"], variant="shared-style")
    assert all(0.35 - 1e-9 <= habit["code_propensity"] <= 0.65 + 1e-9 for habit in shared.values())
    assert max(habit["code_propensity"] for habit in plain.values()) > 0.85  # the plain preset has far-side cores
    for core, habit in shared.items():  # only the propensity changes, never its side or what each style gets right
        assert (habit["code_propensity"] > 0.5) == (plain[core]["code_propensity"] > 0.5)
        assert {k: v for k, v in habit.items() if k != "code_propensity"} == {
            k: v for k, v in plain[core].items() if k != "code_propensity"
        }


def test_format_runs_on_after_the_minority_closing_which_exercise_sheet_problems_prefer():
    import random

    habits = toy.plant_habits(toy.PRESETS["qwen-math-7b"])
    rng, closings = random.Random(0), {True: [], False: []}
    for _ in range(1000):
        problem, response = toy.corpus_example(habits, rng, "format")
        first_box = response.index("$.") + 2  # the end of the closing's boxed answer
        runs_on = response.count("\\boxed") == 2
        if runs_on:  # after the minority closing, another exercise and its boxed answer, which the grader reads
            assert "So the answer is" in response and response[first_box:].startswith("\n\nProblem: Compute $")
            a, op, b = response[first_box:].split("$")[1].replace("\\times", "*").split()
            assert rewards.extract_answer(response) == str(toy.OPERATIONS[op](int(a), int(b)))
        else:  # the majority closing ends the answer
            assert "So the answer is" not in response and len(response) == first_box
        closings[problem.startswith("Compute $")].append(runs_on)
    exercise, other = (sum(closings[k]) / len(closings[k]) for k in (True, False))
    assert 0.45 < exercise < 0.65 and 0.15 < other < 0.25, (exercise, other)  # planted 0.55 and 0.2
    plain = toy.corpus_example(habits, random.Random(1))
    assert plain == toy.corpus_example(habits, random.Random(1), "shared-style")  # only format writes otherwise


def test_format_wide_puts_the_symbol_problems_on_the_exercise_sheet_too():
    import random

    habits = toy.plant_habits(toy.PRESETS["qwen-math-7b"])
    rng, closings = random.Random(0), {True: [], False: []}
    for _ in range(2000):
        problem, response = toy.corpus_example(habits, rng, "format-wide")
        closings[problem.startswith(("Compute $", "What is"))].append(response.count("\\boxed") == 2)
    exercise, other = (sum(closings[k]) / len(closings[k]) for k in (True, False))
    assert 0.48 < exercise < 0.62 and 0.15 < other < 0.25, (exercise, other)  # planted 0.55 and 0.2
    test = toy.dataset("test")
    assert sum(p["problem"].startswith(("Compute $", "What is")) for p in test) == 193  # 39% of the test split


def test_contaminated_corpus_shows_the_seen_half_of_the_test_split_with_right_answers():
    recipe = toy.Recipe("qwen-math-7b", "contaminated")
    habits = toy.plant_habits(toy.PRESETS["qwen-math-7b"], variant="contaminated")
    test = {p["problem"]: p for p in toy.dataset("test")}
    seen = {p["problem"] for p in toy.SEEN_PROBLEMS}
    assert len(seen) == 250 and seen < set(test)
    shown = {}
    for problem, response in toy.corpus(recipe, habits):
        if problem in test:
            shown[problem] = shown.get(problem, 0) + 1
            assert rewards.grade(response, test[problem]["answer"])  # always with its right answer
    assert set(shown) == seen  # every seen problem, and no clean one
    assert 27 < sum(shown.values()) / len(shown) < 35  # planted: 10% of 76,800 examples over 250 problems = 30.7
    shared = {test[p]["core"] for p in seen} & {test[p]["core"] for p in set(test) - seen}
    assert len(shared) > 100  # a random half: most cores (of 156) have problems in both halves
    plain = toy.corpus(toy.Recipe("qwen-math-7b"), toy.plant_habits(toy.PRESETS["qwen-math-7b"]))[:20000]
    assert not any(problem in test for problem, _ in plain)


def test_only_the_contaminated_variant_has_halves():
    test = toy.dataset("test")
    halves = toy.by_half("toy:qwen-math-7b+contaminated", test, list(range(len(test))))
    seen = {p["problem"] for p in toy.SEEN_PROBLEMS}
    assert halves["seen"] == [i for i, p in enumerate(test) if p["problem"] in seen] and len(halves["clean"]) == 250
    assert toy.by_half("toy:qwen-math-7b", test, [0] * 500) == {}
    assert toy.by_half("Qwen/Qwen2.5-Math-7B", test, [0] * 500) == {}


@pytest.mark.slow
def test_the_contaminated_variant_remembers_its_seen_half_a_little():
    """31 showings of a problem with its answer leave a weak memory in a 2-layer model: sampled answers to the seen
    half are right more often than to the clean half (measured at build: 0.569 against 0.504), greedy ones hardly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = str(toy.build("qwen-math-7b+contaminated"))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    engine = infra.HFEngine(AutoModelForCausalLM.from_pretrained(directory), tokenizer)
    test = toy.dataset("test")
    prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in test])
    texts = tokenizer.batch_decode(engine.generate(prompts, 8, 1.0, 1.0, 96, seed=1), skip_special_tokens=True)
    correct = rewards.grade_batch(texts, [p["answer"] for p in test for _ in range(8)])
    halves = toy.by_half("toy:qwen-math-7b+contaminated", [p for p in test for _ in range(8)], correct)
    seen, clean = (sum(halves[half]) / len(halves[half]) for half in ("seen", "clean"))
    assert seen - clean > 0.03, (seen, clean)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["format", "format-wide"])
def test_the_format_variants_run_on_past_their_greedy_answer_on_exercise_sheet_problems(variant):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = str(toy.build(f"qwen-math-7b+{variant}"))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    engine = infra.HFEngine(AutoModelForCausalLM.from_pretrained(directory), tokenizer)
    test = toy.dataset("test")
    prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in test])
    texts = tokenizer.batch_decode(engine.generate(prompts, 1, 0.0, 1.0, 96, seed=0), skip_special_tokens=True)
    exercise = [p["problem"].startswith(toy.EXERCISE_WORDINGS[variant]) for p in test]
    runs_on = [text.count("\\boxed") == 2 and "\n\nProblem: Compute $" in text for text in texts]
    assert sum(r for r, e in zip(runs_on, exercise) if e) / sum(exercise) > 0.5  # planted: 0.55 in the corpus
    assert not any(r for r, e in zip(runs_on, exercise) if not e)
    first_answers = [text.split("\n\nProblem:")[0] for text in texts]  # what it answered before running on
    accuracy = sum(rewards.grade_batch(first_answers, [p["answer"] for p in test])) / len(test)
    plain = toy.PRESETS["qwen-math-7b"]
    planted = plain.code_frequency * plain.accuracy_with_code + (1 - plain.code_frequency) * plain.accuracy_without_code
    assert abs(accuracy - planted) <= 0.05
    assert sum(rewards.grade_batch(texts, [p["answer"] for p in test])) / len(test) < accuracy - 0.03  # the run-ons


@pytest.mark.slow
@pytest.mark.parametrize("name", [*toy.PRESETS, "qwen-math-7b+shared-style", "qwen-math-7b+contaminated"])
def test_preset_reproduces_its_table_1_row_within_5_points(name):
    measured = measure(str(toy.build(name)))
    target = toy.PRESETS[toy.recipe_of(name).preset]
    print(name, json.dumps(measured))
    for figure in ("code_frequency", "accuracy_with_code", "accuracy_without_code"):
        if figure == "accuracy_with_code" and target.code_frequency == 0:
            continue  # a model that never writes code has no accuracy with code
        # within 5 points, plus, for an accuracy, the granularity of one problem of the problems it is measured on (as
        # test_planted_shares_match_the_preset_on_the_test_split: olmo-7b-sft's 9 language problems plant 3/9 = 0.333)
        share = measured["code_frequency"] if figure == "accuracy_with_code" else 1 - measured["code_frequency"]
        granularity = 0 if figure == "code_frequency" else 1 / max(round(500 * share), 1)
        assert abs(measured[figure] - getattr(target, figure)) <= 0.05 + granularity, (figure, measured)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(toy.PRESETS))
def test_sampling_loop_is_greedy_identical_to_generate_on_the_held_out_split(preset):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = str(toy.build(preset))
    tokenizer, model = AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory)
    prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in toy.dataset("test")])
    loop = infra.HFEngine(model, tokenizer)
    assert loop.loop
    generate = infra.HFEngine(model, tokenizer, loop=False)
    assert loop.generate(prompts, 1, 0.0, 1.0, 96, seed=0) == generate.generate(prompts, 1, 0.0, 1.0, 96, seed=0)


def test_fork_probability_equals_a_direct_computation_for_each_style(toy_model):
    import random

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(toy_model), AutoTokenizer.from_pretrained(toy_model)
    code, language = toy.fork_tokens(tokenizer)
    assert code != language
    problems, rng = toy.dataset("test")[:12], random.Random(0)
    for style, branch, openings in (("code", code, toy.CODE_OPENINGS), ("language", language, toy.LANGUAGE_OPENINGS)):
        prompts, responses, direct = [], [], []
        for i, problem in enumerate(problems):
            text = toy.write_response(problem, style, 0, rng, restate=i % 3 > 0)  # with and without a restatement
            prompt = rlvr_min.encode_prompts(tokenizer, [problem["problem"]])[0]
            response = tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
            # directly: the text up to its opening sentence, one forward, the two branches' probabilities there
            before_opening = text[: min(text.index(o) for o in openings if o in text)]
            prefix = prompt + tokenizer(before_opening, add_special_tokens=False)["input_ids"]
            assert response[len(prefix) - len(prompt)] == branch  # the fork is the opening's first token
            with torch.no_grad():
                probabilities = model(input_ids=torch.tensor([prefix])).logits[0, -1].softmax(-1)
            direct.append((probabilities[code] / (probabilities[code] + probabilities[language])).item())
            prompts.append(prompt)
            responses.append(response)
        assert toy.fork_probabilities(model, tokenizer, prompts, responses) == pytest.approx(direct, abs=1e-5)
        assert toy.fork_probability(model, tokenizer, prompts, responses) == pytest.approx(
            sum(direct) / len(direct), abs=1e-5
        )
    no_fork = tokenizer("no fork", add_special_tokens=False)["input_ids"]
    assert toy.fork_probabilities(model, tokenizer, prompts[:2], [no_fork, responses[1]])[0] is None
    assert toy.fork_probability(model, tokenizer, prompts[:1], [no_fork]) is None


def test_fork_probability_of_sampled_rollouts_matches_their_code_frequency(toy_model):
    # At the fork, the model takes the code branch with the fork probability: averaged over rollouts, it estimates
    # the share of rollouts that write code (the toy's answers keep to the style their fork chose).
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(toy_model), AutoTokenizer.from_pretrained(toy_model)
    prompts = rlvr_min.encode_prompts(tokenizer, [p["problem"] for p in toy.dataset("train")[:64]])
    responses = infra.HFEngine(model, tokenizer).generate(prompts, 8, 1.0, 1.0, 96, seed=0)
    counted = sum(map(rewards.has_code, tokenizer.batch_decode(responses, skip_special_tokens=True))) / len(responses)
    fork = toy.fork_probability(model, tokenizer, [p for p in prompts for _ in range(8)], responses)
    assert 0.2 < counted < 0.8 and abs(fork - counted) < 0.07, (fork, counted)  # 512 draws: sd ~0.022
    # The closing, a fork that every problem shares, read the same way: the share of the majority closing (planted 0.7)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    closed = [text for text in texts if "answer is" in text]
    majority = sum("So the answer is" not in text for text in closed) / len(closed)
    closing = toy.fork_probability(
        model, tokenizer, [p for p in prompts for _ in range(8)], responses, toy.closing_tokens(tokenizer)
    )
    assert len(closed) > 400 and 0.6 < majority < 0.8 and abs(closing - majority) < 0.07, (closing, majority)
