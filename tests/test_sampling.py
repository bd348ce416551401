"""The HF engine's sampling loop: greedy output identical to `model.generate`, sampled output reproducible from its
seed, and drawn from the right distribution (temperature and top-p) on a model whose probabilities are known."""

import math

import conftest
import pytest
import torch

import infra

EOS = 9


def tiny_qwen2(seed: int = 0, vocabulary: int = 40):
    """A random two-layer Qwen2 with a stand-in tokenizer (pad 0, EOS 9)."""
    model = conftest.tiny_qwen2(vocabulary, seed, max_position_embeddings=128, eos_token_id=EOS, pad_token_id=0).eval()
    model.generation_config.eos_token_id = EOS
    with torch.no_grad():
        model.lm_head.weight[EOS] *= 3  # EOS likelier: rows stop at different steps, and some run to the limit
    return model


class Tokenizer:  # what HFEngine reads of a tokenizer
    pad_token_id, eos_token_id = 0, EOS


def known_distribution_model(probabilities: list[float]):
    """A Qwen2 whose next-token distribution is `probabilities` after every prefix: attention and MLP add nothing,
    every token embeds to the same vector, and the output layer turns it into log-probabilities."""
    model = tiny_qwen2(vocabulary=len(probabilities))
    hidden = model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0  # RMSNorm turns it into sqrt(hidden) * e_0
        model.lm_head.weight.zero_()
        logits = torch.tensor([math.log(p) if p > 0 else -1e4 for p in probabilities])
        model.lm_head.weight[:, 0] = logits / math.sqrt(hidden)
    return model


PROMPTS = [[5, 6, 7], [3, 4], [8, 1, 2, 3, 4, 5], [7], [2, 2, 2, 2], [6, 5], [4, 8, 3], [1, 2, 3, 4, 5, 6, 7, 8]]


def both_paths(model, *args):
    loop = infra.HFEngine(model, Tokenizer())
    assert loop.loop  # a plain decoder-only LM takes the loop
    return infra.HFEngine(model, Tokenizer(), loop=False).generate(*args), loop.generate(*args)


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_greedy_output_is_identical_to_generate_on_a_random_qwen2(seed):
    model = tiny_qwen2(seed)
    old, new = both_paths(model, PROMPTS, 1, 0.0, 1.0, 24, 0)
    assert new == old
    # prompts of different lengths (left padding); rows that stop at different steps (dropped from the batch as they
    # finish, EOS kept) and rows that run to the limit
    stopped = [len(r) for r in new if r[-1] == EOS]
    assert len(set(stopped)) >= 2 and any(len(r) == 24 and r[-1] != EOS for r in new), [len(r) for r in new]
    old, new = both_paths(model, PROMPTS, 3, 0.0, 1.0, 24, 0)  # greedy with n > 1: n identical copies
    assert new == old and new[0] == new[1] == new[2]


def test_sampled_output_is_reproducible_from_its_seed():
    model = tiny_qwen2(3)
    engine = infra.HFEngine(model, Tokenizer())
    first = engine.generate(PROMPTS, 8, 1.0, 1.0, 16, seed=7)
    assert first == engine.generate(PROMPTS, 8, 1.0, 1.0, 16, seed=7)
    assert first != engine.generate(PROMPTS, 8, 1.0, 1.0, 16, seed=8)
    assert len(first) == 8 * len(PROMPTS) and len({tuple(r) for r in first[:8]}) > 1  # prompt 0's 8 samples differ


PROBABILITIES = [0.0, 0.4, 0.2, 0.15, 0.1, 0.05, 0.0, 0.0, 0.0, 0.1]  # token 9 is EOS


@pytest.mark.parametrize(
    "temperature, top_p, expected",
    [
        (1.0, 1.0, [0.0, 0.4, 0.2, 0.15, 0.1, 0.05, 0.0, 0.0, 0.0, 0.1]),
        # T = 0.5 squares the probabilities: 0.16, 0.04, 0.0225, 0.01, 0.0025, 0.01 over a total of 0.245
        (
            0.5,
            1.0,
            [0.0, 0.16 / 0.245, 0.04 / 0.245, 0.0225 / 0.245, 0.01 / 0.245, 0.0025 / 0.245, 0, 0, 0, 0.01 / 0.245],
        ),
        # top-p 0.7: 0.4 + 0.2 = 0.6 < 0.7, so 0.15 joins (0.75); renormalised over 0.75
        (1.0, 0.7, [0.0, 0.4 / 0.75, 0.2 / 0.75, 0.15 / 0.75, 0, 0, 0, 0, 0, 0]),
        # both: T = 0.5 first (0.653, 0.163, 0.092, ...), then the nucleus of 0.8: 0.653 + 0.163 = 0.816
        (0.5, 0.8, [0.0, 0.16 / 0.2, 0.04 / 0.2, 0, 0, 0, 0, 0, 0, 0]),
    ],
)
def test_sampled_tokens_follow_the_known_distribution(temperature, top_p, expected):
    model = known_distribution_model(PROBABILITIES)
    samples = 6000
    responses = infra.HFEngine(model, Tokenizer()).generate(PROMPTS[:2], samples // 2, temperature, top_p, 2, seed=0)
    # the first token of every response, and the second wherever the first was not EOS: all from the same distribution
    tokens = [r[0] for r in responses] + [r[1] for r in responses if len(r) > 1]
    counts = torch.bincount(torch.tensor(tokens), minlength=len(expected)).double()
    frequencies = counts / counts.sum()
    for token, p in enumerate(expected):
        if p == 0:
            assert counts[token] == 0, token  # outside the nucleus (or impossible): never drawn
        else:
            sigma = math.sqrt(p * (1 - p) / counts.sum())
            assert abs(frequencies[token] - p) < 5 * sigma, (token, frequencies[token].item(), p)


def test_sample_tokens_inverts_the_cdf_exactly_on_the_edges():
    generator = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, -1e9, 0.0], [-1e9, -1e9, 5.0]])
    draws = torch.stack([infra.sample_tokens(logits, 1.0, 1.0, generator) for _ in range(400)])
    assert set(draws[:, 0].tolist()) == {0, 2} and set(draws[:, 1].tolist()) == {2}  # zero-probability tokens never
