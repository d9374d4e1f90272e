"""HGN (Ma, Kang & Liu, 2019): Hierarchical Gating Network.

Over the last L item embeddings E (L x d) of a user u:

* feature gating: E_f = E * sigmoid(E W1 + P_u W2 + b)   (per item, per feature);
* instance gating: g = sigmoid(E_f w3 + P_u W4)           (one weight per position);
  the gated items are average-pooled, s = sum_k g_k E_f,k / sum_k g_k (padding excluded);
* item-item product: the plain sum of the L input embeddings.

Item j is scored as (P_u + s + sum_k E_k) . Q_j with a separate output embedding Q, as in
the paper and RecBole.  ``hgn``: full softmax cross-entropy over the catalog, RecBole's default
for HGN (RecBole's reg_weight defaults to 0, so no extra L2).  ``hgn-bpr``: the paper's BPR
loss against one sampled negative per target.  L = 5 as in the paper (for
RecBole L is its maximum sequence length); training examples are every next-item target
with the L items before it (``bench.batching.last_item_windows``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.errors import UserError
from methods.last_items import LastItemsMethod, check_loss


@dataclass
class HGNConfig:
    dim: int = 64  # RecBole embedding_size (paper: 50)
    max_len: int = 5  # L (paper: 5)
    lr: float = 1e-3  # paper and RecBole
    weight_decay: float = 0.0  # RecBole reg_weight [0, 0]
    batch_size: int = 512
    epochs: int = 100
    patience: int = 5
    eval_every: int = 1
    loss: str = "ce"  # "ce": RecBole default; "bpr": the paper's loss
    negatives: int = 1  # sampled negatives per target for a sampled loss

    def __post_init__(self):
        check_loss("hgn", self.loss, self.negatives)
        if self.max_len < 1:
            raise UserError(f"option hgn.max_len: expected >= 1, got {self.max_len}")


class HGNModel(torch.nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: HGNConfig):
        super().__init__()
        d, L = cfg.dim, cfg.max_len
        self.item = torch.nn.Embedding(n_items + 1, d, padding_idx=0)  # 0 = padding, item i -> i + 1
        self.user = torch.nn.Embedding(n_users, d)
        self.w1 = torch.nn.Linear(d, d, bias=False)
        self.w2 = torch.nn.Linear(d, d, bias=False)
        self.b = torch.nn.Parameter(torch.zeros(d))
        self.w3 = torch.nn.Linear(d, 1, bias=False)
        self.w4 = torch.nn.Linear(d, L, bias=False)  # per-user weight of each of the L positions
        self.out = torch.nn.Embedding(n_items, d)  # Q, the output item embedding
        for emb in (self.item, self.user, self.out):
            torch.nn.init.normal_(emb.weight, std=1.0 / d)
        for lin in (self.w1, self.w2, self.w3, self.w4):
            torch.nn.init.xavier_uniform_(lin.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, users: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """``seq``: (B, L) shifted ids (0 = padding), right-aligned. Returns (B, d)."""
        e = self.item(seq)  # (B, L, d), zero rows at padding
        pu = self.user(users)
        ef = e * torch.sigmoid(self.w1(e) + self.w2(pu).unsqueeze(1) + self.b)
        gate = torch.sigmoid(self.w3(ef).squeeze(-1) + self.w4(pu)) * (seq > 0)  # (B, L)
        s = (gate.unsqueeze(-1) * ef).sum(1) / gate.sum(1, keepdim=True).clamp_min(1e-8)
        return pu + s + e.sum(1)

    def output(self) -> tuple[torch.Tensor, None]:
        """The output item embeddings Q (n_items, d); no bias."""
        return self.out.weight, None

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.output()[0].T


class HGN(LastItemsMethod):
    name = "hgn"
    description = "HGN: feature and instance gating over the last L items, user embedding, item-item product"
    Config = HGNConfig
    presets = {"cpu": {}}  # the defaults fit: one Scientific seed trains to early stopping on one core (docs/protocol.md §5)
    Model = HGNModel


@dataclass
class HGNBPRConfig(HGNConfig):
    loss: str = "bpr"


class HGNBPR(HGN):
    name = "hgn-bpr"
    description = "HGN with the paper's loss: BPR against one sampled negative per target"
    Config = HGNBPRConfig
