"""Collaborative indexing (CID) of P5-CID (Hua et al., 2023, "How to Index Item IDs for
Recommendation Foundation Models"): item IDs from hierarchical spectral clustering of the
item co-occurrence graph.

Graph: the training sequences only.  Two items co-occur when they are in the same user's
training sequence (anywhere in it, not only adjacent); the edge weight counts the pairs of
positions, summed over users, as the official OpenP5 code does (all 2-combinations of a
user's training items).  With the user-item count matrix X that is ``X^T X`` off the
diagonal; the diagonal (an item repeated within a sequence) gets n(n-1) per user, also as
there, i.e. ``diag(X^T X) - item counts``.

Clustering: scikit-learn's :class:`~sklearn.cluster.SpectralClustering` with
``affinity="precomputed"`` and ``assign_labels="cluster_qr"`` (the official setting) splits
the root into ``n_clusters`` clusters; every cluster with more than ``max_cluster_size``
items is split again the same way on its induced subgraph (breadth first), until every
leaf holds at most ``max_cluster_size`` items.  The root is always split, so every ID has at
least one cluster token.  Each clustering gets its own ``random_state`` drawn from the
caller's generator.  An item's ID = its path of cluster codes (a child's code is its rank
among its parent's non-empty clusters) + its index within its leaf (a seeded random order,
as the official code draws the last token at random).

Isolated items (no co-occurrence with any other item in training, e.g. an item that is
only ever a validation/test target) cannot be placed by the graph: they share one
dedicated top-level cluster, code ``n_clusters``, and are indexed inside it in a seeded
random order (split into chunks when there are more than ``max_cluster_size``).  A split
that spectral clustering cannot make (it puts every item into one cluster, or the subgraph
has no edge) falls back to ``n_clusters`` equal chunks of a seeded random order; the
number of such fallbacks is recorded.

Variable depth -> fixed levels: the paper's IDs have as many tokens as the item's leaf is
deep (+1).  :class:`SemanticIDs` has a fixed number of levels (the deepest path), so a
shorter ID is followed by an end code: at every level that some ID does not reach, the
level gets one extra code (``sizes[l] - 1``) that only means "the ID has ended".  The
tokens an item's ID starts with are exactly the paper's; the end codes play the part of the
end-of-sequence token that ends a generated ID there.  Since no ID is a prefix of another
(a cluster is either a leaf or split), the padded IDs are unique and the prefix trie is
exact: after a leaf index the only continuation is the end code.  Unlike the official code,
which shares one set of tokens ``<CI0>..<CI{M-1}>`` over all positions, each level has its
own tokens here (the shared semantic-ID vocabulary gives every level an offset).

Other departures from the official code, all small: it numbers cluster tokens with one
counter running over all groups (mod M) where a child's code here is its rank within its
parent; it fills only the upper triangle (no diagonal) of a sub-cluster's matrix, which
scikit-learn symmetrizes to half the weights (the same normalized graph) while the full
sub-matrix is used here; it clusters training items without co-occurrence together with
the rest and gives items absent from training a single random token, where both kinds
are the isolated cluster here.

Beauty (leave-one-out, seed 0, N=20, M=500, lobpcg, one CPU thread): 18 s; 834k edges,
33 isolated items; 10 spectral splits, 192 leaves (sizes 2..371, median 40); IDs of 2, 3
and 4 tokens for 2372, 6602 and 3127 items, so 4 levels of sizes (21, 371, 278, 153).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import SpectralClustering

from bench.errors import UserError
from bench.split import Sequences
from bench.semantic_ids import SemanticIDs

EIGEN_SOLVERS = ("arpack", "lobpcg")


@dataclass
class CIDConfig:
    n_clusters: int = 20  # N: clusters per split
    max_cluster_size: int = 500  # M: a cluster with more items is split again (paper: 500 for Beauty)
    eigen_solver: str = "lobpcg"  # scikit-learn's spectral embedding solver

    def check(self) -> None:
        if self.n_clusters < 2:
            raise UserError(f"option n_clusters: expected an integer >= 2, got {self.n_clusters}")
        if self.max_cluster_size < self.n_clusters:
            raise UserError(f"option max_cluster_size: expected an integer >= n_clusters ({self.n_clusters}), got {self.max_cluster_size}")
        if self.eigen_solver not in EIGEN_SOLVERS:
            raise UserError(f"option eigen_solver: expected one of {', '.join(EIGEN_SOLVERS)}, got {self.eigen_solver!r}")


def cooccurrence(train: Sequences, n_items: int) -> sp.csr_matrix:
    """(n_items, n_items) symmetric co-occurrence counts of items within users' training sequences."""
    users = np.repeat(np.arange(train.n), train.lengths)
    x = sp.csr_matrix((np.ones(len(users), dtype=np.float64), (users, train.items.astype(np.int64))), shape=(train.n, n_items))
    x.sum_duplicates()
    c = (x.T @ x).tocsr()
    c.setdiag(c.diagonal() - np.asarray(x.sum(0)).ravel())
    c.eliminate_zeros()
    return c


def _chunks(members: np.ndarray, parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(p) for p in np.array_split(rng.permutation(members), min(parts, len(members))) if len(p)]


def _spectral(adj: sp.csr_matrix, members: np.ndarray, cfg: CIDConfig, rng: np.random.Generator) -> list[np.ndarray] | None:
    """Children of ``members`` (ordered by cluster label), or None when spectral clustering makes no split."""
    sub = adj[members][:, members]
    if sub.nnz == 0:
        return None
    model = SpectralClustering(n_clusters=cfg.n_clusters, affinity="precomputed", assign_labels="cluster_qr",
                               eigen_solver=cfg.eigen_solver, random_state=int(rng.integers(2**31)))  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")  # components are what we want to separate
        warnings.filterwarnings("ignore", message="The problem size")  # lobpcg on a tiny graph: scikit-learn solves it densely
        labels = model.fit(sub).labels_
    children = [members[labels == lab] for lab in np.unique(labels)]
    return children if len(children) > 1 else None


def collaborative_ids(train: Sequences, n_items: int, cfg: CIDConfig, rng: np.random.Generator) -> SemanticIDs:
    """P5-CID item IDs from the training sequences (see the module docstring)."""
    cfg.check()
    t0 = time.perf_counter()
    adj = cooccurrence(train, n_items)
    off_diag = np.asarray((adj - sp.diags(adj.diagonal())).astype(bool).sum(1)).ravel()
    isolated = np.flatnonzero(off_diag == 0)
    connected = np.flatnonzero(off_diag > 0)

    paths: list[list[int]] = [[] for _ in range(n_items)]
    stats: Counter = Counter()

    def split(members: np.ndarray, graph: bool) -> list[np.ndarray]:
        if not graph:
            stats["chunk_splits"] += 1
            return _chunks(members, cfg.n_clusters, rng)
        stats["spectral_splits"] += 1
        children = _spectral(adj, members, cfg, rng)
        if children is None:
            stats["fallback_splits"] += 1
            children = _chunks(members, cfg.n_clusters, rng)
        return children

    # the root: the connected items are always split (at least one cluster token per ID);
    # the isolated items form the extra top-level cluster with code n_clusters
    queue: deque[tuple[np.ndarray, int, bool]] = deque()  # (members, depth, split by the graph?)
    if len(connected):
        top = split(connected, True) if len(connected) > cfg.n_clusters else [connected]
        for code, child in enumerate(top):
            queue.append((child, 1, True))
            for item in child:
                paths[item].append(code)
    if len(isolated):
        queue.append((isolated, 1, False))
        for item in isolated:
            paths[item].append(cfg.n_clusters)

    leaf_sizes, leaf_depths = [], []
    while queue:  # breadth first, as the official code
        members, depth, graph = queue.popleft()
        if len(members) <= cfg.max_cluster_size:
            for idx, item in zip(rng.permutation(len(members)), members):
                paths[item].append(int(idx))
            leaf_sizes.append(len(members))
            leaf_depths.append(depth)
            continue
        for code, child in enumerate(split(members, graph)):
            queue.append((child, depth + 1, graph))
            for item in child:
                paths[item].append(code)

    codes, sizes, ends = pad_paths(paths)
    seconds = time.perf_counter() - t0
    leaf_sizes_a = np.array(leaf_sizes)
    info = {
        "n_clusters": cfg.n_clusters, "max_cluster_size": cfg.max_cluster_size, "eigen_solver": cfg.eigen_solver,
        "graph_edges": int((adj.nnz - (adj.diagonal() > 0).sum()) // 2), "isolated_items": len(isolated),
        "levels": len(sizes), "id_length_counts": {int(k): int(v) for k, v in sorted(Counter(len(p) for p in paths).items())},
        "end_codes": ends, "leaves": len(leaf_sizes), "leaf_sizes": sorted(int(x) for x in leaf_sizes),
        "leaf_size": {"min": int(leaf_sizes_a.min()), "median": float(np.median(leaf_sizes_a)), "mean": float(leaf_sizes_a.mean()),
                      "max": int(leaf_sizes_a.max())} if len(leaf_sizes_a) else {},
        "leaf_depth_counts": {int(k): int(v) for k, v in sorted(Counter(leaf_depths).items())},
        "spectral_splits": stats["spectral_splits"], "fallback_splits": stats["fallback_splits"],
        "chunk_splits": stats["chunk_splits"], "seconds": seconds,
    }  # fmt: skip
    return SemanticIDs(codes, sizes, "cid", info)


def pad_paths(paths: list[list[int]]) -> tuple[np.ndarray, tuple[int, ...], list[bool]]:
    """Variable-length code paths -> (n, levels) codes, level sizes, and per level whether
    it has an end code (``sizes[l] - 1``, given to every ID that ended before level l)."""
    levels = max((len(p) for p in paths), default=1)
    lengths = np.array([len(p) for p in paths], dtype=np.int64)
    codes = np.full((len(paths), levels), -1, dtype=np.int64)
    for i, p in enumerate(paths):
        codes[i, : len(p)] = p
    sizes, ends = [], []
    for level in range(levels):
        reached = lengths > level
        size = int(codes[reached, level].max()) + 1 if reached.any() else 0
        ended = bool((~reached).any())
        if ended:
            codes[~reached, level] = size
            size += 1
        sizes.append(size)
        ends.append(ended)
    return codes, tuple(sizes), ends
