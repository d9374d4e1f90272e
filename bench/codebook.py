"""Codebook utilization of a semantic-ID table: one harness metric for every generative method.

:func:`utilization` reports, per level, how many of the N codes are used and how evenly
(usage entropy in bits and normalized by log2 N), how many distinct prefixes exist at each
depth, the collision rate (1 - unique IDs / items) on the full ID and on the semantic levels
alone (when a counting level was appended, e.g. TIGER's), the largest group of items sharing
one ID, and the distribution of items over first-level codes (LETTER's "code assignment
bias"). :func:`plot_first_level` draws that distribution. Every value is a plain int, float
or list, so the result goes into a JSON record as is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.semantic_ids import SemanticIDs


def _entropy_bits(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _groups(codes: np.ndarray) -> dict[str, int]:
    """Collision facts of the rows of ``codes``: unique rows, collision rate, groups of > 1 item."""
    n = len(codes)
    if n == 0:
        return {"unique_ids": 0, "collision_rate": 0.0, "collision_groups": 0, "items_in_collision_groups": 0, "largest_group": 0}
    _, counts = np.unique(codes, axis=0, return_counts=True)
    shared = counts[counts > 1]
    return {
        "unique_ids": len(counts),
        "collision_rate": float(1.0 - len(counts) / n),
        "collision_groups": len(shared),
        "items_in_collision_groups": int(shared.sum()),
        "largest_group": int(counts.max()),
    }


def utilization(ids: SemanticIDs, semantic_levels: int | None = None) -> dict[str, Any]:
    """Codebook statistics of ``ids``.

    ``semantic_levels``: how many leading levels carry meaning (the rest, e.g. TIGER's
    counting level, only disambiguate); default ``ids.info["semantic_levels"]`` when the
    tokenizer recorded it, else all levels.
    """
    codes = ids.codes
    n = ids.n_items
    if semantic_levels is None:
        semantic_levels = int(ids.info.get("semantic_levels", ids.levels))
    if not 1 <= semantic_levels <= ids.levels:
        raise ValueError(f"semantic_levels must be in [1, {ids.levels}], got {semantic_levels}")

    levels = []
    for level, size in enumerate(ids.sizes):
        counts = np.bincount(codes[:, level], minlength=size) if n else np.zeros(size, dtype=np.int64)
        used = int((counts > 0).sum())
        entropy = _entropy_bits(counts)
        levels.append({
            "level": level,
            "size": int(size),
            "used": used,
            "used_fraction": used / size,
            "entropy_bits": entropy,
            "entropy_normalized": entropy / math.log2(size) if size > 1 else None,
            "unique_prefixes": len(np.unique(codes[:, : level + 1], axis=0)) if n else 0,
        })  # fmt: skip

    full = _groups(codes)
    semantic = _groups(codes[:, :semantic_levels])
    first = np.bincount(codes[:, 0], minlength=ids.sizes[0]) if n else np.zeros(ids.sizes[0], dtype=np.int64)
    return {
        "n_items": int(n),
        "levels": int(ids.levels),
        "semantic_levels": int(semantic_levels),
        "sizes": [int(s) for s in ids.sizes],
        "source": ids.source,
        "per_level": levels,
        "unique_prefixes": [lv["unique_prefixes"] for lv in levels],
        "collision_rate": full["collision_rate"],
        "unique_ids": full["unique_ids"],
        "collision_groups": full["collision_groups"],
        "items_in_collision_groups": full["items_in_collision_groups"],
        "largest_group": full["largest_group"],
        "semantic_collision_rate": semantic["collision_rate"],
        "semantic_unique_ids": semantic["unique_ids"],
        "semantic_collision_groups": semantic["collision_groups"],
        "semantic_items_in_collision_groups": semantic["items_in_collision_groups"],
        "semantic_largest_group": semantic["largest_group"],
        "first_level_counts": [int(c) for c in first],
    }


def plot_first_level(stats: dict[str, Any], path: str | Path, run: str = "") -> Path:
    """A PNG of the items per first-level code, sorted (most used first), entropy in the title;
    ``run`` names the run it belongs to (e.g. ``scientific@cpu tiger seed 0``), first in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.sort(np.asarray(stats["first_level_counts"]))[::-1]
    first = stats["per_level"][0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue")
    ax.set_xlabel("first-level code (sorted by items)")
    ax.set_ylabel("items")
    norm = first["entropy_normalized"]
    ax.set_title(
        (f"{run}\n" if run else "") + f"{stats.get('source', '')}: {first['used']}/{first['size']} first-level codes used, "
        f"entropy {first['entropy_bits']:.2f} bits" + (f" ({norm:.2f} of max)" if norm is not None else ""),
        fontsize=9,
    )
    ax.set_xlim(-0.5, len(counts) - 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def prefix_accuracy(ids: SemanticIDs, top1: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per level l, the share of users whose first recommended item's ID agrees with the target's
    ID on its first l codes (level 1: the first code token; a user with no item counts as a miss)."""
    top1, targets = np.asarray(top1), np.asarray(targets)
    if len(targets) == 0:
        return [0.0] * ids.levels
    codes = np.asarray(ids.codes)
    same = (codes[top1.clip(0)] == codes[targets]) & (top1 >= 0)[:, None]
    return [round(float(x), 6) for x in np.cumprod(same, axis=1).mean(0)]
