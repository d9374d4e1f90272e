"""Ranking losses over a positive and sampled negative scores, written once for every method
that trains with its paper's sampled loss instead of a full softmax (docs/protocol.md §4).

Each takes ``pos`` (N,) and ``neg`` (N, k) scores (fp32) and returns the mean loss;
``neg_mask`` (N, k), where given, marks which negatives count (e.g. in-batch negatives that
are not the example's own target).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SAMPLED_LOSSES = ("bce", "bpr", "top1")


def _mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def bce(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy, the positive labelled 1 and each negative 0, summed over an
    example's negatives and averaged over examples: -log s(pos) - sum_j log(1 - s(neg_j)) (Caser)."""
    neg_terms = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
    if neg_mask is not None:
        neg_terms = neg_terms * neg_mask.to(neg_terms.dtype)
    return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none") + neg_terms.sum(1)).mean()


def bpr(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bayesian personalized ranking: -log sigmoid(pos - neg), averaged over pairs (HGN, MF)."""
    return _mean(-F.logsigmoid(pos.unsqueeze(1) - neg), neg_mask)


def top1(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """GRU4Rec's TOP1: sigmoid(neg - pos) + sigmoid(neg^2), averaged over pairs."""
    return _mean(torch.sigmoid(neg - pos.unsqueeze(1)) + torch.sigmoid(neg**2), neg_mask)


def sampled_loss(name: str, pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    return {"bce": bce, "bpr": bpr, "top1": top1}[name](pos.float(), neg.float(), neg_mask)
