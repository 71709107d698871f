"""Completion log-probabilities without the (B, T, V) logits tensor.

A causal LM's last layer turns each hidden state into V logits; DPO needs only one number per
completion token: log p(label). Materialising fp32 logits for every position of a (2B, T) batch costs
2B·T·V·4 bytes (≈ 800 MB at B=4, T=512, V=49k) and the log-softmax as much again. Here the backbone
runs as usual, the head is applied only at positions whose next token is labelled (prompt and padding
positions are skipped outright), a few hundred rows at a time, and the backward pass recomputes each
chunk's logits instead of keeping them.
"""

from __future__ import annotations

import torch
from torch import nn

from .loss import sequence_logps

CHUNK_ROWS = 512
MAX_TREE_TOKENS = 8192  # a pair's (N, N) mask stays ≤ 64 MB


class _HeadLogProb(torch.autograd.Function):
    """log softmax(h·Wᵀ)[label] for N rows of h, in chunks; saves h, W and the (N,) log-normalisers."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # hidden (N, H), weight (V, H), labels (N,) → (N,) fp32
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 at least: bf16 log-probs drift
        out = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)
        lse = torch.empty_like(out)
        w = weight.to(hidden.dtype)
        for start in range(0, hidden.shape[0], CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            logits = (hidden[rows] @ w.T).to(acc)  # (n, V)
            lse[rows] = torch.logsumexp(logits, dim=-1)
            out[rows] = logits.gather(1, labels[rows, None]).squeeze(1) - lse[rows]
        ctx.save_for_backward(hidden, weight, labels, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        hidden, weight, labels, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device) if need_weight else None
        w = weight.to(hidden.dtype)
        for start in range(0, hidden.shape[0], CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            logits = (hidden[rows] @ w.T).to(lse.dtype)  # (n, V)
            # d/dz [z_label − logsumexp z] = onehot(label) − softmax(z)
            grad_logits = -torch.exp(logits - lse[rows, None])
            grad_logits.scatter_add_(1, labels[rows, None], torch.ones_like(lse[rows, None]))
            grad_logits *= grad_out[rows, None]
            if need_hidden:
                grad_hidden[rows] = (grad_logits.to(hidden.dtype) @ w).to(hidden.dtype)
            if need_weight:
                grad_weight += grad_logits.T @ hidden[rows].to(lse.dtype)
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None


def _has_plain_head(config) -> bool:
    """True when logits are exactly ``lm_head(h)``: no soft-capping, scaling or bias to reproduce."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return not any(getattr(text, name, None) not in (None, 1.0) for name in
                   ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"))


def _shared_prompts(input_ids: torch.Tensor, labels: torch.Tensor, lengths: list[int]) -> list[int] | None:
    """Prompt length of each pair when row i (chosen) and row i + B (rejected) share their prompt, as
    :func:`collate` lays a batch out; None when any pair does not (then each row runs on its own)."""
    rows = labels.shape[0]
    if rows % 2:
        return None
    labelled = labels != -100
    starts = labelled.int().argmax(-1).tolist()  # first completion token of each row
    half = rows // 2
    prompts = []
    for i in range(half):
        p, j = starts[i], i + half
        if p < 1 or starts[j] != p or lengths[i] + lengths[j] - p > MAX_TREE_TOKENS:
            return None
        if not torch.equal(input_ids[i, :p], input_ids[j, :p]):
            return None
        prompts.append(p)
    return prompts


def _tree_inputs(chosen: torch.Tensor, rejected: torch.Tensor, p: int):
    """One sequence ``prompt | chosen | rejected`` whose rejected part sees the prompt but not the chosen
    part, with positions restarting after the prompt: (ids (1, N), position_ids (1, N), mask (1, 1, N, N))."""
    c, r = len(chosen) - p, len(rejected) - p
    n = p + c + r
    ids = torch.cat([chosen, rejected[p:]])[None]
    positions = torch.cat([torch.arange(p + c), torch.arange(p, p + r)]).to(chosen.device)[None]
    allowed = torch.ones(n, n, dtype=torch.bool, device=chosen.device).tril_()
    allowed[p + c:, p:p + c] = False
    return ids, positions, allowed[None, None]


def _tree_capable(config) -> bool:
    """A custom 4-D boolean mask means what it says only under SDPA, and would drop a sliding window."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    sliding = getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True)
    return getattr(config, "_attn_implementation", None) == "sdpa" and not sliding


class CompletionLogps(nn.Module):
    """Wraps a causal LM so ``forward`` returns per-sequence completion log-probs (sum and token count).

    One module, so DDP can wrap it and its forward is what the gradients sync through. On a CPU the
    batch is not padded (``padding_free``). A pair's chosen and rejected rows share their prompt, so the
    pair runs as one sequence ``prompt | chosen | rejected`` with a mask that hides the chosen part from
    the rejected one and positions that restart after the prompt: the prompt is computed once, and one
    backbone call per pair (not two) also halves the per-call cost of the weight gradients — on SmolLM2
    with 2 cores, 1.35× faster forward and 1.3–1.6× faster forward+backward than a call per row, same
    numbers to fp32 rounding. The first pair is checked against a call per row; pairs that do not share
    a prompt, and models without SDPA, with a sliding window or failing the check, run a call per row
    (no padding mask, so SDPA takes its fused causal kernel). On a GPU the padded batch is the fast way.
    """

    def __init__(self, model: nn.Module, padding_free: bool | None = None):
        super().__init__()
        self.model = model
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft → the CausalLM
        head = inner.get_output_embeddings()
        self._fast = _has_plain_head(inner.config) and getattr(head, "bias", None) is None
        self._inner = [inner]  # a list, so the module is not registered twice
        self.padding_free = padding_free  # None: on a CPU
        self.share_prompts: bool | None = None if _tree_capable(inner.config) else False  # None: check first

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                vision: list[dict[str, torch.Tensor]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # input_ids, attention_mask, labels (B, T); labels −100 at prompt and padding; padding on the right.
        # vision: per pair, the extra inputs of its prompt's images (pixel_values, …); rows i and i + B/2 share it
        target = labels[:, 1:]  # token t is predicted at position t−1
        mask = target != -100  # (B, T-1)
        counts = mask.sum(-1)  # (B,)
        if not self._fast:
            extra = _rows_vision(vision, labels.shape[0])
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra).logits
            return sequence_logps(logits, labels), counts
        inner = self._inner[0]
        backbone = getattr(inner, inner.base_model_prefix)
        padding_free = input_ids.device.type == "cpu" if self.padding_free is None else self.padding_free
        if padding_free or vision is not None:  # image pairs: a call per pair, so each image is encoded once
            lengths = attention_mask.sum(-1).tolist()
            rows = None if self.share_prompts is False else self._rows_by_pair(backbone, input_ids, labels, lengths,
                                                                                vision)
            if rows is None:
                half = labels.shape[0] // 2
                rows = [backbone(input_ids=input_ids[i:i + 1, :n], use_cache=False,
                                 **(vision[i % half] if vision else {})).last_hidden_state[0]
                        for i, n in enumerate(lengths)]
            picked = torch.cat([h[:-1][mask[i, :len(h) - 1]] for i, h in enumerate(rows)])  # (N, H), rows in order
        else:
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            picked = hidden[:, :-1][mask]  # (N, H): only positions that predict a completion token
        token_logps = _HeadLogProb.apply(picked, inner.get_output_embeddings().weight, target[mask])  # (N,)
        sums = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=labels.device)
        row = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(mask)[mask]  # (N,)
        return sums.index_add(0, row, token_logps), counts

    def _rows_by_pair(self, backbone, input_ids: torch.Tensor, labels: torch.Tensor, lengths: list[int],
                      vision: list[dict[str, torch.Tensor]] | None = None) -> list[torch.Tensor] | None:
        """Hidden states (n_i, H) of every row, one backbone call per pair; None when pairs do not share prompts."""
        prompts = _shared_prompts(input_ids, labels, lengths)
        if prompts is None:
            return None
        half = len(prompts)
        extras = vision or [{}] * half
        if self.share_prompts is None:
            self.share_prompts = _tree_matches_rows(backbone, input_ids[0, :lengths[0]],
                                                    input_ids[half, :lengths[half]], prompts[0], extras[0])
            if not self.share_prompts:
                return None
        pairs = [_tree_forward(backbone, input_ids[i, :lengths[i]], input_ids[i + half, :lengths[i + half]], p,
                               extras[i]) for i, p in enumerate(prompts)]
        return [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]  # the batch's row order


def _rows_vision(vision: list[dict[str, torch.Tensor]] | None, rows: int) -> dict[str, torch.Tensor]:
    """The pairs' extra inputs laid out for a padded batch of chosen rows then rejected rows (the images
    encoded twice, TRL's way: only for heads the chunked log-prob cannot reproduce)."""
    if not vision:
        return {}
    assert len(vision) * 2 == rows
    return {key: torch.cat([pair[key] for pair in vision] * 2) for key in vision[0]}


def _tree_forward(backbone, chosen: torch.Tensor, rejected: torch.Tensor, p: int,
                  extra: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of the chosen row (len(chosen), H) and the rejected row (len(rejected), H), one call;
    ``extra``: the prompt's image inputs, encoded once for both rows."""
    ids, positions, allowed = _tree_inputs(chosen, rejected, p)
    h = backbone(input_ids=ids, position_ids=positions, attention_mask=allowed, use_cache=False,
                 **(extra or {})).last_hidden_state[0]
    return h[:len(chosen)], torch.cat([h[:p], h[len(chosen):]])


def _tree_matches_rows(backbone, chosen: torch.Tensor, rejected: torch.Tensor, p: int,
                       extra: dict[str, torch.Tensor] | None = None) -> bool:
    """Once per run: does this architecture take the custom mask and positions and honour them? If not, a
    call per row. On SmolLM2 a mask letting the rejected part see the chosen one moves the hidden states by
    17–21 % (relative norm); bf16 autocast alone by < 1 %, fp32 rounding by < 1e-6."""
    tolerance = 3e-2 if torch.is_autocast_enabled(chosen.device.type) else 1e-3
    with torch.no_grad():
        try:
            tree = _tree_forward(backbone, chosen, rejected, p, extra)
        except (TypeError, ValueError, RuntimeError):
            return False
        for ids, shared in zip((chosen, rejected), tree, strict=True):
            alone = backbone(input_ids=ids[None], use_cache=False, **(extra or {})).last_hidden_state[0].float()
            if (shared.float() - alone).norm() > tolerance * alone.norm():
                return False
    return True
