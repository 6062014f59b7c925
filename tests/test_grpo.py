"""GRPO math on hand-computed cases."""
import math

import pytest
import torch

from vrt_ray.grpo import (aggregate, group_advantages, kl_penalty, policy_loss,
                          zero_variance_groups)


def test_group_advantages_by_hand():
    adv = group_advantages([1.0, 0.0, 0.5, 0.5, 2.0, 2.0], ["a", "a", "a", "a", "b", "b"], eps=0.0)
    std = math.sqrt(((1 - .5) ** 2 + (0 - .5) ** 2) / 4)  # population std of [1, 0, .5, .5]
    assert adv[:4] == pytest.approx([0.5 / std, -0.5 / std, 0.0, 0.0])
    assert adv[4:] == [0.0, 0.0]  # a zero-variance group gets no advantage
    unscaled = group_advantages([1.0, 0.0, 0.5, 0.5], ["a"] * 4, scale_by_std=False)
    assert unscaled == pytest.approx([0.5, -0.5, 0.0, 0.0])


def test_zero_variance_groups():
    assert zero_variance_groups([1, 1, 0, 1, 0.3, 0.3], [1, 1, 2, 2, 3, 3]) == {1, 3}


def test_kl_estimators_by_hand():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    d = math.log(2.0)
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(d * d / 2)
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(0.5 - (-d) - 1)
    assert kl_penalty(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(lp, ref, "k4")


def test_aggregation_modes_use_action_tokens_only():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, 100.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert aggregate(values, mask, "token-mean").item() == pytest.approx((1 + 2 + 3 + 5) / 4)
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 5) / 2)
    empty = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])
    assert aggregate(values, empty, "seq-mean-token-mean").item() == pytest.approx(2.0)


def test_clipped_loss_by_hand():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    mask = torch.tensor([[1, 1, 1]])
    pos = policy_loss(new, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.28)
    # A > 0: min(r, clip(r)) -> 1.28, 0.5, 1.1
    assert pos.loss.item() == pytest.approx(-(1.28 + 0.5 + 1.1) / 3)
    assert pos.clip_fraction == pytest.approx(1 / 3)
    neg = policy_loss(new, old, torch.tensor([-1.0]), mask, clip_low=0.2, clip_high=0.28)
    # A < 0: -min(-r, -clip(r)) = max(r, clip(r)) -> 1.5, 0.8, 1.1
    assert neg.loss.item() == pytest.approx((1.5 + 0.8 + 1.1) / 3)
    assert neg.clip_fraction == pytest.approx(1 / 3)


def test_kl_term_and_gradient_flow_through_action_tokens_only():
    new = torch.zeros(1, 3, requires_grad=True)
    old, ref = torch.zeros(1, 3), torch.full((1, 3), math.log(0.5))
    mask = torch.tensor([[0, 1, 1]])
    out = policy_loss(new, old, torch.tensor([0.0]), mask, ref_logprobs=ref, beta=0.1)
    assert out.kl == pytest.approx(math.expm1(-math.log(2)) + math.log(2))
    assert out.loss.item() == pytest.approx(0.1 * out.kl)
    out.loss.backward()
    assert new.grad[0, 0].item() == 0.0 and new.grad[0, 1].item() != 0.0


def test_on_policy_start_has_ratio_one_and_gradient_is_minus_advantage():
    lp = torch.log(torch.tensor([[0.3, 0.6]])).requires_grad_()
    out = policy_loss(lp, lp.detach(), torch.tensor([2.0]), torch.tensor([[1, 1]]))
    assert out.ratio_mean == pytest.approx(1.0) and out.clip_fraction == 0.0
    out.loss.backward()
    assert lp.grad[0].tolist() == pytest.approx([-1.0, -1.0])  # d(-r*A)/dlogp over 2 tokens
