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
