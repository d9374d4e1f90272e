"""RQ-KMeans semantic IDs: residual k-means on the item embeddings, no trained quantizer.

As GRID, OneRec and MiniOneRec build their IDs: level 0 clusters the embeddings themselves
into ``codebook_size`` clusters (scikit-learn's k-means, k-means++ initialisation,
``kmeans_n_init`` starts of up to ``kmeans_iters`` iterations, seeded); each item takes its
nearest centre; level l clusters what the levels before left (r_{l+1} = r_l - centre_l), and so
on for ``levels`` levels.  Collisions are handled as for the RQ-VAE
(:func:`methods.semid.rqvae.resolve_collisions`: TIGER's counting level, LETTER's Sinkhorn
re-assignment of the last level, or none).  Chosen with ``RQVAEConfig.method = "rkmeans"``
(``--set tiger.rq_method=rkmeans``; ``tiger-rkmeans`` is TIGER with it).

The RQ-VAE's training options (epochs, learning rate, latent size, widths) do not apply.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from bench.errors import UserError
from bench.semantic_ids import SemanticIDs
from methods.semid.rqvae import RQVAEConfig, _kmeans, collision_stats, resolve_collisions

# The options of RQVAEConfig that residual k-means reads (the record's config lists only these).
RKMEANS_OPTIONS = ("method", "levels", "codebook_size", "kmeans_iters", "kmeans_n_init", "collisions", "sinkhorn_epsilon",
                   "sinkhorn_iters", "sinkhorn_rounds")  # fmt: skip


def residual_kmeans(x: np.ndarray, levels: int, k: int, iters: int, n_init: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[dict[str, Any]]]:  # fmt: skip
    """Codes (n, levels), the last level's residuals (n, d), each level's centres (k, d) and
    per-level facts of residual k-means on the rows of ``x`` (float64 throughout)."""
    r = np.asarray(x, dtype=np.float64)
    codes, books, facts = [], [], []
    for level in range(levels):
        t0 = time.perf_counter()
        centres, fact = _kmeans(r, k, iters, seed + level, "kmeans", n_init)
        centres = centres.astype(np.float64)
        dist = (r**2).sum(1, keepdims=True) - 2 * r @ centres.T + (centres**2).sum(1)[None, :]
        c = dist.argmin(1)
        codes.append(c)
        books.append(centres)
        last = r
        r = r - centres[c]
        facts.append({**fact, "level": level, "seconds": round(time.perf_counter() - t0, 3)})
    return np.stack(codes, 1).astype(np.int64), last, books, facts


def train_rkmeans(embeddings: np.ndarray, cfg: RQVAEConfig, seed: int = 0) -> SemanticIDs:
    """Every item's ID by residual k-means on ``embeddings`` (n_items, d), collisions handled as
    ``cfg.collisions`` says; deterministic for a seed.  Reached through
    :func:`methods.semid.rqvae.train_rqvae` with ``cfg.method = "rkmeans"``."""
    cfg.check()
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
        raise UserError(f"rkmeans needs a finite (n_items, d) embedding matrix, got shape {x.shape}")
    start = time.perf_counter()
    codes, last_residual, books, facts = residual_kmeans(x, cfg.levels, cfg.codebook_size, cfg.kmeans_iters, cfg.kmeans_n_init, seed)
    before = collision_stats(codes)
    info: dict[str, Any] = {
        "config": {k: v for k, v in asdict(cfg).items() if k in RKMEANS_OPTIONS},
        "seed": int(seed),
        "kmeans": facts,
        "semantic_levels": int(cfg.levels),
        "before_collision_handling": before,
        "collisions": cfg.collisions,
    }
    last_book = torch.from_numpy(books[-1])
    codes, sizes, source, more = resolve_collisions(codes, last_residual, last_book, cfg)
    info.update(more)
    info["after_collision_handling"] = collision_stats(codes)
    info["seconds"] = time.perf_counter() - start
    return SemanticIDs(codes, sizes, source, info)
