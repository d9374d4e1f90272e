"""The shared training and scoring of models that read (user, last L items): Caser and HGN.

A subclass names its ``Model`` (``Model(n_users, n_items, config)`` with
``forward(users, items)`` -> hidden and ``logits(hidden)`` -> (B, n_items)); this base trains
it with full-softmax cross-entropy on the next-item windows of every training sequence and
scores a test user from the last ``max_len`` history items.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.batching import last_item_windows, shuffled_batches
from bench.method import EvalBatch, Method
from bench.training import train


class LastItemsMethod(Method):
    output = "scores"
    Model: ClassVar[type[torch.nn.Module]]

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.model = self.Model(data.n_users, data.n_items, config).to(self.device)

    def fit(self) -> None:
        cfg, dev = self.config, self.device
        inputs, targets, users = last_item_windows(self.data.train, cfg.max_len)
        inputs = torch.from_numpy(inputs + 1).to(dev)  # -1 padding -> 0
        targets = torch.from_numpy(targets).to(dev)
        users = torch.from_numpy(users).to(dev)
        gen = self.ctx.torch_generator(self.name, "train")
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(self.model.logits(self.model(users[idx], inputs[idx])).float(), targets[idx])

        train(self.ctx, self.model, opt, loss, lambda: shuffled_batches(len(targets), cfg.batch_size, gen, dev),
              cfg.epochs, cfg.patience, cfg.eval_every)  # fmt: skip

    def score(self, batch: EvalBatch) -> torch.Tensor:
        return self.model.logits(self.model(batch.users, batch.history[:, -self.config.max_len :] + 1))
