"""The DPO loss and the log-probabilities it consumes. Pure tensor functions.

Rafailov et al. 2023, "Direct Preference Optimization", eq. 7: with π the policy and ref the frozen
reference, the implicit reward of a completion y is β·(log π(y|x) − log ref(y|x)), and

    logits = (log π(y_c) − log π(y_r)) − (log ref(y_c) − log ref(y_r))

* ``sigmoid``: −log σ(β·logits), with label smoothing ε (cDPO / robust DPO, Mitchell 2023):
  −(1−ε)·log σ(β·logits) − ε·log σ(−β·logits)
* ``ipo``: (logits − 1/(2β))²  (Azar et al. 2023, eq. 17)
* ``hinge``: relu(1 − β·logits)  (SLiC, Zhao et al. 2023)

Length regularisation (R-DPO, Park et al. 2024, "Disentangling Length from Quality in Direct Preference
Optimization", eq. 9) adds α·(|y_c| − |y_r|) inside the sigmoid (and the hinge), lengths in completion
tokens: −log σ(β·logits + α·(|y_c| − |y_r|)). With α > 0, as in the paper (against verbosity), a pair
whose chosen side is the *longer* one counts as partly won already, so length stops paying; a pair
whose chosen side is the shorter one (a clean copy against a long loop) counts as partly lost, so the
push toward short answers grows. For loop pairs, where the chosen side is usually the shorter one,
α < 0 is the sign that discounts length; both signs are allowed, and the right one depends on which
side of your pairs is longer (``dpominer pair`` prints the chosen/rejected length ratio).
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
    length_penalty: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example DPO losses and implicit rewards.

    All inputs are (B,) sequence log-probs (summed, or averaged with length normalisation, over the
    completion tokens only). ``length_penalty`` α adds α·(|y_c| − |y_r|) to the sigmoid's (or hinge's)
    argument, with ``chosen_lengths``/``rejected_lengths`` (B,) in tokens (R-DPO). Returns
    ``(losses, chosen_rewards, rejected_rewards)``, each (B,); rewards are β·(policy − ref), detached.
    """
    logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)  # (B,)
    margin = beta * logits  # (B,)
    if length_penalty:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("length_penalty needs chosen_lengths and rejected_lengths")
        if loss_type == "ipo":
            raise ValueError("length_penalty applies to the sigmoid and hinge losses, not ipo")
        margin = margin + length_penalty * (chosen_lengths.float() - rejected_lengths.float())  # (B,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(margin) * (1 - label_smoothing) - F.logsigmoid(-margin) * label_smoothing
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - margin)
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
