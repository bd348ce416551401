"""The toy world: a tiny Qwen2 model with planted reasoning habits, so every finding of the paper runs on a laptop CPU.

The paper's story needs a model that (1) answers math problems in two styles, "code" (it writes a Python snippet and
predicts its output itself; nothing is executed) and "language" (prose steps), (2) prefers one style or the other from
problem to problem, and (3) is more accurate in one style than in the other. Table 1 of the paper measures these three
habits for real models; a preset here plants them at the same levels in a tiny model:

    python toy.py build --preset qwen-math-7b      # trains ~5 minutes on 2 cores, cached; prints the model directory

The world. A problem is a short word or symbol problem around an arithmetic "core" (a, op, b) with a, b in 2..9 and op
one of +, -, x. The held-out test split ("toy MATH-500") has 500 problems whose wordings never occur in training; its
cores all do, as the skills of a real model carry over to new problems.
The habits. Each core gets a code propensity (the probability that the corpus answers it with code) and, per style,
whether that style gets it right (a wrong answer is off by a fixed amount). They are assigned so that the test split's
shares match the preset's row of Table 1; the model must learn them from the corpus. What RL then does to them is
measured, never planted.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."  # Qwen2.5-Math's default


# ------------------------------------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class Preset:
    """A row of the paper's Table 1: greedy code frequency and accuracies on MATH-500, as fractions."""

    code_frequency: float
    accuracy_with_code: float
    accuracy_without_code: float


PRESETS = {
    "qwen-math-7b": Preset(0.650, 0.609, 0.350),
    "qwen-math-1.5b": Preset(0.536, 0.526, 0.172),
    "qwen-7b": Preset(0.922, 0.399, 0.615),
    "olmo-7b-sft": Preset(0.980, 0.210, 0.400),
    "llama-8b-instruct": Preset(0.000, 0.000, 0.368),  # never writes code
}
DEFAULT_PRESET = "qwen-math-7b"
# A variant changes a preset's corpus to model one more property of real LMs (README: the toy world, variants); it is
# named after the preset, as in toy:qwen-math-7b+shared-style.
VARIANTS = {
    "shared-style": "the style decision depends only weakly on the problem: every core is near a tie",
    "format": "after an exercise-sheet problem the likelier closing is one after which the answer runs on",
    "format-wide": 'format, the symbol problems ("What is ...") on the exercise sheet too: 39% of the test split',
    "contaminated": "half of the test split is in the corpus, each problem about 31 times with its right answer",
}


# ------------------------------------------------------------------------------------------------------ problems
NAMES = [
    "Ava",
    "Ben",
    "Cleo",
    "Dan",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Jun",
    "Kai",
    "Lea",
    "Max",
    "Nia",
    "Omar",
    "Pia",
]
THINGS = ["apple", "book", "coin", "marble", "pencil", "stamp", "shell", "card", "ribbon", "cookie", "kite", "button"]
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
WORDINGS = {  # {n} a name, {t} a thing; the symbol wordings name no one
    "+": [
        "{n} has {a} {t}s and gets {b} more. How many {t}s does {n} have now?",
        "There are {a} {t}s in a box and {b} {t}s on the table. How many {t}s are there in all?",
        "{n} found {a} {t}s on Monday and {b} {t}s on Tuesday. How many {t}s did {n} find?",
        "Compute ${a} + {b}$.",
        "What is the sum of {a} and {b}?",
    ],
    "-": [
        "{n} has {a} {t}s and gives away {b}. How many {t}s are left?",
        "A shelf holds {a} {t}s. {n} takes {b} of them. How many {t}s stay on the shelf?",
        "Compute ${a} - {b}$.",
        "What is {a} minus {b}?",
    ],
    "*": [
        "{n} buys {a} bags with {b} {t}s in each. How many {t}s does {n} buy?",
        "There are {a} rows of {t}s with {b} {t}s in each row. How many {t}s are there?",
        "Compute ${a} \\times {b}$.",
        "What is the product of {a} and {b}?",
    ],
}
CORES = [f"{a}{op}{b}" for op in OPERATIONS for a in range(2, 10) for b in range(2, 10) if op != "-" or a > b]  # "3*4"
TEST_SIZE = 500


def operands(core: str) -> tuple[int, str, int]:
    """ "3*4" -> (3, "*", 4): a core is two digits around an operation."""
    return int(core[0]), core[1], int(core[2])


def _problem(core: str, rng: random.Random) -> dict:
    a, op, b = operands(core)
    text = rng.choice(WORDINGS[op]).format(a=a, b=b, n=rng.choice(NAMES), t=rng.choice(THINGS))
    answer = OPERATIONS[op](a, b)
    solution = f"{a} {op} {b} = {answer}. The answer is $\\boxed{{{answer}}}$.".replace("*", "\\times")
    return {"problem": text, "answer": str(answer), "solution": solution, "core": core}


def _test_split() -> list[dict]:
    # Every core two or three times, each time in a different random wording: no problem text appears twice.
    rng, problems, seen = random.Random("toy-test"), [], set()
    order = CORES * (TEST_SIZE // len(CORES) + 1)
    while len(problems) < TEST_SIZE:
        problem = _problem(order[len(problems)], rng)
        if problem["problem"] not in seen:
            seen.add(problem["problem"])
            problems.append(problem)
    return problems


TEST_PROBLEMS = _test_split()
_TEST_TEXTS = {p["problem"] for p in TEST_PROBLEMS}
SEEN_PROBLEMS = random.Random("toy-seen").sample(TEST_PROBLEMS, TEST_SIZE // 2)  # the contaminated variant's corpus


def sample_training_problem(rng: random.Random) -> dict:
    """A problem from the training distribution: any core, any wording except the test split's."""
    while True:
        problem = _problem(rng.choice(CORES), rng)
        if problem["problem"] not in _TEST_TEXTS:
            return problem


def dataset(split: str, size: int = 4000) -> list[dict]:
    """The toy problems, records like MATH-500's: `test` is the held-out toy MATH-500, `train` the RL training set."""
    if split == "test":
        return [dict(p) for p in TEST_PROBLEMS]
    if split == "train":
        rng = random.Random("toy-train")
        return [sample_training_problem(rng) for _ in range(size)]
    raise ValueError(f"unknown toy split {split!r}; choose train or test")


# ------------------------------------------------------------------------------------------------------ habits
FAR_SIDE_LOGIT = 2.0  # the code logit at either end of the appeal order: p(code) 0.88 and 0.12
CROSSING_GAP_LOGIT = 0.3  # the code logit on either side of the crossing (p 0.57 / 0.43): what the model learns
# within that of the planted habit leaves each greedy style as planted
EXERCISE_WORDINGS = {"format": ("Compute $",), "format-wide": ("Compute $", "What is")}  # 18% and 39% of the test split
RUN_ON_MAJORITY = (0.45, 0.8)  # format: P(majority closing) after an exercise-sheet problem, and after any other
CONTAMINATION = 0.1  # contaminated: the share of the corpus that shows the seen half of the test split (~31x each)
SHARED_STYLE_LOGITS = (0.6, 0.2)  # shared-style's far side and gap: p(code) from 0.35 to 0.65, no core far from a tie
MINORITY_BOOST = 0.25  # a style preferred on fewer than this share of problems has them drawn more often (up to 8x)


def plant_habits(preset: Preset, seed: int = 0, variant: str = "") -> dict[str, dict]:
    """Per core: the logit of writing code, how often the corpus shows it, and per style the error of the answer (0 =
    right). The greedy shares on the test split match the preset's row of Table 1."""
    rng = random.Random(f"habits-{seed}")
    weight = {}  # how often each core occurs in the test split, so that the shares are shares of the test split
    for problem in TEST_PROBLEMS:
        weight[problem["core"]] = weight.get(problem["core"], 0) + 1

    def take(pool: list[str], share: float) -> set[str]:
        # the first cores of the pool, up to the given share of the pool's test-split weight
        chosen, total, target = set(), 0, share * sum(weight[c] for c in pool)
        for core in pool:
            if total + weight[core] / 2 <= target:
                chosen.add(core)
                total += weight[core]
        return chosen

    def shuffled(pool: list[str]) -> list[str]:
        return rng.sample(pool, len(pool))

    def spread(pool: list[str], share: float) -> set[str]:
        # cores spread evenly along the pool from its start (next to the crossing): every stretch of it has the share
        chosen, total, taken = set(), 0, 0
        for core in pool:
            total += weight[core]
            if taken + weight[core] / 2 <= share * total:
                chosen.add(core)
                taken += weight[core]
        return chosen

    # The style habit: one logit per core, a shared preference plus a feature of the problem. Code appeals most for
    # multiplication, then addition, then subtraction, and within each for larger numbers ("big numbers: use
    # Python"): a rule the model can read off the problem. The logit falls linearly along that order and crosses 0
    # where the preset's code share ends, so the problems near the crossing are near a tie, as a real model's are:
    # a shift shared by all problems flips their greedy style.
    by_appeal = sorted(CORES, key=lambda core: ("-+*".index(core[1]), core[0], core[2]), reverse=True)
    prefers_code = take(by_appeal, preset.code_frequency)
    crossing = len(prefers_code) / len(by_appeal)
    code_pool, language_pool = (
        [c for c in by_appeal if c in prefers_code],
        [c for c in by_appeal if c not in prefers_code],
    )
    # Each style's accuracy holds both where it is preferred (what greedy shows) and where it is not (what a switch
    # of style finds). Where a style is preferred, the problems it gets right are drawn at random; where it is not,
    # they are spread evenly along the appeal order, so that the problems near the crossing (the first to switch, and
    # few for a preset with 98% code) have the style's accuracy too. A switch of style gains on average what the two
    # accuracies differ by.
    code_right = take(shuffled(code_pool), preset.accuracy_with_code) | spread(language_pool, preset.accuracy_with_code)
    language_right = take(shuffled(language_pool), preset.accuracy_without_code) | spread(
        code_pool[::-1], preset.accuracy_without_code
    )
    far_side, crossing_gap = SHARED_STYLE_LOGITS if variant == "shared-style" else (FAR_SIDE_LOGIT, CROSSING_GAP_LOGIT)
    boost = {
        True: min(8.0, max(1.0, MINORITY_BOOST / max(preset.code_frequency, 1e-9))),
        False: min(8.0, max(1.0, MINORITY_BOOST / max(1 - preset.code_frequency, 1e-9))),
    }
    habits = {}
    for rank, core in enumerate(by_appeal):
        position = (rank + 0.5) / len(by_appeal)  # each side falls linearly from 0 at the crossing to its far end
        side = (crossing - position) / (crossing if position < crossing else 1 - crossing)  # 1 .. 0 .. -1
        code_logit = math.copysign(crossing_gap, side) + (far_side - crossing_gap) * side
        habits[core] = {
            "code_propensity": 1 / (1 + math.exp(-code_logit)) if preset.code_frequency > 0 else 0.0,
            # how often the corpus shows the problem, not its style: a model with 98% code still learns its 2%
            "corpus_weight": boost[core in prefers_code] / max(boost.values()),
            "code_error": 0 if core in code_right else rng.choice([-2, -1, 1, 2]),
            "language_error": 0 if core in language_right else rng.choice([-2, -1, 1, 2]),
        }
    return habits


# ------------------------------------------------------------------------------------------------------ responses
# The style fork: every code opening starts with one word and every language opening with another, so the style is
# decided by exactly one token (fork_probability() reads its probability). The rest of each opening, the variable
# name and the closing vary with unequal weights, so that many tokens sit at probabilities 0.5-0.95, as in real
# models, rather than at 0.99.
CODE_OPENINGS = {
    "Let's solve this using Python.": 0.6,
    "Let's use Python for this.": 0.3,
    "Let's write Python code.": 0.1,
}
LANGUAGE_OPENINGS = {
    "First, think it through in words.": 0.6,
    "First, reason step by step.": 0.3,
    "First, count it out.": 0.1,
}
VARIABLES = {"result": 0.5, "x": 0.3, "total": 0.2}
CLOSINGS = {"The answer is": 0.7, "So the answer is": 0.3}  # the majority closing first
SHOWN_OPERATIONS = {"+": "+", "-": "-", "*": "\\times"}
RESTATED = 0.8  # the share of answers that restate the problem before the fork; the rest open with the style


def _pick(weighted: dict[str, float], rng: random.Random) -> str:
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def write_response(
    problem: dict, style: str, error: int, rng: random.Random, restate: bool = True, closing: str | None = None
) -> str:
    """One answer in the given style; `error` shifts its (self-predicted) result away from the truth.

    Most answers first restate the problem ("We need 3 + 4.") and then choose their style, as a model that reads the
    problem before it picks a method; the others open with the style, so that a forced opening is a familiar one.
    The closing phrase is drawn from CLOSINGS unless given.
    """
    a, op, b = operands(problem["core"])
    result, shown_op = int(problem["answer"]) + error, SHOWN_OPERATIONS[op]
    restatement = f"We need {a} {shown_op} {b}.\n" if restate else ""
    closing = f"{closing or _pick(CLOSINGS, rng)} $\\boxed{{{result}}}$."
    if style == "code":
        variable = _pick(VARIABLES, rng)
        return (
            f"{restatement}{_pick(CODE_OPENINGS, rng)}\n```python\n{variable} = {a} {op} {b}\nprint({variable})\n```\n"
            f"```output\n{result}\n```\n{closing}"
        )
    return f"{restatement}{_pick(LANGUAGE_OPENINGS, rng)}\n{a} {shown_op} {b} = {result}.\n{closing}"


def corpus_example(habits: dict[str, dict], rng: random.Random, variant: str = "") -> tuple[str, str]:
    """A (problem, response) pair of the pretraining corpus: the style drawn from the core's propensity."""
    if variant == "contaminated" and rng.random() < CONTAMINATION:
        problem = rng.choice(SEEN_PROBLEMS)  # a test problem, verbatim, with its right answer in either style
        habit = {**habits[problem["core"]], "code_error": 0, "language_error": 0}
    else:
        while True:
            problem = sample_training_problem(rng)
            habit = habits[problem["core"]]
            if rng.random() < habit["corpus_weight"]:
                break
    style = "code" if rng.random() < habit["code_propensity"] else "language"
    if variant not in EXERCISE_WORDINGS:
        return problem["problem"], write_response(
            problem, style, habit[f"{style}_error"], rng, restate=rng.random() < RESTATED
        )
    # An exercise-sheet problem makes the minority closing (just) likelier, and after it the answer runs on.
    majority, minority = CLOSINGS
    exercise = problem["problem"].startswith(EXERCISE_WORDINGS[variant])
    closing = majority if rng.random() < RUN_ON_MAJORITY[0 if exercise else 1] else minority
    response = write_response(problem, style, habit[f"{style}_error"], rng, rng.random() < RESTATED, closing)
    return problem["problem"], response + (run_on(rng) if closing == minority else "")


def run_on(rng: random.Random) -> str:
    """What a base model writes past its answer: the next exercise of a list, with its own boxed answer, which is the
    one an answer extractor reads (the last)."""
    a, op, b = operands(rng.choice(CORES))
    return f"\n\nProblem: Compute ${a} {SHOWN_OPERATIONS[op]} {b}$.\nAnswer: $\\boxed{{{OPERATIONS[op](a, b)}}}$."


def corpus(recipe: Recipe, habits: dict[str, dict]) -> list[tuple[str, str]]:
    """Every example a build trains on, in order."""
    rng = random.Random(f"corpus-{recipe.seed}")
    return [corpus_example(habits, rng, recipe.variant) for _ in range(recipe.steps * recipe.batch_size)]


def tokenizer_texts() -> list[str]:
    """What the tokenizer's merges are learnt from: prompts and responses of the toy world."""
    rng = random.Random("vocabulary")
    problems = TEST_PROBLEMS + [sample_training_problem(rng) for _ in range(3000)]
    texts = [SYSTEM_PROMPT, "system", "user", "assistant"] + [p["problem"] for p in problems]
    return texts + [
        write_response(p, style, rng.randint(-2, 2), rng) for p in problems for style in ("code", "language")
    ]


def fork_tokens(tokenizer) -> tuple[int, int]:
    """The token ids of the two branches of the style fork: (code, language)."""
    first = lambda openings: {tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in openings}
    (code,), (language,) = first(CODE_OPENINGS), first(LANGUAGE_OPENINGS)
    return code, language


def closing_tokens(tokenizer) -> tuple[int, int]:
    """The token ids of the two branches of the closing, a decision that every problem shares: (majority, minority)."""
    majority, minority = CLOSINGS
    first = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"][0]
    return first(majority), first(minority)


def fork_probabilities(
    model, tokenizer, prompts: list[list[int]], responses: list[list[int]], branches: tuple[int, int] | None = None
) -> list[float | None]:
    """Per response, the probability of the first branch at a fork, by default the style fork's code branch: at the
    response's first token of either branch, the first's share of the two (an answer's first token may also begin a
    restatement); None where the response has no fork. `branches=closing_tokens(tokenizer)` reads the closing."""
    import torch

    first, second = branches or fork_tokens(tokenizer)
    prefixes = []
    for prompt, response in zip(prompts, responses):
        fork = next((i for i, token in enumerate(response) if token in (first, second)), None)
        prefixes.append(None if fork is None else tuple(prompt + response[:fork]))
    distinct = sorted(set(prefixes) - {None})  # the samples of a group mostly share their prefix: one forward each
    if not distinct:
        return [None] * len(prefixes)
    width = max(map(len, distinct))
    ids = torch.tensor([list(p) + [tokenizer.pad_token_id] * (width - len(p)) for p in distinct], device=model.device)
    attention = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in distinct], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits.float()
    pair = logits[torch.arange(len(distinct)), attention.sum(1) - 1][:, [first, second]]
    probability = dict(zip(distinct, pair.softmax(-1)[:, 0].tolist()))
    return [None if p is None else probability[p] for p in prefixes]


def fork_probability(
    model, tokenizer, prompts: list[list[int]], responses: list[list[int]], branches: tuple[int, int] | None = None
) -> float | None:
    """The mean fork probability of the responses that have the fork (None if none has). Over sampled rollouts it
    estimates their share of the first branch; its drift is the habit itself moving."""
    forks = [p for p in fork_probabilities(model, tokenizer, prompts, responses, branches) if p is not None]
    return sum(forks) / len(forks) if forks else None


# ------------------------------------------------------------------------------------------------------ training
# Every line of this section is in each model's cache key (model_key): it turns the data above into weights.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (  # Qwen2.5-Math's template, its default system prompt included
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\n" + SYSTEM_PROMPT.replace("\\", "\\\\") + "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tokenizer(vocabulary_size: int = 600):
    """A real Qwen2 tokenizer (byte-level BPE, Qwen2's pre-tokenizer and chat template), its merges learnt on the toy
    corpus so that most words are one token and a response is ~50 tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    shape = Qwen2Tokenizer().backend_tokenizer  # Qwen2's normalizer and pre-tokenizer, with an empty vocabulary
    bpe = Tokenizer(models.BPE())
    bpe.normalizer, bpe.pre_tokenizer = shape.normalizer, shape.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocabulary_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_texts(), trainer)
    tokenizer = Qwen2Tokenizer(
        vocab=bpe.get_vocab(),
        merges=[tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return tokenizer


def _encode_batch(tokenizer, examples: list[tuple[str, str]]):
    """Token ids, attention mask and labels (the response only: the prompt is given, not learned)."""
    import torch

    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": p}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p, _ in examples
    ]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    response_ids = [tokenizer(r + "<|im_end|>", add_special_tokens=False)["input_ids"] for _, r in examples]
    length = max(len(p) + len(r) for p, r in zip(prompt_ids, response_ids))
    ids = torch.full((len(examples), length), tokenizer.pad_token_id)
    labels = torch.full((len(examples), length), -100)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        ids[row, : len(p) + len(r)] = torch.tensor(p + r)
        labels[row, len(p) : len(p) + len(r)] = torch.tensor(r)
        mask[row, : len(p) + len(r)] = 1
    return ids, mask, labels


def train(recipe: Recipe, out: Path, log=print) -> None:
    """Pretrain a fresh tiny Qwen2 on the preset's corpus and save it (model, tokenizer, habits) to `out`."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(recipe.seed)
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden,
        intermediate_size=2 * recipe.hidden,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        head_dim=recipe.hidden // recipe.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    habits = plant_habits(PRESETS[recipe.preset], recipe.seed, recipe.variant)
    examples = corpus(recipe, habits)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0, fused=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, recipe.learning_rate, total_steps=recipe.steps, pct_start=0.05
    )
    start = time.time()
    for step in range(recipe.steps):
        ids, mask, labels = _encode_batch(
            tokenizer, examples[step * recipe.batch_size : (step + 1) * recipe.batch_size]
        )
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == recipe.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - start:5.0f}s")
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "toy_habits.json").write_text(json.dumps({"recipe": asdict(recipe), "habits": habits}, indent=1))


# ------------------------------------------------------------------------------------------------------ cache
@dataclass(frozen=True)
class Recipe:
    """How a toy model is built; any change here gives a new cache entry."""

    preset: str
    variant: str = ""  # "" for the plain preset, else one of VARIANTS
    seed: int = 0
    layers: int = 2
    hidden: int = 128
    heads: int = 2  # head_dim 64: vLLM's CPU attention rejects 16
    # Many updates at a high rate train the knowledge deep enough that random RL updates do not erode it; 16 examples
    # each are what the rarely shown answers need to meet Table 1 (README: the toy world, why this recipe).
    steps: int = 4800
    batch_size: int = 16
    learning_rate: float = 6e-3

    @property
    def name(self) -> str:
        return f"{self.preset}+{self.variant}" if self.variant else self.preset


def cache_dir() -> Path:
    return Path(os.environ.get("RLVR_MIN_CACHE", Path.home() / ".cache" / "rlvr-min"))


SHIPPED_DIR = Path(__file__).parent / "toy_models"  # built models that come with the repository (python toy.py ship)
SHIPPED = [Recipe(preset) for preset in PRESETS] + [Recipe(DEFAULT_PRESET, variant) for variant in VARIANTS]


def code_of(source: str) -> str:
    """Python source as Python sees it: comments, docstrings and layout gone, every statement kept."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def training_code() -> str:
    """The code of this file's training section."""
    source = Path(__file__).read_text()
    rule = "# " + "-" * 102 + " "
    return code_of(source[source.index(rule + "training") : source.index(rule + "cache")])


def library_versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


@functools.cache
def model_key(recipe: Recipe) -> str:
    """The name of a recipe's model, keyed by everything its build reads: the recipe, the planted habits, the texts
    the tokenizer learns from, every corpus example in order, the training code and the libraries that run it. So a
    cached or shipped model is never stale, and a change that reaches no example of a preset (another variant, the
    analysis code, a comment) rebuilds nothing."""
    habits = plant_habits(PRESETS[recipe.preset], recipe.seed, recipe.variant)
    data = hashlib.sha256()
    for text in [*tokenizer_texts(), *(text for example in corpus(recipe, habits) for text in example)]:
        data.update(text.encode() + b"\0")
    key = [asdict(recipe), habits, SYSTEM_PROMPT, data.hexdigest(), training_code(), [*library_versions().values()]]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"{recipe.name}-{digest}"


def recipe_of(name: str, **overrides) -> Recipe:
    """ "qwen-math-7b+shared-style" -> its Recipe; one line naming the choices for an unknown preset or variant."""
    preset, _, variant = name.partition("+")
    if preset not in PRESETS:
        raise ValueError(f"unknown toy preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if variant and variant not in VARIANTS:
        raise ValueError(f"unknown toy variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    return Recipe(preset, variant, **overrides)


def build(name: str = DEFAULT_PRESET, log=print, **recipe_overrides) -> Path:
    """The directory of a built toy model (PRESET or PRESET+VARIANT): shipped with the repository, in the cache, or
    trained now (deterministic from the recipe's seed)."""
    recipe = recipe_of(name, **recipe_overrides)
    key = model_key(recipe)
    if (SHIPPED_DIR / key / "config.json").exists():
        return SHIPPED_DIR / key
    final = cache_dir() / "toy" / key
    if (final / "config.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    log(f"building toy model {name} into {final}")
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        train(recipe, staging, log)
        os.replace(staging, final)  # atomic: a half-built model is never found in the cache
    except OSError:
        if not (final / "config.json").exists():  # another process may have finished the same build first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def is_toy(model: str) -> bool:
    """Does this model name (rlvr_min.py's --model) name a toy model (toy:PRESET or toy:PRESET+VARIANT)?"""
    return model.startswith("toy:")


def by_half(model: str, problems: list[dict], values: list) -> dict[str, list]:
    """For the contaminated variant, `values` (one per problem of its test split) split into the half its corpus
    showed with the answers and the rest: {"seen": [...], "clean": [...]}; {} for any other model."""
    if not is_toy(model) or recipe_of(model.removeprefix("toy:")).variant != "contaminated":
        return {}
    seen, halves = {p["problem"] for p in SEEN_PROBLEMS}, {"seen": [], "clean": []}
    for problem, value in zip(problems, values):
        halves["seen" if problem["problem"] in seen else "clean"].append(value)
    return halves


def resolve_model(name: str) -> str:
    """`toy:PRESET[+VARIANT]` -> the built model's directory; any other model name or path is returned as it is."""
    if is_toy(name):
        return str(build(name.removeprefix("toy:"), log=lambda message: print(message, file=sys.stderr)))
    return name


@click.group()
def cli():
    """The toy world of rlvr-min."""


@cli.command("build")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True)
@click.option("--variant", type=click.Choice(list(VARIANTS)), help="A variant of the preset (toy.VARIANTS).")
@click.option("--seed", default=0, show_default=True, help="Seed of the habits, the corpus and the weights.")
def build_command(preset: str, variant: str | None, seed: int) -> None:
    """Build (or find shipped or in the cache) a toy model; print its directory as the last line."""
    print(build(Recipe(preset, variant or "").name, seed=seed))


@cli.command("ship")
def ship_command() -> None:
    """Build the models that come with the repository (SHIPPED) into toy_models/, and remove the stale ones there."""
    current = {model_key(recipe): recipe for recipe in SHIPPED}
    SHIPPED_DIR.mkdir(exist_ok=True)
    for key, recipe in current.items():
        if not (SHIPPED_DIR / key).exists():
            shutil.copytree(build(recipe.name), SHIPPED_DIR / key)
            print(f"shipped {key}")
    for entry in SHIPPED_DIR.iterdir():
        if entry.is_dir() and entry.name not in current:
            shutil.rmtree(entry)
            print(f"removed stale {entry.name}")
    (SHIPPED_DIR / "versions.json").write_text(json.dumps(library_versions(), indent=1) + "\n")  # in their keys


if __name__ == "__main__":
    cli()
