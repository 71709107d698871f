"""The DPO loss and the log-probabilities it consumes. Pure tensor functions.

Rafailov et al. 2023, "Direct Preference Optimization", eq. 7: with π the policy and ref the frozen
reference, the implicit reward of a completion y is β·(log π(y|x) − log ref(y|x)), and

    logits = (log π(y_c) − log π(y_r)) − (log ref(y_c) − log ref(y_r))

* ``sigmoid``: −log σ(β·logits), with label smoothing ε (cDPO / robust DPO, Mitchell 2023):
  −(1−ε)·log σ(β·logits) − ε·log σ(−β·logits)
* ``ipo``: (logits − 1/(2β))²  (Azar et al. 2023, eq. 17)
* ``hinge``: relu(1 − β·logits)  (SLiC, Zhao et al. 2023)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["sigmoid", "ipo", "hinge"]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example DPO losses and implicit rewards.

    All inputs are (B,) sequence log-probs (summed, or averaged with length normalisation, over the
    completion tokens only). Returns ``(losses, chosen_rewards, rejected_rewards)``, each (B,);
    rewards are β·(policy − ref), detached.
    """
    logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)  # (B,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}: sigmoid, ipo or hinge")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, *, average: bool = False,
                   ignore_index: int = -100) -> torch.Tensor:
    """Log-prob of each sequence's labelled tokens.

    logits (B, T, V) from a causal LM, labels (B, T) with prompt and padding set to ``ignore_index``.
    Token t is predicted by position t−1, so logits and labels are shifted by one. Logits are upcast to
    fp32 before the log-softmax (bf16 log-probs drift over long completions). Returns (B,): the sum,
    or with ``average`` the mean over labelled tokens (length normalisation).
    """
    logits = logits[:, :-1, :].float()  # (B, T-1, V)
    labels = labels[:, 1:]  # (B, T-1)
    mask = labels != ignore_index
    safe_labels = labels.masked_fill(~mask, 0)
    token_logps = torch.gather(logits.log_softmax(-1), 2, safe_labels.unsqueeze(2)).squeeze(2)  # (B, T-1)
    summed = (token_logps * mask).sum(-1)
    return summed / mask.sum(-1).clamp(min=1) if average else summed
