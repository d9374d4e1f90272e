"""The papers' sampled losses (bench.losses) against their definitions, and the variants that use them."""

from __future__ import annotations

import math

import pytest
import torch

from bench.losses import sampled_loss
from methods import METHODS


def test_losses_match_their_definitions() -> None:
    pos = torch.tensor([2.0, -1.0])
    neg = torch.tensor([[1.0, 0.5, 3.0], [-2.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    s = torch.sigmoid
    bce = sum(-math.log(s(pos[i])) - sum(math.log(1 - s(neg[i, j])) for j in range(3) if mask[i, j]) for i in range(2)) / 2
    bpr = sum(-math.log(s(pos[i] - neg[i, j])) for i in range(2) for j in range(3) if mask[i, j]) / 5
    top1 = sum(s(neg[i, j] - pos[i]) + s(neg[i, j] ** 2) for i in range(2) for j in range(3) if mask[i, j]) / 5
    assert float(sampled_loss("bce", pos, neg, mask)) == pytest.approx(bce, rel=1e-6)
    assert float(sampled_loss("bpr", pos, neg, mask)) == pytest.approx(float(bpr), rel=1e-6)
    assert float(sampled_loss("top1", pos, neg, mask)) == pytest.approx(float(top1), rel=1e-6)


@pytest.mark.parametrize("name, loss", [("caser-bce", "bce"), ("hgn-bpr", "bpr"), ("gru4rec-top1", "top1")])
def test_paper_loss_variants_are_labelled_configurations(name: str, loss: str) -> None:
    cls = METHODS.get(name)
    assert cls.Config().loss == loss and "paper" in cls.description
    base = METHODS.get(name.split("-")[0])
    assert issubclass(cls, base) and base.Config().loss == "ce"


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_softmax_cross_entropy_equals_the_plain_one_with_its_gradients(bf16: bool, with_bias: bool) -> None:
    """``softmax_cross_entropy`` (rows in chunks, gradients made in the forward pass) against
    ``F.cross_entropy`` of the materialized logits: the loss and the gradients of the hidden
    states, of a sliced weight (as SASRec's item embeddings past padding) and of the bias,
    exactly in float64 and within bf16 rounding under bf16 autocast."""
    import torch.nn.functional as F

    from bench.losses import softmax_cross_entropy

    g = torch.Generator().manual_seed(0)
    dtype = torch.float32 if bf16 else torch.float64
    h = torch.randn(70, 8, generator=g, dtype=dtype, requires_grad=True)
    emb = torch.randn(51, 8, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(50, generator=g, dtype=dtype, requires_grad=True) if with_bias else None
    target = torch.randint(50, (70,), generator=g)

    def grads(plain: bool):
        h.grad = emb.grad = None
        if bias is not None:
            bias.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if plain:
                logits = h @ emb[1:].T
                logits = logits.to(dtype) + (bias if bias is not None else 0)
                loss = F.cross_entropy(logits, target)
            else:
                loss = softmax_cross_entropy(h, target, emb[1:], bias, chunk_bytes=4 * 50 * 16)  # 16 rows a chunk: 5 chunks
        (2.5 * loss).backward()
        return [loss.detach(), h.grad, emb.grad] + ([bias.grad] if bias is not None else [])

    tol = 1e-2 if bf16 else 1e-12
    for want, got in zip(grads(True), grads(False)):
        assert got.dtype == want.dtype and torch.allclose(got, want, rtol=tol, atol=tol * float(want.abs().max())), (want, got)
