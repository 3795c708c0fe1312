"""Distillation losses (sparse, from K ids): step (5) and (7) of a FedMKT round, L = λ·CE + (1-λ)·soft CE.

The soft-target cross-entropy  -sum_k p_k log softmax(z)[id_k]  =  logsumexp(z) - sum_k p_k z[id_k]
needs only a gather at the K target ids: no dense [batch, length, vocab] target tensor is built.
"""

from __future__ import annotations

import torch


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 for the softmax: bf16/fp16 logits are upcast, fp64 kept."""
    return x if x.dtype == torch.float64 else x.float()


def sparse_soft_ce(logits: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """logits [P, V], target_ids [P, K], target_probs [P, K] -> per-position loss [P]."""
    logits = _wide(logits)
    return _soft_ce_given_lse(logits, torch.logsumexp(logits, dim=-1), target_ids, target_probs)


def _soft_ce_given_lse(z: torch.Tensor, lse: torch.Tensor, target_ids: torch.Tensor,
                       target_probs: torch.Tensor) -> torch.Tensor:
    # A padded target entry (p = 0) may point at a -inf logit: it contributes 0, never 0 * -inf = NaN.
    picked = torch.where(target_probs > 0, target_probs * z.gather(-1, target_ids), torch.zeros_like(lse)[:, None])
    return lse * target_probs.sum(-1) - picked.sum(-1)


def dense_soft_ce(logits: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Reference: scatter targets into a dense [P, V] distribution first (what we avoid)."""
    dense = torch.zeros_like(logits, dtype=torch.float32).scatter_add_(-1, target_ids, target_probs.float())
    return -(dense * torch.log_softmax(logits.float(), dim=-1)).sum(-1)


def fedmkt_loss(logits: torch.Tensor, labels: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor,
                ce_weight: float) -> torch.Tensor:
    """Steps (5) and (7), L2/L3: lambda * CE(labels) + (1 - lambda) * CE(soft targets), averaged over loss
    positions [P]."""
    if ce_weight >= 1.0:
        return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="mean")
    return _FusedTargetCE.apply(logits, labels, target_ids, target_probs, float(ce_weight))


CHUNK_ELEMENTS = 1 << 24  # fp32 work per chunk of positions: 64 MiB, whatever the vocabulary


def _chunks(logits: torch.Tensor):
    step = max(1, CHUNK_ELEMENTS // max(logits.shape[-1], 1))
    for start in range(0, logits.shape[0], step):
        yield slice(start, start + step)


class _FusedTargetCE(torch.autograd.Function):
    """fedmkt_loss with a hand-written gradient that needs one [P, V] buffer.

    Both terms share logsumexp(z), and d/dz of  lse * m - sum_k w_k z[id_k]  is  softmax(z) * m minus
    the weights scattered at their ids. Autograd would keep a log-softmax for the label term and a
    softmax for the soft term and sum two dense gradients; with the 262k-token Gemma vocabulary that
    is hundreds of MiB per step more than plain cross-entropy. Here only the logits (alive anyway)
    and lse [P] are kept; backward builds softmax and edits it in place into the gradient. bf16/fp16
    logits are widened to fp32 a chunk of positions at a time (no full fp32 copy: on a GPU that copy
    would be the step's peak), and the gradient is written back in the logits' dtype.
    """

    @staticmethod
    def forward(ctx, logits, labels, target_ids, target_probs, ce_weight):
        wide = torch.float64 if logits.dtype == torch.float64 else torch.float32
        lse = torch.empty(logits.shape[0], dtype=wide, device=logits.device)
        loss = torch.empty_like(lse)
        probs = target_probs.to(wide)
        for rows in _chunks(logits):
            z = _wide(logits[rows])
            lse[rows] = torch.logsumexp(z, dim=-1)
            hard = lse[rows] - z.gather(-1, labels[rows, None]).squeeze(-1)
            soft = _soft_ce_given_lse(z, lse[rows], target_ids[rows], probs[rows])
            loss[rows] = ce_weight * hard + (1.0 - ce_weight) * soft
        ctx.save_for_backward(logits, lse, labels, target_ids, probs)
        ctx.ce_weight = ce_weight
        return loss.mean()

    @staticmethod
    def backward(ctx, grad_out):
        logits, lse, labels, target_ids, probs = ctx.saved_tensors
        w = ctx.ce_weight
        out = torch.empty_like(logits)
        scale = grad_out / logits.shape[0]
        same = logits.dtype == lse.dtype  # fp32/fp64 logits: work in the output itself, no extra buffer
        for rows in _chunks(logits):
            grad = torch.sub(logits[rows], lse[rows, None], out=out[rows]) if same else _wide(logits[rows]) - lse[rows, None]
            grad.exp_()  # softmax of these rows
            grad.mul_((w + (1.0 - w) * probs[rows].sum(-1))[:, None])
            grad.scatter_add_(-1, labels[rows, None], torch.full_like(lse[rows, None], -w))
            grad.scatter_add_(-1, target_ids[rows], probs[rows] * -(1.0 - w))
            grad.mul_(scale)
            if not same:
                out[rows] = grad
        return out, None, None, None, None
