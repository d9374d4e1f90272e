"""Tokenizer regularizers of LETTER (Wang et al., 2024), as an ``extra_loss`` of :func:`train_rqvae`.

* Collaborative regularization (:func:`collaborative_loss`): in-batch contrastive alignment
  of the quantized latent (the sum of an item's chosen codewords) with a collaborative (CF)
  embedding of the same item. As LETTER's released code: the logits are plain dot products
  ``z_q @ cf.T`` (no normalization, no temperature), cross-entropy with the diagonal as the
  target, one direction (each quantized latent picks its own CF embedding among the batch's).
  The quantized latent enters with the straight-through gradient of the reconstruction
  (value = sum of codewords, gradient to the encoder), as the released code feeds the
  straight-through output of its quantizer to this loss; the codebooks follow through their
  own codebook loss. The CF embedding has the latent's dimension (LETTER: 32 and 32, a SASRec
  with hidden size 32); no projection.
* Diversity regularization (:func:`diversity_loss`): each level's codewords are grouped into
  ``K`` clusters of equal size by constrained k-means (:func:`equal_size_clusters`, library
  ``k-means-constrained``) at the start of every epoch; for each item of the batch, the chosen
  codeword's dot products with all codewords of its level, minus its own, are the logits of a
  cross-entropy whose target is a random *other* codeword of the chosen one's cluster. The
  gradient reaches the chosen codeword and every codeword of the level. Averaged over levels,
  as the released code (which adds ``beta * diversity`` to each level's loss and averages).

:class:`LetterRegularizer` combines both with weights ``alpha`` and ``beta`` and records
per-epoch means of each term.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import UserError
from methods.semid.constrained import fit_constrained
from methods.semid.rqvae import RQVAE, Step


def collaborative_loss(z_q: torch.Tensor, cf: torch.Tensor) -> torch.Tensor:
    """In-batch contrastive loss: row i of ``z_q`` (B, d) should score ``cf[i]`` (B, d) above the
    other rows of ``cf``; cross-entropy over ``z_q @ cf.T``."""
    if z_q.shape != cf.shape:
        raise ValueError(f"collaborative_loss: z_q {tuple(z_q.shape)} and CF embeddings {tuple(cf.shape)} differ in shape")
    logits = z_q @ cf.T
    return F.cross_entropy(logits, torch.arange(len(z_q), device=z_q.device))


def equal_size_clusters(points: np.ndarray, k: int, seed: int, n_init: int = 1, max_iter: int = 300) -> np.ndarray:
    """Labels (n,) of a constrained k-means of ``points`` (n, d) into ``k`` clusters whose sizes
    are floor(n / k) or ceil(n / k)."""
    n = len(points)
    if not 1 <= k <= n:
        raise UserError(f"diversity clusters: need 1 <= K <= number of codewords, got K={k} for {n} codewords")
    km = fit_constrained(np.asarray(points, dtype=np.float64), n_clusters=k, size_min=n // k, size_max=math.ceil(n / k),
                         n_init=n_init, max_iter=max_iter, random_state=seed, n_jobs=1)  # fmt: skip
    return km.labels_.astype(np.int64)


class ClusterPartners:
    """For one codebook's cluster labels, draws for each code a uniformly random other member of
    its cluster (vectorized, on the labels' device). Codes alone in their cluster get -1."""

    def __init__(self, labels: torch.Tensor):
        self.labels = labels
        order = torch.argsort(labels, stable=True)  # codes grouped by cluster
        sizes = torch.bincount(labels)
        starts = torch.cumsum(sizes, 0) - sizes
        self.order = order
        self.size = sizes[labels]  # (N,) size of each code's cluster
        self.start = starts[labels]  # (N,) where each code's cluster starts in ``order``
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=labels.device)
        self.pos = rank - self.start  # (N,) each code's position within its cluster

    def draw(self, codes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        size = self.size[codes]
        others = (size - 1).clamp_min(1)
        r = (torch.rand(codes.shape, generator=gen, device=codes.device) * others).long().clamp_max(others - 1)
        partner = self.order[self.start[codes] + (self.pos[codes] + 1 + r) % size]
        return torch.where(size > 1, partner, torch.full_like(partner, -1))


def diversity_loss(book: torch.Tensor, codes: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the dot products of each chosen codeword ``book[codes]`` (B, d) with
    every codeword of ``book`` (N, d), its own entry excluded, towards ``partners`` (B,) (another
    codeword of the same cluster; -1 = none, left out)."""
    keep = partners >= 0
    if not bool(keep.any()):
        return book.new_zeros(())
    codes, partners = codes[keep], partners[keep]
    sim = book[codes] @ book.T
    sim = sim.masked_fill(F.one_hot(codes, len(book)).bool(), float("-inf"))
    return F.cross_entropy(sim, partners)


class LetterRegularizer:
    """``alpha`` x collaborative + ``beta`` x diversity, an ``extra_loss`` for :func:`train_rqvae`.

    ``cf``: (n_items, latent) CF item embeddings (required when alpha > 0); ``clusters``: K;
    ``gen``: the generator of the partner draws (on the training device); ``seed``: of the
    per-epoch constrained k-means."""

    def __init__(self, alpha: float, beta: float, cf: torch.Tensor | None, clusters: int, gen: torch.Generator, seed: int,
                 kmeans_n_init: int = 1, kmeans_max_iter: int = 300, recluster_every: int = 1):  # fmt: skip
        if alpha > 0 and cf is None:
            raise ValueError("LetterRegularizer: alpha > 0 needs CF embeddings")
        self.alpha, self.beta, self.cf, self.clusters = alpha, beta, cf, clusters
        self.gen, self.seed = gen, seed
        self.kmeans_n_init, self.kmeans_max_iter, self.recluster_every = kmeans_n_init, kmeans_max_iter, max(1, recluster_every)
        self.partners: list[ClusterPartners] = []
        self.kmeans_seconds = 0.0
        self.kmeans_runs = 0
        self.cluster_sizes: list[list[int]] = []
        self.curve: list[dict[str, float]] = []  # per epoch: mean collaborative and diversity terms (unweighted), the former's chance level
        self._sums: torch.Tensor | None = None  # on the device: no synchronisation per batch

    def start_epoch(self, epoch: int, model: RQVAE) -> None:
        if epoch > 0:
            self._close_epoch(epoch - 1)
        if self.beta > 0 and epoch % self.recluster_every == 0:
            t0 = time.perf_counter()
            self.partners, self.cluster_sizes = [], []
            for level, book in enumerate(model.codebooks):
                labels = equal_size_clusters(book.detach().cpu().double().numpy(), self.clusters, self.seed + 1000 * epoch + level,
                                             self.kmeans_n_init, self.kmeans_max_iter)  # fmt: skip
                self.partners.append(ClusterPartners(torch.from_numpy(labels).to(book.device)))
                self.cluster_sizes.append(np.bincount(labels, minlength=self.clusters).tolist())
            self.kmeans_seconds += time.perf_counter() - t0
            self.kmeans_runs += 1

    def _close_epoch(self, epoch: int) -> None:
        if self._sums is None:
            return
        cr, dr, n, chance = self._sums.tolist()
        n = max(1.0, n)
        self.curve.append({"epoch": epoch + 1, "collaborative": cr / n, "diversity": dr / n, "collaborative_chance": chance / n})
        self._sums = None

    def terms(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """(collaborative, diversity) of one batch, unweighted (0 when the weight is 0)."""
        cr = step.z.new_zeros(())
        dr = step.z.new_zeros(())
        if self.alpha > 0:
            z_q = step.z + (step.z_q - step.z).detach()  # value: sum of codewords; gradient: to the encoder
            cr = collaborative_loss(z_q, self.cf[step.index])
        if self.beta > 0:
            per_level = [diversity_loss(book, c, p.draw(c, self.gen))
                         for book, c, p in zip(step.model.codebooks, step.codes.unbind(1), self.partners)]  # fmt: skip
            dr = torch.stack(per_level).mean()
        return cr, dr

    def __call__(self, step: Step) -> torch.Tensor:
        cr, dr = self.terms(step)
        b = len(step.index)
        # chance level of the collaborative term: ln(B), the in-batch cross-entropy of uniform logits
        batch = torch.stack([cr.detach() * b, dr.detach() * b, cr.new_tensor(float(b)), cr.new_tensor(b * math.log(b))])
        self._sums = batch if self._sums is None else self._sums + batch
        return self.alpha * cr + self.beta * dr

    def facts(self, epochs: int) -> dict[str, Any]:
        self._close_epoch(epochs - 1)
        return {
            "alpha": self.alpha, "beta": self.beta, "clusters": self.clusters,
            "kmeans_runs": self.kmeans_runs, "kmeans_seconds": round(self.kmeans_seconds, 3),
            "cluster_sizes_last": self.cluster_sizes,
            "first_terms": self.curve[0] if self.curve else None,
            "final_terms": self.curve[-1] if self.curve else None,
        }  # fmt: skip
