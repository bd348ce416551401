"""The GRPO loss and advantages of rlvr_min.py, on hand-made tensors."""

import math

import pytest
import torch

import rlvr_min
from rlvr_min import Config, grpo_advantages, policy_loss


def gradient(config, logprobs, old_logprobs, advantages, mask):
    logprobs = logprobs.clone().requires_grad_(True)
    loss, stats = policy_loss(logprobs, old_logprobs, advantages, mask, config, denominator=mask.sum().item())
    loss.backward()
    return loss.item(), logprobs.grad, stats


def test_constant_reward_groups_get_zero_advantage():
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    for std_normalize in (True, False):
        advantages = grpo_advantages(rewards, std_normalize)
        assert torch.equal(advantages[:2], torch.zeros(2, 4))
        assert advantages[2, 0] > 0 > advantages[2, 1]
        assert abs(advantages[2].sum().item()) < 1e-6


def test_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # mean 0.5, unbiased std sqrt(1/3)
    expected = 0.5 / math.sqrt(1 / 3)
    assert torch.allclose(
        grpo_advantages(rewards), torch.tensor([[expected, -expected, -expected, expected]]), atol=1e-5
    )
    assert torch.allclose(grpo_advantages(rewards, std_normalize=False), torch.tensor([[0.5, -0.5, -0.5, 0.5]]))


def test_with_ratio_one_clip_and_no_clip_give_identical_gradients():
    torch.manual_seed(0)
    old = torch.randn(4, 6).log_softmax(-1)
    advantages = torch.randn(4, 1)
    mask = (torch.rand(4, 6) > 0.3).float()
    _, clipped_grad, stats = gradient(Config(clip=True), old.clone(), old, advantages, mask)
    _, plain_grad, _ = gradient(Config(clip=False), old.clone(), old, advantages, mask)
    assert torch.equal(clipped_grad, plain_grad)
    assert stats["clip_fraction_low"] == stats["clip_fraction_high"] == 0


def test_tokens_outside_the_trust_region_get_zero_gradient_and_are_counted():
    old = torch.zeros(1, 4)
    # ratios 1.5 (A>0: clipped), 1.5 (A<0: not clipped, pessimistic side), 0.5 (A<0: clipped), 1.1 (inside)
    logprobs = torch.log(torch.tensor([[1.5, 1.5, 0.5, 1.1]]))
    advantages = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    mask = torch.ones(1, 4)
    _, grad, stats = gradient(Config(clip=True, clip_low=0.2, clip_high=0.2), logprobs, old, advantages, mask)
    assert grad[0, 0] == 0 and grad[0, 2] == 0
    assert grad[0, 1] != 0 and grad[0, 3] != 0
    assert stats["clip_fraction_high"] == 1 and stats["clip_fraction_low"] == 1  # counts, divided by tokens in update()
    _, plain_grad, plain_stats = gradient(Config(clip=False), logprobs, old, advantages, mask)
    assert (plain_grad != 0).all()  # no clipping: every token keeps its gradient
    assert plain_stats["clip_fraction_high"] == 1  # but the would-be clipping is still counted


def test_clip_higher_moves_only_the_upper_bound():
    old = torch.zeros(1, 2)
    logprobs = torch.log(torch.tensor([[1.25, 0.75]]))
    _, grad, _ = gradient(
        Config(clip_low=0.2, clip_high=0.28), logprobs, old, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    )
    assert grad[0, 0] != 0  # 1.25 < 1.28: inside the raised upper bound
    assert grad[0, 1] == 0  # 0.75 < 0.8: below the unchanged lower bound


def test_hand_computed_loss():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    logprobs = torch.log(torch.tensor([[0.6, 0.3, 0.5]]))  # ratios 1.2, 0.6, 1.0
    advantages = torch.tensor([[2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the last token is padding
    loss, grad, stats = gradient(Config(clip_low=0.2, clip_high=0.1), logprobs, old, advantages, mask)
    # token 1: min(1.2*2, 1.1*2) = 2.2; token 2: min(0.6*2, 0.8*2) = 1.2; token-mean over 2 tokens, negated
    assert loss == pytest.approx(-(2.2 + 1.2) / 2)
    # d/dlogp of -(rho*A)/2 = -rho*A/2 where unclipped (token 2); 0 where clipped (token 1) or masked (token 3)
    assert torch.allclose(grad, torch.tensor([[0.0, -0.6 * 2 / 2, 0.0]]))
    # approx_kl (k3) summed over real tokens: (rho - 1) - log rho
    assert stats["approx_kl"] == pytest.approx((0.2 - math.log(1.2)) + (-0.4 - math.log(0.6)), rel=1e-5)


def test_sequence_mean_weighs_every_response_once():
    old = torch.zeros(2, 4)
    logprobs = torch.zeros(2, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    advantages = torch.tensor([[1.0], [1.0]])
    config = Config(loss_aggregation="sequence-mean")
    loss, _ = policy_loss(logprobs, old, advantages, mask, config, denominator=2)
    assert loss.item() == pytest.approx(-1.0)  # each response's mean of -rho*A is -1; mean over 2 responses
    token_loss, _ = policy_loss(logprobs, old, advantages, mask, Config(), denominator=mask.sum().item())
    assert token_loss.item() == pytest.approx(-1.0)


def test_kl_penalty_is_zero_at_the_reference_and_positive_away_from_it():
    old = torch.zeros(1, 3)
    mask = torch.ones(1, 3)
    config = Config(kl_coef=0.5)
    base, _ = policy_loss(old.clone(), old, torch.zeros(1, 1), mask, config, 3, ref_logprobs=old.clone())
    away, _ = policy_loss(old.clone(), old, torch.zeros(1, 1), mask, config, 3, ref_logprobs=old - 0.5)
    assert base.item() == pytest.approx(0.0)
    assert away.item() > 0


def test_pad_batch_marks_the_response_tokens():
    ids, attention, response = rlvr_min.pad_batch([[1, 2, 3, 4, 5], [1, 2, 3]], [2, 1], pad=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5], [1, 2, 3, 0, 0]]
    assert attention.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # position t predicts token t+1: responses [4, 5] and [3]
    assert response.tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]


def test_banded_clip_fractions_put_each_clipped_token_in_its_old_probability_band():
    # old probabilities 0.1, 0.3, 0.6, 0.9 (one per band); ratios push each token outside the trust region
    old = torch.log(torch.tensor([[0.1, 0.3, 0.6, 0.9, 0.1, 0.6]]))
    ratios = torch.tensor([[1.5, 0.5, 1.3, 0.7, 1.1, 0.95]])  # the last two stay inside [0.8, 1.2]
    advantages = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, 1.0]])
    mask = torch.ones(1, 6)
    _, _, totals = gradient(Config(), old + ratios.log(), old, advantages, mask)
    stats = rlvr_min.clip_bands(old + ratios.log(), old, advantages, mask, Config())
    assert stats["clip_fraction_high[0,0.2)"] == 1  # 0.1 -> 0.15: above 1.2 with A > 0
    assert stats["clip_fraction_low[0.2,0.5)"] == 1  # 0.3 -> 0.15: below 0.8 with A < 0
    assert stats["clip_fraction_high[0.5,0.833)"] == 1  # 0.6 -> 0.78
    assert stats["clip_fraction_low[0.833,1]"] == 1  # 0.9 -> 0.63
    for band in rlvr_min.CLIP_BANDS:
        for side in ("low", "high"):
            if (side, band) not in {
                ("high", "[0,0.2)"),
                ("low", "[0.2,0.5)"),
                ("high", "[0.5,0.833)"),
                ("low", "[0.833,1]"),
            }:
                assert stats[f"clip_fraction_{side}{band}"] == 0, (side, band)
    assert [stats[f"token_share{band}"] for band in rlvr_min.CLIP_BANDS] == [2, 1, 2, 1]  # counts; update() divides
    for side in ("low", "high"):
        assert (
            sum(stats[f"clip_fraction_{side}{band}"] for band in rlvr_min.CLIP_BANDS) == totals[f"clip_fraction_{side}"]
        )


def test_a_token_above_one_over_one_plus_eps_cannot_be_clipped_high():
    # pi_old = 0.85 > 1/1.2: even pi = 1 gives a ratio of 1.18 < 1.2, so the upper bound never silences it
    old = torch.log(torch.tensor([[0.85]]))
    _, grad, stats = gradient(Config(), torch.zeros(1, 1), old, torch.ones(1, 1), torch.ones(1, 1))
    assert stats["clip_fraction_high"] == 0 and grad[0, 0] != 0
    # pi_old = 0.8 < 1/1.2: pi = 1 is a ratio of 1.25, clipped, and its gradient is zero
    _, grad, stats = gradient(
        Config(), torch.zeros(1, 1), torch.log(torch.tensor([[0.8]])), torch.ones(1, 1), torch.ones(1, 1)
    )
    assert stats["clip_fraction_high"] == 1 and grad[0, 0] == 0
