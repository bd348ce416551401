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


def test_planted_shares_match_the_preset_on_the_test_split():
    for name, preset in toy.PRESETS.items():
        habits = toy.plant_habits(preset)
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


def test_the_cache_key_follows_the_code_not_its_prose():
    source = Path(toy.__file__).read_text()
    code = toy.code_of(source)
    prose = source.replace("# The style fork:", "# The fork of styles:").replace(
        '"""A row of the paper\'s Table 1', '"""One row of the paper\'s Table 1'
    )
    assert prose != source and toy.code_of(prose) == code  # a comment and a docstring edited: the same key
    changed = source.replace("FAR_SIDE_LOGIT = 2.0", "FAR_SIDE_LOGIT = 2.5")
    assert changed != source and toy.code_of(changed) != code  # a planted habit changed: a new key
    assert toy.model_dir(toy.Recipe("qwen-math-7b")) != toy.model_dir(toy.Recipe("qwen-math-7b", steps=1201))
    assert toy.model_dir(toy.Recipe("qwen-math-7b")) == toy.model_dir(toy.Recipe("qwen-math-7b"))


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


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(toy.PRESETS))
def test_preset_reproduces_its_table_1_row_within_5_points(preset):
    measured = measure(str(toy.build(preset)))
    target = toy.PRESETS[preset]
    print(preset, json.dumps(measured))
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
