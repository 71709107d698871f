"""The DPO loss against numbers worked out by hand (torchtune's habit) and the paper's formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from dpominer.train.loss import dpo_loss, sequence_logps

# policy_c, policy_r, ref_c, ref_r for two examples
PC, PR = torch.tensor([-10.0, -20.0]), torch.tensor([-14.0, -18.0])
RC, RR = torch.tensor([-11.0, -19.0]), torch.tensor([-13.0, -19.0])
# logits = (PC − PR) − (RC − RR) = (4 − 2, −2 − 0) = (2, −2)


def test_sigmoid_by_hand():
    losses, chosen, rejected = dpo_loss(PC, PR, RC, RR, beta=0.1)
    # −log σ(0.1·2) = log(1 + e^−0.2) = 0.598139; −log σ(−0.2) = log(1 + e^0.2) = 0.798139
    assert_close(losses, torch.tensor([math.log1p(math.exp(-0.2)), math.log1p(math.exp(0.2))]))
    assert_close(chosen, torch.tensor([0.1, -0.1]))  # β·(PC − RC) = 0.1·(1, −1)
    assert_close(rejected, torch.tensor([-0.1, 0.1]))  # β·(PR − RR) = 0.1·(−1, 1)


def test_equal_policy_and_reference_give_log_2():
    x = torch.tensor([-5.0, -7.5, -100.0])
    losses, chosen, rejected = dpo_loss(x, x - 3, x, x - 3, beta=0.5)
    assert_close(losses, torch.full((3,), math.log(2)))
    assert_close(chosen, torch.zeros(3)) and assert_close(rejected, torch.zeros(3))


def test_label_smoothing_is_robust_dpo():
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, label_smoothing=0.25)
    z = torch.tensor([0.2, -0.2])
    assert_close(losses, 0.75 * torch.log1p(torch.exp(-z)) + 0.25 * torch.log1p(torch.exp(z)))


def test_ipo_and_hinge_by_hand():
    ipo, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="ipo")
    assert_close(ipo, torch.tensor([(2 - 5) ** 2, (-2 - 5) ** 2], dtype=torch.float32))  # 1/(2β) = 5
    hinge, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="hinge")
    assert_close(hinge, torch.tensor([0.8, 1.2]))
    with pytest.raises(ValueError, match="unknown loss_type"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="kto")


def test_length_penalty_is_r_dpo_by_hand():
    # lengths: chosen 50 and 120 tokens, rejected 300 and 100 → |y_c| − |y_r| = (−250, 20)
    lc, lr = torch.tensor([50, 120]), torch.tensor([300, 100])
    losses, chosen, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, length_penalty=0.002, chosen_lengths=lc,
                                 rejected_lengths=lr)
    # argument β·logits + α·Δ = (0.2 − 0.5, −0.2 + 0.04) = (−0.3, −0.16); −log σ(z) = log(1 + e^−z)
    assert_close(losses, torch.tensor([math.log1p(math.exp(0.3)), math.log1p(math.exp(0.16))]))
    assert_close(chosen, torch.tensor([0.1, -0.1]))  # rewards are the plain DPO rewards
    # the other sign: a shorter chosen side makes the pair count as partly won: (0.2 + 0.5, −0.2 − 0.04)
    neg, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, length_penalty=-0.002, chosen_lengths=lc, rejected_lengths=lr)
    assert_close(neg, torch.tensor([math.log1p(math.exp(-0.7)), math.log1p(math.exp(0.24))]))
    hinge, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="hinge", length_penalty=0.002, chosen_lengths=lc,
                           rejected_lengths=lr)
    assert_close(hinge, torch.tensor([1.3, 1.16]))  # relu(1 − (−0.3)), relu(1 − (−0.16))
    # α = 0 is plain DPO; equal lengths cancel whatever α is
    plain, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1)
    same, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, length_penalty=0.5, chosen_lengths=lc, rejected_lengths=lc)
    assert_close(same, plain)
    with pytest.raises(ValueError, match="not ipo"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="ipo", length_penalty=0.1, chosen_lengths=lc, rejected_lengths=lr)
    with pytest.raises(ValueError, match="needs chosen_lengths"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, length_penalty=0.1)


def test_rewards_are_detached_and_loss_has_gradients():
    pc = PC.clone().requires_grad_()
    losses, chosen, _ = dpo_loss(pc, PR, RC, RR, beta=0.1)
    losses.sum().backward()
    assert not chosen.requires_grad
    # d/dpc −log σ(β·l) = −β·σ(−β·l)
    assert_close(pc.grad, -0.1 * torch.sigmoid(-0.1 * torch.tensor([2.0, -2.0])))


def test_sequence_logps_masks_the_prompt_and_shifts_by_one():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.bfloat16)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 5]])
    logps = torch.log_softmax(logits.float(), -1)
    expected = torch.stack([logps[0, 1, 3] + logps[0, 2, 4], logps[1, 0, 1] + logps[1, 1, 2] + logps[1, 2, 6]
                            + logps[1, 3, 5]])
    assert_close(sequence_logps(logits, labels), expected)
    assert_close(sequence_logps(logits, labels, average=True), expected / torch.tensor([2.0, 4.0]))
    assert sequence_logps(logits, labels).dtype == torch.float32
