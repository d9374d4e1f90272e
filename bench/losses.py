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


def softmax_cross_entropy(h: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                          chunk_bytes: int = 1 << 22) -> torch.Tensor:  # fmt: skip
    """Mean full-softmax cross-entropy of the logits ``h @ weight.T + bias`` (N, V) against
    ``target`` (N,), the loss of every "ce" method (SASRec-CE, GRU4Rec, Caser, HGN, BERT4Rec).

    Under autocast the logits come from a matmul in the autocast dtype and are then taken in
    float32, as ``F.cross_entropy(logits.float(), target)`` would: the same numbers.  On a CPU
    the rows go in chunks of about ``chunk_bytes`` of float32 logits: each chunk's logits,
    softmax and gradient stay in cache, and the gradients of ``h``, ``weight`` and ``bias``
    are computed in the forward pass and kept for the backward one.  The (N, V) float32 logits
    and their gradient are never written out; that memory traffic was most of an epoch of the
    full-softmax models on one core (at Beauty's 12,101 items and 750 targets a batch, bf16:
    2.3x faster than the plain computation with 4 MiB chunks, the best of 0.5-8 MiB).  On
    other devices it is the plain computation."""
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    if device != "cpu":
        logits = h @ weight.T
        return F.cross_entropy((logits if bias is None else logits + bias).float(), target)
    rows = max(1, chunk_bytes // (4 * weight.shape[0]))
    with torch.autocast(device, enabled=False):
        return _ChunkedSoftmaxCE.apply(h, weight, bias, target, dtype, rows)


class _ChunkedSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, target, dtype, rows):
        n = len(h)
        hc, wc = h.detach().to(dtype), weight.detach().to(dtype)
        grad_h = torch.empty_like(hc)
        probs = torch.empty(n, wc.shape[0], dtype=dtype, device=h.device)  # softmax - one-hot, in the matmul dtype
        total = torch.zeros((), dtype=torch.promote_types(dtype, torch.float32), device=h.device)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            logits = hc[start:stop] @ wc.T
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 (float64 stays)
            if bias is not None:
                logits += bias.detach().to(logits.dtype)
            lse = torch.logsumexp(logits, 1, keepdim=True)
            t = target[start:stop].unsqueeze(1)
            total += (lse.squeeze(1) - logits.gather(1, t).squeeze(1)).sum()
            p = logits.sub_(lse).exp_()
            p.scatter_add_(1, t, torch.full_like(t, -1, dtype=p.dtype))
            probs[start:stop] = p
            grad_h[start:stop] = probs[start:stop] @ wc
        ctx.save_for_backward(grad_h, probs, hc)
        ctx.n, ctx.has_bias, ctx.dtypes = n, bias is not None, (h.dtype, weight.dtype)
        return total / n

    @staticmethod
    def backward(ctx, grad):
        grad_h, probs, hc = ctx.saved_tensors
        scale = grad / ctx.n
        d_h = (grad_h.to(ctx.dtypes[0]) * scale) if ctx.needs_input_grad[0] else None
        d_w = ((probs.T @ hc).to(ctx.dtypes[1]) * scale) if ctx.needs_input_grad[1] else None
        d_b = (probs.to(grad.dtype).sum(0) * scale) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return d_h, d_w, d_b, None, None, None
