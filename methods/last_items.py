"""The shared training and scoring of models that read (user, last L items): Caser and HGN.

A subclass names its ``Model`` (``Model(n_users, n_items, config)`` with
``forward(users, items)`` -> hidden, ``logits(hidden)`` -> (B, n_items) and ``output()`` -> the
weights and bias those logits use); this base trains
it on the next-item windows of every training sequence, with full-softmax cross-entropy
(``loss = "ce"``, RecBole's default) or its paper's sampled loss (``"bce"``: Caser; ``"bpr"``:
HGN) against ``negatives`` uniformly drawn items the user never trained on
(:mod:`bench.losses`), and scores a test user from the last ``max_len`` history items.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from bench.batching import NegativeSampler, last_item_windows, shuffled_batches
from bench.errors import UserError
from bench.losses import SAMPLED_LOSSES, sampled_loss, softmax_cross_entropy
from bench.method import EvalBatch, Method
from bench.training import adam, train


def check_loss(section: str, loss: str, negatives: int) -> None:
    if loss not in ("ce", *SAMPLED_LOSSES):
        raise UserError(f"option {section}.loss: expected 'ce' (full softmax) or one of {', '.join(SAMPLED_LOSSES)}, got {loss!r}")
    if negatives < 1:
        raise UserError(f"option {section}.negatives: expected >= 1, got {negatives}")


def item_scores(model: torch.nn.Module, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``model.logits(h)`` at (B, k) ``items`` only, from the weights and bias of ``model.output()``."""
    weight, bias = model.output()
    scores = (h.unsqueeze(1) * weight[items]).sum(-1)
    return scores if bias is None else scores + bias[items]


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
        opt = adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        if cfg.loss == "ce":

            def loss(idx: torch.Tensor) -> torch.Tensor:
                return softmax_cross_entropy(self.model(users[idx], inputs[idx]), targets[idx], *self.model.output())

        else:
            rows, items = self.data.train.user_item_pairs()
            sampler = NegativeSampler(torch.from_numpy(rows).to(dev), torch.from_numpy(items).to(dev), self.data.n_items, gen)

            def loss(idx: torch.Tensor) -> torch.Tensor:
                u = users[idx]
                neg = sampler.draw(u.unsqueeze(1), (len(idx), cfg.negatives))
                scores = item_scores(self.model, self.model(u, inputs[idx]), torch.cat([targets[idx].unsqueeze(1), neg], 1))
                return sampled_loss(cfg.loss, scores[:, 0], scores[:, 1:])  # only the sampled items are scored

        train(self.ctx, self.model, opt, loss, lambda: shuffled_batches(len(targets), cfg.batch_size, gen, dev),
              cfg.epochs, cfg.patience, cfg.eval_every)  # fmt: skip

    def score(self, batch: EvalBatch) -> torch.Tensor:
        return self.model.logits(self.model(batch.users, batch.history[:, -self.config.max_len :] + 1))
