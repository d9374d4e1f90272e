"""Most popular items: the sanity floor. Scores = training interaction counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.method import EvalBatch, Method


@dataclass
class PopConfig:
    max_len: int = 0  # reads no history


class Pop(Method):
    name = "pop"
    description = "Most popular items in training (a sanity floor)"
    Config = PopConfig
    presets = {"cpu": {}}  # the defaults fit: one Scientific seed trains to early stopping on one core (docs/protocol.md §5)
    output = "scores"

    def fit(self) -> None:
        counts = np.bincount(self.data.train.items, minlength=self.data.n_items).astype(np.float32)
        self.counts = torch.from_numpy(counts).to(self.device)
        self.ctx.efficiency.update(epochs_run=1, best_epoch=1)

    def score(self, batch: EvalBatch) -> torch.Tensor:
        return self.counts.expand(len(batch.users), -1)
