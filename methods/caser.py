"""Caser (Tang & Wang, 2018): convolutional sequence embedding.

The last L item embeddings form an L x d "image".  Horizontal filters of heights 1..L
(``nh`` each, ReLU, max-pooled over time) capture union-level and skip patterns; ``nv``
vertical filters (L x 1) take weighted sums of the L embeddings.  Both are concatenated,
dropped out and projected to z (d, ReLU); the prediction layer scores item i from
[z; P_u] with its own output embedding W'_i (2d) and bias b'_i, as in the paper.

Training: one example per next-item target with the L items before it and the user
(``bench.batching.last_item_windows``; the paper's T = 1 case, as in RecBole), Adam with the
paper's L2 as weight decay.  ``caser``: full softmax cross-entropy over the catalog (RecBole's
default loss; much stronger than the paper's).  ``caser-bce``: the paper's loss, binary
cross-entropy of the target against 3 sampled negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.config import zero_allowed
from bench.errors import UserError
from methods.last_items import LastItemsMethod, check_loss


@dataclass
class CaserConfig:
    dim: int = 50  # paper: d = 50
    max_len: int = 5  # L, the number of recent items read (paper: L = 5)
    nv: int = zero_allowed(4)  # vertical filters (paper and RecBole: 4)
    nh: int = zero_allowed(16)  # horizontal filters per height (paper: 16; RecBole: 8)
    dropout: float = 0.5  # paper: 0.5 (RecBole: 0.4)
    lr: float = 1e-3  # paper and RecBole
    weight_decay: float = 1e-6  # paper's L2 (chosen from {1e-6..1e-1} per dataset; RecBole reg 1e-4)
    batch_size: int = 512  # paper
    epochs: int = 100
    patience: int = 5
    eval_every: int = 1
    loss: str = "ce"  # "ce": full softmax over the catalog (RecBole default); "bce": the paper's sampled BCE
    negatives: int = 3  # sampled negatives per target for a sampled loss (paper: 3)

    def __post_init__(self):
        check_loss("caser", self.loss, self.negatives)
        if self.max_len < 1 or self.nh < 0 or self.nv < 0 or self.nh + self.nv == 0:
            raise UserError("options caser.max_len >= 1, caser.nh >= 0, caser.nv >= 0 with nh + nv > 0 expected")


class CaserModel(torch.nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: CaserConfig):
        super().__init__()
        d, L = cfg.dim, cfg.max_len
        self.L, self.nv, self.nh = L, cfg.nv, cfg.nh
        self.item = torch.nn.Embedding(n_items + 1, d, padding_idx=0)  # 0 = padding, item i -> i + 1
        self.user = torch.nn.Embedding(n_users, d)
        # The convolutions written as matrix products (much faster on CPU than Conv2d at these
        # shapes): vertical filter k is a weight per position, F_v[k] = sum_l w[k, l] E[l]; a
        # horizontal filter of height h is a linear map of each window of h consecutive rows.
        self.conv_v = torch.nn.Linear(L, cfg.nv) if cfg.nv else None
        self.conv_h = torch.nn.ModuleList(torch.nn.Linear(h * d, cfg.nh) for h in range(1, L + 1)) if cfg.nh else None
        self.fc1 = torch.nn.Linear(cfg.nv * d + cfg.nh * L, d)
        self.drop = torch.nn.Dropout(cfg.dropout)
        self.out = torch.nn.Embedding(n_items, 2 * d)  # W' (prediction layer on [z; P_u])
        self.out_bias = torch.nn.Embedding(n_items, 1)  # b'
        for emb in (self.item, self.user, self.out):
            torch.nn.init.normal_(emb.weight, std=1.0 / d)
        torch.nn.init.zeros_(self.out_bias.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, users: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """``seq``: (B, L) shifted ids (0 = padding), right-aligned. Returns [z; P_u], (B, 2d)."""
        x = self.item(seq)  # (B, L, d)
        parts = []
        if self.conv_v is not None:
            parts.append(self.conv_v(x.transpose(1, 2)).transpose(1, 2).flatten(1))  # (B, nv * d), no activation (paper)
        if self.conv_h is not None:
            for height, conv in enumerate(self.conv_h, 1):
                windows = x.unfold(1, height, 1).transpose(2, 3).flatten(2)  # (B, L - height + 1, height * d), rows in order
                parts.append(F.relu(conv(windows)).amax(1))  # (B, nh), max-pooled over positions
        z = F.relu(self.fc1(self.drop(torch.cat(parts, 1))))
        return torch.cat([z, self.user(users)], 1)

    def output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prediction layer: W' (n_items, 2d) and b' (n_items,)."""
        return self.out.weight, self.out_bias.weight[:, 0]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        weight, bias = self.output()
        return h @ weight.T + bias


class Caser(LastItemsMethod):
    name = "caser"
    description = "Caser: horizontal + vertical convolutions over the last L items and a user embedding"
    Config = CaserConfig
    presets = {"cpu": {}}  # the defaults fit: one Scientific seed trains to early stopping on one core (docs/protocol.md §5)
    Model = CaserModel


@dataclass
class CaserBCEConfig(CaserConfig):
    loss: str = "bce"


class CaserBCE(Caser):
    name = "caser-bce"
    description = "Caser with the paper's loss: binary cross-entropy against 3 sampled negatives per target"
    Config = CaserBCEConfig
