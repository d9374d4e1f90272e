"""iALS: implicit-feedback alternating least squares (Hu, Koren & Volinsky, 2008) through the
``implicit`` library.

The training interactions form a binary user x item matrix ``R``; ``implicit`` is given
``alpha * R`` as confidences (its solver weighs a positive with that value and every
unobserved pair with 1, so ``alpha`` should be well above 1).  The matrix is scaled here and
the library's own ``alpha`` left at 1, because implicit 0.7.3's GPU ``fit`` ignores ``alpha``
while its CPU ``fit`` applies it.  Training runs one ALS sweep
(users, then items) per call of ``fit`` with ``iterations=1``: ``implicit`` keeps the factors
of an already fitted model and continues from them, so the validation metric is read after
every sweep and the best sweep's factors are kept (``Selection``).  ``implicit.gpu`` is used
when the method's device is CUDA and ``implicit`` was built with CUDA, otherwise
``implicit.cpu`` with ``threads`` threads (0 = torch's intra-op thread count).  Scores are
``user_factors[u] @ item_factors.T`` as a torch tensor on the method's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from bench.errors import UserError
from bench.method import EvalBatch, Method
from bench.training import Selection


@dataclass
class IALSConfig:
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 10.0  # confidence of an observed interaction (unobserved pairs weigh 1)
    iterations: int = 30  # ALS sweeps at most; the best one on validation is kept
    patience: int = 5
    eval_every: int = 1
    threads: int = 0  # implicit's CPU threads; 0 = torch.get_num_threads()
    max_len: int = 0  # reads no history at test time: the user factors carry it


class Factors(torch.nn.Module):
    """The fitted factors as torch tensors, so that ``Selection`` can keep the best sweep."""

    def __init__(self, n_users: int, n_items: int, factors: int):
        super().__init__()
        self.user = torch.nn.Parameter(torch.zeros(n_users, factors))
        self.item = torch.nn.Parameter(torch.zeros(n_items, factors))

    @torch.no_grad()
    def set(self, user: np.ndarray, item: np.ndarray) -> None:
        self.user.copy_(torch.from_numpy(np.ascontiguousarray(user, dtype=np.float32)))
        self.item.copy_(torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32)))


def _numpy(factors) -> np.ndarray:
    return factors.to_numpy() if hasattr(factors, "to_numpy") else np.asarray(factors)  # implicit.gpu.Matrix or ndarray


class IALS(Method):
    name = "ials"
    description = "iALS (implicit library): weighted matrix factorization by alternating least squares"
    Config = IALSConfig
    presets = {"cpu": {}}  # the defaults fit: one Scientific seed trains to early stopping on one core (docs/protocol.md §5)
    output = "scores"

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        for field in ("factors", "iterations", "eval_every"):
            if getattr(config, field) < 1:
                raise UserError(f"ials.{field} = {getattr(config, field)}: expected a positive integer")
        if config.alpha <= 0 or config.regularization < 0 or config.threads < 0:
            raise UserError("ials: expected alpha > 0, regularization >= 0 and threads >= 0")
        self.model = Factors(data.n_users, data.n_items, config.factors).to(self.device)
        self.backend = ""
        self._als_threads = 0

    def _make_als(self):
        import implicit.cpu.als
        import implicit.gpu

        cfg = self.config
        seed = self.ctx.seed_for("ials", "init")
        if self.device.type == "cuda" and implicit.gpu.HAS_CUDA:
            import implicit.gpu.als

            self.backend = "implicit.gpu"
            return implicit.gpu.als.AlternatingLeastSquares(cfg.factors, cfg.regularization, 1.0, iterations=1, random_state=seed)
        self.backend = "implicit.cpu"
        threads = self._als_threads = cfg.threads or torch.get_num_threads()
        return implicit.cpu.als.AlternatingLeastSquares(
            cfg.factors, cfg.regularization, 1.0, iterations=1, num_threads=threads, random_state=seed
        )

    def fit(self) -> None:
        cfg = self.config
        rows, items = self.data.train.user_item_pairs()
        matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, items)), shape=(self.data.n_users, self.data.n_items))
        matrix.data[:] = cfg.alpha  # repeated (user, item) pairs count once
        als = self._make_als()
        self.ctx.info["backend"] = self.backend
        for _ in Selection(self.ctx, self.model, cfg.iterations, cfg.patience, cfg.eval_every):
            als.fit(matrix, show_progress=False)  # one sweep, continuing from the current factors
            self.model.set(_numpy(als.user_factors), _numpy(als.item_factors))

    def score(self, batch: EvalBatch) -> torch.Tensor:
        return self.model.user[batch.users] @ self.model.item.T
