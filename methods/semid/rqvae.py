"""The RQ-VAE tokenizer (TIGER, LETTER, LC-Rec, BLOGER) and indices given from outside.

Model: an MLP encoder maps an item's text embedding to a small latent z (32 dims by
default); ``levels`` codebooks of ``codebook_size`` codes quantize it residually
(r_0 = z, code_l = argmin_c ||r_l - e_l,c||, r_{l+1} = r_l - e_l,code_l); a mirrored MLP
decoder reconstructs the embedding from the sum of the chosen codewords (straight-through
gradient to z). Loss = reconstruction + quantization, both means, as LETTER's, GRID's and
cornac's code (docs/protocol.md): reconstruction = mean over the batch and the input
dimensions of (x - x_hat)^2 (MSE); quantization = mean over the levels of
MSE(e_l, sg[r_l]) + beta MSE(r_l, sg[e_l]), each MSE a mean over the batch and the latent
dimensions. Extra losses (LETTER's alpha and beta terms) are added to this, so their weights
mean what they mean in LETTER's code. Codebooks start from k-means on the residuals of all
items (or of the first batch), level by level, with the untrained encoder, seeded:
``kmeans_init = "kmeans"`` (TIGER; scikit-learn k-means, ``kmeans_n_init`` starts of up to
``kmeans_iters`` iterations), ``"constrained"`` (LETTER; k-means-constrained, cluster sizes
between min(n / (2 K), 50) and 4 times that, as LETTER's code; LETTER runs 10 starts of 10
iterations) or ``"none"`` (random codebooks).

Collisions (several items with one code tuple), ``RQVAEConfig.collisions``:

* ``"count"`` (TIGER): append a level whose code numbers the items within each group of
  identical tuples (0, 1, ...), so every item's ID is unique; its size = the largest group.
* ``"sinkhorn"`` (LETTER, LC-Rec): re-assign the last level of each colliding group by a
  Sinkhorn-Knopp assignment with uniform marginals over that level's (centred) codeword
  distances, repeated until no collisions remain or ``sinkhorn_rounds`` is reached (exact
  duplicates, e.g. items with identical text, can remain; the count is recorded).
* ``"none"``: keep the tuples as they are.

``train_sinkhorn`` (LETTER, LC-Rec: last-level Sinkhorn epsilon 0.003 in training) assigns the
last level of each training batch by the same uniform Sinkhorn plan instead of argmin.

Extra tokenizer losses (LETTER's collaborative and diversity regularizers) plug in through
``extra_loss``: a callable ``extra_loss(step: Step) -> Tensor`` added to the loss of every
batch; if it has a method ``start_epoch(epoch, model)``, that is called before each epoch
(e.g. to re-cluster the codebooks).

:func:`external_index` reads an index made elsewhere (LETTER's released ``X.index.json``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.config import zero_allowed
from bench.errors import UserError
from bench.method import TrainData
from bench.semantic_ids import SemanticIDs
from methods.semid.constrained import fit_constrained

COLLISIONS = ("count", "sinkhorn", "none")
KMEANS_ON = ("all", "first_batch")
KMEANS_INIT = ("kmeans", "constrained", "none")
RQ_METHODS = ("rqvae", "rkmeans")  # a trained RQ-VAE | residual k-means on the embeddings (methods/semid/rkmeans.py)


@dataclass
class RQVAEConfig:
    method: str = "rqvae"  # rqvae | rkmeans (no trained quantizer: k-means++ per level on the embeddings' residuals)
    latent_dim: int = 32
    hidden: tuple[int, ...] = (512, 256, 128)  # encoder widths (TIGER); the decoder mirrors them
    levels: int = 3  # semantic levels (TIGER 3; LETTER / LC-Rec / BLOGER 4)
    codebook_size: int = 256
    beta: float = 0.25  # commitment weight
    dropout: float = 0.0
    lr: float = 1e-3  # AdamW (LETTER: lr 1e-3, weight decay 1e-4, batch 1024)
    weight_decay: float = 1e-4
    batch_size: int = zero_allowed(1024)  # 0 = full batch
    epochs: int = 20000  # LETTER's and TIGER's tokenizer run 20k epochs; lower it on CPU
    kmeans_init: str = "kmeans"  # kmeans (TIGER) | constrained (LETTER) | none
    kmeans_on: str = "all"  # all | first_batch: the items whose residuals initialise the codebooks
    kmeans_iters: int = 100  # per start (LETTER's constrained k-means: 10)
    kmeans_n_init: int = 1  # starts, the best kept (LETTER: 10)
    collisions: str = "count"  # count (TIGER) | sinkhorn (LETTER, LC-Rec) | none
    sinkhorn_epsilon: float = 0.003  # LETTER's last-level epsilon
    sinkhorn_iters: int = 50
    sinkhorn_rounds: int = 20
    train_sinkhorn: bool = False  # LETTER / LC-Rec: the last level's training-time assignment is Sinkhorn over the batch
    log_every: int = 100  # epochs between entries of info["loss_curve"]

    def check(self) -> None:
        if self.method not in RQ_METHODS:
            raise UserError(f"rq method must be one of {', '.join(RQ_METHODS)}, got {self.method!r}")
        if self.collisions not in COLLISIONS:
            raise UserError(f"rqvae collisions must be one of {', '.join(COLLISIONS)}, got {self.collisions!r}")
        if self.kmeans_init not in KMEANS_INIT:
            raise UserError(f"rqvae kmeans_init must be one of {', '.join(KMEANS_INIT)}, got {self.kmeans_init!r}")
        if self.kmeans_on not in KMEANS_ON:
            raise UserError(f"rqvae kmeans_on must be one of {', '.join(KMEANS_ON)}, got {self.kmeans_on!r}")
        for name in ("latent_dim", "levels", "codebook_size", "epochs", "kmeans_iters", "kmeans_n_init"):
            if getattr(self, name) < 1:
                raise UserError(f"rqvae {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 0:
            raise UserError(f"rqvae batch_size must be >= 0 (0 = full batch), got {self.batch_size}")
        if (self.collisions == "sinkhorn" or self.train_sinkhorn) and not self.sinkhorn_epsilon > 0:
            raise UserError(f"rqvae sinkhorn_epsilon must be > 0 where Sinkhorn assigns codes, got {self.sinkhorn_epsilon}")


@dataclass
class Step:
    """What an extra loss sees for one batch."""

    epoch: int
    index: torch.Tensor  # (B,) item indices of the batch
    x: torch.Tensor  # (B, d_in) input embeddings
    z: torch.Tensor  # (B, latent) encoder output
    z_q: torch.Tensor  # (B, latent) sum of the chosen codewords (gradient reaches the codebooks)
    codes: torch.Tensor  # (B, levels) chosen codes
    residuals: list[torch.Tensor]  # per level, the residual that level quantized
    model: RQVAE


ExtraLoss = Callable[[Step], torch.Tensor]


def _sq_dist(r: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """(B, K) squared distances between rows of ``r`` and codewords."""
    return r.pow(2).sum(1, keepdim=True) - 2 * r @ book.T + book.pow(2).sum(1)[None, :]


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = _mlp([in_dim, *cfg.hidden, cfg.latent_dim], cfg.dropout)
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden), in_dim], cfg.dropout)
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(cfg.codebook_size, cfg.latent_dim) / math.sqrt(cfg.latent_dim)) for _ in range(cfg.levels)]
        )

    @staticmethod
    def nearest(r: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
        return _sq_dist(r, book).argmin(1)

    def quantize(self, z: torch.Tensor, balance_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """codes (B, levels), z_q = sum of chosen codewords (B, latent), residuals per level.

        ``balance_last``: assign the last level by a uniform Sinkhorn plan over the rows instead of argmin."""
        r = z
        codes, residuals = [], []
        z_q = torch.zeros_like(z)
        for level, book in enumerate(self.codebooks):
            if balance_last and level == len(self.codebooks) - 1:
                c = sinkhorn(_sq_dist(r.detach(), book.detach()), self.cfg.sinkhorn_epsilon, self.cfg.sinkhorn_iters).argmax(1)
            else:
                c = self.nearest(r.detach(), book)
            e = book[c]
            residuals.append(r)
            codes.append(c)
            z_q = z_q + e
            r = r - e
        return torch.stack(codes, 1), z_q, residuals

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        z = self.encoder(x)
        codes, z_q, residuals = self.quantize(z, balance_last=self.training and self.cfg.train_sinkhorn)
        quant = z.new_zeros(())
        for r, book, c in zip(residuals, self.codebooks, codes.unbind(1)):
            e = book[c]
            quant = quant + F.mse_loss(e, r.detach()) + self.cfg.beta * F.mse_loss(r, e.detach())
        quant = quant / len(self.codebooks)
        x_hat = self.decoder(z + (z_q - z).detach())
        recon = F.mse_loss(x_hat, x)
        return {"z": z, "z_q": z_q, "codes": codes, "residuals": residuals, "recon": recon, "quant": quant}

    def code_probs(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(B, levels, codebook_size) soft code probabilities of inputs ``x`` (B, d_in) given their
        codes (B, levels): per level, softmax(-||r_l - e_l,c||^2) over the level's codewords,
        where r_l is the residual the level quantizes (r_0 = the encoder output, r_{l+1} = r_l
        minus the item's chosen codeword).  Differentiable in the encoder and the codebooks."""
        r = self.encoder(x)
        probs = []
        for book, c in zip(self.codebooks, codes.unbind(1)):
            probs.append(torch.softmax(-_sq_dist(r, book), -1))
            r = r - book[c]
        return torch.stack(probs, 1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Codes (n, levels) and last-level residuals (n, latent) of every row of ``x``."""
        codes, last = [], []
        for start in range(0, len(x), batch_size):
            c, _, res = self.quantize(self.encoder(x[start : start + batch_size]))
            codes.append(c.cpu())
            last.append(res[-1].cpu())
        return torch.cat(codes).numpy(), torch.cat(last).numpy()


def _kmeans(points: np.ndarray, k: int, iters: int, seed: int, method: str = "kmeans", n_init: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """k centres of ``points``: scikit-learn k-means (``method="kmeans"``) or k-means-constrained
    (``"constrained"``, LETTER's bounds: every cluster holds between min(n // (2 k), 50) and 4x
    that many points; the upper bound is raised to n / k and capped at n where tiny inputs
    need it); ``n_init`` starts of up to ``iters`` iterations, the lowest inertia kept. With
    fewer distinct points than k, the remaining centres are seeded random points plus small
    noise (recorded)."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    n = len(points)
    distinct = len(np.unique(points, axis=0))
    k_fit = min(k, distinct)
    fact: dict[str, Any] = {"method": method, "n_init": int(n_init)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on tiny inputs
        if method == "constrained":
            size_min = min(n // (2 * k_fit), 50)
            size_max = min(n, max(4 * size_min, math.ceil(n / k_fit)))
            km = fit_constrained(points, n_clusters=k_fit, size_min=size_min, size_max=size_max, n_init=n_init, max_iter=iters,
                                 random_state=seed, n_jobs=1)  # fmt: skip
            sizes = np.bincount(km.labels_, minlength=k_fit)
            fact.update(size_min=int(size_min), size_max=int(size_max), smallest=int(sizes.min()), largest=int(sizes.max()))
        else:
            km = KMeans(n_clusters=k_fit, n_init=n_init, max_iter=iters, random_state=seed).fit(points)
    centres = km.cluster_centers_
    if k_fit < k:
        extra = points[rng.integers(n, size=k - k_fit)]
        scale = points.std() if points.size else 1.0
        centres = np.concatenate([centres, extra + rng.normal(0, 1e-3 * (scale or 1.0), extra.shape)])
    fact.update(fit_clusters=int(k_fit), inertia=float(km.inertia_), iterations=int(km.n_iter_))
    return centres.astype(np.float32), fact


@torch.no_grad()
def kmeans_init(model: RQVAE, x: torch.Tensor, iters: int, seed: int, method: str = "kmeans", n_init: int = 1) -> list[dict[str, Any]]:
    """Set each codebook to k-means centres (``method``: kmeans | constrained) of the residuals
    of ``x`` left by the levels before."""
    r = model.encoder(x)
    facts = []
    for level, book in enumerate(model.codebooks):
        t0 = time.perf_counter()
        centres, fact = _kmeans(r.detach().cpu().double().numpy(), len(book), iters, seed + level, method, n_init)
        book.data.copy_(torch.from_numpy(centres).to(book.device))
        r = r - book[model.nearest(r, book)]
        facts.append({**fact, "seconds": round(time.perf_counter() - t0, 3)})
    return facts


def _group_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the index of its unique tuple, and each unique tuple's count."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def collision_stats(codes: np.ndarray) -> dict[str, Any]:
    n = len(codes)
    _, counts = _group_ids(codes)
    return {
        "unique_ids": len(counts),
        "collision_rate": float(1 - len(counts) / max(1, n)),
        "items_in_collision_groups": int(counts[counts > 1].sum()),
        "largest_group": int(counts.max()) if n else 0,
    }


def count_level(codes: np.ndarray) -> np.ndarray:
    """TIGER's extra level: each item's rank (0, 1, ...) among the items sharing its tuple, in item order."""
    inverse, counts = _group_ids(codes)
    order = np.argsort(inverse, kind="stable")  # items grouped by tuple, item order within a group
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - starts[inverse[order]]
    return rank


# Largest 1 / epsilon for which the plan is computed with scaling vectors on exp(-cost / epsilon)
# in float64: the kernel then spans e^-350..e^350, and the scalings stay inside float64's range.
# LETTER's epsilon 0.003 (1 / 333) is below it; a smaller epsilon takes the log-domain iteration.
SINKHORN_SCALING_MAX_INV_EPS = 350.0


def sinkhorn(cost: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """Transport plan (B, K) with uniform marginals (rows 1/B, columns 1/K) for ``cost``, scaled
    by B (each row sums to 1 after the last, column, normalization); ``cost`` is centred to
    [-1, 1] first, as LETTER does.

    Each iteration normalizes the rows, then the columns, as LETTER's code. For
    1 / epsilon <= :data:`SINKHORN_SCALING_MAX_INV_EPS` the plan is diag(u) G diag(v) with the
    kernel G = exp(-cost / epsilon) in float64 and the scalings updated by two matrix-vector
    products per iteration (as LETTER, which normalizes exp(-cost / epsilon) in place; 10x faster
    than the log domain at 1024 x 256 on one CPU thread); otherwise, or if that overflows, the
    same iteration runs in the log domain."""
    cost = cost.double()
    mid = (cost.max() + cost.min()) / 2
    amp = cost.max() - mid + 1e-5
    log_g = -((cost - mid) / amp) / epsilon
    b, k = log_g.shape
    if 1.0 / epsilon <= SINKHORN_SCALING_MAX_INV_EPS:
        g = log_g.exp()
        u, v = g.new_ones(b), g.new_ones(k)
        for _ in range(iters):
            u = 1.0 / (b * (g @ v))
            v = 1.0 / (k * (g.T @ u))
        plan = u[:, None] * g * v[None, :] * b
        if bool(torch.isfinite(plan).all()):
            return plan
    log_q = log_g
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, 1, keepdim=True) - math.log(b)
        log_q = log_q - torch.logsumexp(log_q, 0, keepdim=True) - math.log(k)
    return log_q.exp() * b


@torch.no_grad()
def sinkhorn_resolve(codes: np.ndarray, last_residual: np.ndarray, book: torch.Tensor, cfg: RQVAEConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Re-assign the last level of every colliding group with a uniform Sinkhorn assignment."""
    codes = codes.copy()
    rounds = 0
    for rounds in range(1, cfg.sinkhorn_rounds + 1):
        inverse, counts = _group_ids(codes)
        colliding = np.flatnonzero(counts > 1)
        if len(colliding) == 0:
            rounds -= 1
            break
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        for g in colliding:
            members = order[starts[g] : starts[g + 1]]
            r = torch.as_tensor(last_residual[members], device=book.device, dtype=book.dtype)
            plan = sinkhorn(_sq_dist(r, book), cfg.sinkhorn_epsilon, cfg.sinkhorn_iters)
            codes[members, -1] = plan.argmax(1).cpu().numpy()
    return codes, {"sinkhorn_rounds": int(rounds)}


def train_rqvae(
    embeddings: np.ndarray,
    cfg: RQVAEConfig,
    device: torch.device | str = "cpu",
    seed: int = 0,
    extra_loss: ExtraLoss | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[RQVAE, SemanticIDs]:
    """Train an RQ-VAE on ``embeddings`` (n_items, d) and return it with every item's ID.

    Deterministic for a seed on a given device (the global RNG is forked, not disturbed).
    ``progress(epoch, losses)`` is called every ``cfg.log_every`` epochs.

    ``cfg.method = "rkmeans"``: no model is trained; the IDs come from residual k-means on the
    embeddings themselves (:func:`methods.semid.rkmeans.train_rkmeans`) and the model is None.
    """
    cfg.check()
    if cfg.method == "rkmeans":
        if extra_loss is not None:
            raise UserError("rq method 'rkmeans' trains no quantizer, so it takes no extra tokenizer loss (LETTER's regularizers); use 'rqvae'")
        from methods.semid.rkmeans import train_rkmeans  # it builds on this module

        return None, train_rkmeans(embeddings, cfg, seed)
    device = torch.device(device)
    x_np = np.asarray(embeddings, dtype=np.float32)
    if x_np.ndim != 2 or len(x_np) == 0 or not np.isfinite(x_np).all():
        raise UserError(f"rqvae needs a finite (n_items, d) embedding matrix, got shape {x_np.shape}")
    start = time.perf_counter()
    n = len(x_np)
    batch = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    x = torch.from_numpy(x_np).to(device)
    fork = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        model = RQVAE(x.shape[1], cfg).to(device)
        gen = torch.Generator(device=device).manual_seed(seed)
        init_facts = None
        if cfg.kmeans_init != "none":
            first = torch.randperm(n, generator=gen, device=device)[:batch] if cfg.kmeans_on == "first_batch" else torch.arange(n, device=device)
            init_facts = kmeans_init(model, x[first], cfg.kmeans_iters, seed, cfg.kmeans_init, cfg.kmeans_n_init)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        curve = []
        model.train()
        for epoch in range(cfg.epochs):
            if extra_loss is not None and hasattr(extra_loss, "start_epoch"):
                extra_loss.start_epoch(epoch, model)
            perm = torch.randperm(n, generator=gen, device=device) if batch < n else torch.arange(n, device=device)
            sums = torch.zeros(4, device=device)
            for s in range(0, n, batch):
                idx = perm[s : s + batch]
                out = model(x[idx])
                loss = out["recon"] + out["quant"]
                extra = torch.zeros((), device=device)
                if extra_loss is not None:
                    extra = extra_loss(Step(epoch, idx, x[idx], out["z"], out["z_q"], out["codes"], out["residuals"], model))
                    loss = loss + extra
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += torch.stack([loss.detach(), out["recon"].detach(), out["quant"].detach(), extra.detach()]) * len(idx)
            if (epoch + 1) % cfg.log_every == 0 or epoch + 1 == cfg.epochs:
                values = dict(zip(("loss", "recon", "quant", "extra"), (sums / n).tolist()))
                curve.append({"epoch": epoch + 1, **values})
                if progress is not None:
                    progress(epoch + 1, values)
        model.eval()
        codes, last_residual = model.encode(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - start

    before = collision_stats(codes)
    info: dict[str, Any] = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "seed": int(seed),
        "epochs": int(cfg.epochs),
        "train_seconds": train_seconds,
        "final_losses": {k: v for k, v in curve[-1].items() if k != "epoch"},
        "loss_curve": curve,
        "kmeans_init": init_facts,
        "semantic_levels": int(cfg.levels),
        "before_collision_handling": before,
        "collisions": cfg.collisions,
    }
    codes, sizes, source, facts = resolve_collisions(codes, last_residual, model.codebooks[-1].detach(), cfg)
    info.update(facts)
    info["after_collision_handling"] = collision_stats(codes)
    info["seconds"] = time.perf_counter() - start
    return model, SemanticIDs(codes, sizes, source, info)


def resolve_collisions(codes: np.ndarray, last_residual: np.ndarray, last_book: torch.Tensor, cfg: RQVAEConfig) -> tuple[np.ndarray, tuple[int, ...], str, dict[str, Any]]:
    """``cfg.collisions`` applied to the semantic codes (n, levels) of a residual quantizer
    (:meth:`RQVAE.encode`, or residual k-means), given each item's last residual and the last
    level's codewords: (codes, level sizes, source name, facts)."""
    sizes = [cfg.codebook_size] * cfg.levels
    source, facts = cfg.method, {}
    if cfg.collisions == "count":
        extra_level = count_level(codes)
        codes = np.concatenate([codes, extra_level[:, None]], 1)
        sizes.append(int(extra_level.max()) + 1)
        source += "+count"
    elif cfg.collisions == "sinkhorn":
        codes, facts = sinkhorn_resolve(codes, last_residual, last_book, cfg)
        source += "+sinkhorn"
    return codes, tuple(sizes), source, facts


def unique_last_level(codes: np.ndarray, last_residual: np.ndarray, book: torch.Tensor) -> tuple[np.ndarray, int]:
    """Make every row of ``codes`` unique without a counting level: in each group of items that
    share a tuple, the first item (lowest index) keeps it and each other one takes, in item
    order, the last-level code nearest to its last residual that no item with the same prefix
    (the levels before the last) uses.  Returns the codes and how many items moved.  A prefix
    shared by more items than the last level has codes keeps some collisions."""
    codes = codes.copy()
    inverse, counts = _group_ids(codes)
    moved = 0
    if (counts > 1).any():
        prefixes = {}
        for i, p in enumerate(map(tuple, codes[:, :-1].tolist())):
            prefixes.setdefault(p, set()).add(int(codes[i, -1]))
        book_np = book.detach().double().cpu().numpy()
        first = {}
        for i in range(len(codes)):
            g = inverse[i]
            if counts[g] == 1 or first.setdefault(g, i) == i:
                continue
            used = prefixes[tuple(codes[i, :-1].tolist())]
            dist = ((book_np - last_residual[i].astype(np.float64)) ** 2).sum(1)
            free = [int(c) for c in np.argsort(dist, kind="stable") if int(c) not in used]
            if free:
                codes[i, -1] = free[0]
                used.add(free[0])
                moved += 1
    return codes, moved


# ---- indices given from outside ----------------------------------------------------------
_TOKEN = re.compile(r"^<([a-z])_(\d+)>$")


def external_index(
    path: str | Path, data: TrainData, datamaps: str | Path | None = None, codebook_size: int | None = 256
) -> SemanticIDs:
    """Semantic IDs from LETTER's released index format: ``{"0": ["<a_183>", "<b_70>", ...], ...}``.

    LETTER's item i is the P5 item i + 1, whose original id (ASIN) is ``id2item`` in the P5
    folder's ``datamaps.json`` (default: next to the index file); ``data.item_ids`` holds our
    items' original ids. Every one of our items must get an ID and every indexed item must be
    one of ours. Level sizes: ``codebook_size`` (codes must fit), or max code + 1 when None.
    """
    path = Path(path)
    datamaps = Path(datamaps) if datamaps is not None else path.parent / "datamaps.json"
    if data.item_ids is None:
        raise UserError(f"{path}: dataset {data.dataset!r} carries no original item ids to map the index onto")
    for p in (path, datamaps):
        if not p.is_file():
            raise UserError(f"{p}: file not found (external index {path.name} needs it)")
    try:
        index = json.loads(path.read_text())
        id2item = json.loads(datamaps.read_text())["id2item"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path} / {datamaps}: expected a JSON index and a datamaps.json with 'id2item' ({e})") from e
    if not isinstance(index, dict) or not index:
        raise UserError(f"{path}: expected a JSON object {{item: [\"<a_1>\", ...]}}")

    ours = {str(orig): i for i, orig in enumerate(data.item_ids)}
    levels = None
    codes = np.full((data.n_items, 0), -1, dtype=np.int64)
    seen = np.zeros(data.n_items, dtype=bool)
    for key, tokens in index.items():
        if not isinstance(tokens, list) or not tokens:
            raise UserError(f"{path}: item {key!r}: expected a list of tokens like '<a_12>'")
        if levels is None:
            levels = len(tokens)
            codes = np.full((data.n_items, levels), -1, dtype=np.int64)
        if len(tokens) != levels:
            raise UserError(f"{path}: item {key!r} has {len(tokens)} tokens, the first item {levels}")
        p5_id = str(int(key) + 1) if str(key).isdigit() else None
        original = id2item.get(p5_id) if p5_id is not None else None
        if original is None:
            raise UserError(f"{path}: item {key!r} (P5 id {p5_id}) is not in {datamaps} id2item")
        item = ours.get(str(original))
        if item is None:
            raise UserError(f"{path}: item {key!r} ({original}) is not an item of dataset {data.dataset!r}")
        if seen[item]:
            raise UserError(f"{path}: item {original} appears twice")
        for level, token in enumerate(tokens):
            m = _TOKEN.match(str(token))
            if m is None or ord(m.group(1)) - ord("a") != level:
                raise UserError(f"{path}: item {key!r}: token {token!r} at level {level} is not '<{chr(ord('a') + level)}_N>'")
            codes[item, level] = int(m.group(2))
        seen[item] = True
    missing = np.flatnonzero(~seen)
    if len(missing):
        names = ", ".join(str(data.item_ids[i]) for i in missing[:5])
        raise UserError(f"{path}: {len(missing)} items of dataset {data.dataset!r} have no ID, e.g. {names}")
    top = codes.max(0) + 1
    if codebook_size is None:
        sizes = tuple(int(t) for t in top)
    else:
        if (top > codebook_size).any():
            raise UserError(f"{path}: codes up to {int(top.max()) - 1} do not fit codebook_size {codebook_size}")
        sizes = (int(codebook_size),) * levels
    stats = collision_stats(codes)
    return SemanticIDs(codes, sizes, f"external:{path.name}", {"file": str(path), "datamaps": str(datamaps), "semantic_levels": levels, **stats})
