"""LightGCN (He et al., SIGIR 2020).

The user-item bipartite graph of the *training* interactions, normalized symmetrically
(``D^-1/2 A D^-1/2``) and held as one ``torch.sparse`` tensor on the device.  Embeddings are
propagated through ``layers`` weight-free, nonlinearity-free layers; a node's final
embedding is the mean of its layer-0..K embeddings.  Trained with BPR on (user, positive,
sampled negative) triples and an L2 penalty on the batch's layer-0 ("ego") embeddings,
``reg * (||u0||^2 + ||p0||^2 + ||n0||^2) / (2 B)`` as in the paper's code.  (RecBole 1.2.1's
default ``EmbLoss`` uses the un-squared Frobenius norms instead, weight 1e-5.)  Each
training step propagates the whole graph, as in the paper and RecBole; at evaluation the
propagated embeddings are computed once and cached until the model trains again.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import zero_allowed
from bench.batching import NegativeSampler, shuffled_batches
from bench.method import EvalBatch, Method
from bench.training import adam, train


@dataclass
class LightGCNConfig:
    dim: int = 64
    layers: int = zero_allowed(2)  # propagation layers K (0 = plain MF on the ego embeddings)
    lr: float = 1e-3
    reg: float = 1e-4  # L2 on the batch's ego embeddings (paper form, see the module docstring)
    batch_size: int = 2048
    epochs: int = 300
    patience: int = 10
    eval_every: int = 5
    max_len: int = 0  # reads no history at test time: the user node carries it


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, device: torch.device) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite graph with nodes ``[users, items]`` (item i is
    node ``n_users + i``) and an edge per distinct (user, item) pair, as a coalesced sparse
    COO tensor of shape (n_users + n_items,) * 2.  Isolated nodes get an all-zero row."""
    n = n_users + n_items
    key = np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))
    u = torch.from_numpy(key // n_items).to(device)
    i = torch.from_numpy(key % n_items).to(device) + n_users
    rows = torch.cat([u, i])
    cols = torch.cat([i, u])
    degree = torch.bincount(rows, minlength=n).float()
    inv_sqrt = torch.where(degree > 0, degree.clamp_min(1).rsqrt(), torch.zeros_like(degree))
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()


def to_csr(adjacency: torch.Tensor) -> torch.Tensor:
    """The COO adjacency as CSR, the fastest layout for ``adj @ dense`` on CPU and CUDA."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return adjacency.to_sparse_csr()


class SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``: the gradient is ``adj @ grad`` again, which
    avoids the transpose that the generic sparse backward builds on every call (about 4x
    faster per training step on CPU).  Always fp32: sparse CSR kernels have no bf16, so the
    propagation stays out of autocast."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        with torch.autocast(adj.device.type, enabled=False):
            return adj @ x.float()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        with torch.autocast(ctx.adj.device.type, enabled=False):
            return None, ctx.adj @ grad.float()


class LightGCNModel(torch.nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, layers: int, adjacency: torch.Tensor):
        super().__init__()
        self.n_users, self.layers = n_users, layers
        self.user = torch.nn.Embedding(n_users, dim)
        self.item = torch.nn.Embedding(n_items, dim)
        torch.nn.init.xavier_uniform_(self.user.weight)  # RecBole's initialisation
        torch.nn.init.xavier_uniform_(self.item.weight)
        self.adjacency = adjacency  # COO, symmetric; a plain attribute: not a parameter, not in the state dict
        self._adj_csr = to_csr(adjacency)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (layer-mean) user and item embeddings."""
        x = torch.cat([self.user.weight, self.item.weight])
        total = x
        for _ in range(self.layers):
            x = SymmetricSpMM.apply(self._adj_csr, x)
            total = total + x
        final = total / (self.layers + 1)
        return final[: self.n_users], final[self.n_users :]

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated embeddings; cached while in eval mode (cleared by ``train``/``eval``/loading)."""
        if self.training:
            return self.propagate()
        if self._cache is None:
            with torch.no_grad():
                self._cache = self.propagate()
        return self._cache

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._cache = None
        return super().load_state_dict(*args, **kwargs)


class LightGCN(Method):
    name = "lightgcn"
    description = "LightGCN: weight-free graph propagation on the user-item graph, BPR"
    Config = LightGCNConfig
    presets = {"cpu": {}}  # the defaults fit: one Scientific seed trains to early stopping on one core (docs/protocol.md §5)
    output = "scores"

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        rows, items = data.train.user_item_pairs()
        adjacency = normalized_adjacency(rows, items, data.n_users, data.n_items, self.device)
        self.model = LightGCNModel(data.n_users, data.n_items, config.dim, config.layers, adjacency).to(self.device)

    def fit(self) -> None:
        cfg, dev = self.config, self.device
        rows, items = self.data.train.user_item_pairs()
        users = torch.from_numpy(rows.astype(np.int64)).to(dev)
        pos = torch.from_numpy(items.astype(np.int64)).to(dev)
        gen = self.ctx.torch_generator("lightgcn", "train")
        sampler = NegativeSampler(users, pos, self.data.n_items, gen)
        model = self.model
        opt = adam(model.parameters(), lr=cfg.lr)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            u, p = users[idx], pos[idx]
            n = sampler.draw(u)
            user_final, item_final = model.propagate()
            ue, pe, ne = user_final[u], item_final[p], item_final[n]
            diff = ((ue * pe).sum(1) - (ue * ne).sum(1)).float()
            ego = model.user.weight[u].pow(2).sum() + model.item.weight[p].pow(2).sum() + model.item.weight[n].pow(2).sum()
            return -F.logsigmoid(diff).mean() + cfg.reg * ego.float() / (2 * len(u))

        train(self.ctx, model, opt, loss, lambda: shuffled_batches(len(users), cfg.batch_size, gen, dev),
              cfg.epochs, cfg.patience, cfg.eval_every)  # fmt: skip

    def score(self, batch: EvalBatch) -> torch.Tensor:
        user_final, item_final = self.model.final_embeddings()
        return user_final[batch.users] @ item_final.T
