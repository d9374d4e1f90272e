"""Ranking metrics, computed in one place for every method (docs/protocol.md §2).

With one target per user everything derives from the target's 1-based rank in the
(de-duplicated) ranking, capped at ``MAX_RANK`` (0 = not in the top ``MAX_RANK``):

* ``recall@K`` = ``hit@K`` = 1 if 0 < rank <= K;
* ``ndcg@K`` = 1 / log2(rank + 1) if 0 < rank <= K (IDCG = 1);
* ``hit@100`` = ``recall@100``.

Scores are turned into ranks with a seeded tie-break that cannot favour the target:
among items with the target's score, the target is placed by a random permutation of the
catalog, never by item id.  Ranked lists (generative methods) are de-duplicated, first
occurrence wins; a list shorter than ``MAX_RANK`` is scored as is.
"""

from __future__ import annotations

import math

import numpy as np
import torch

CUTOFFS = (5, 10, 20)
MAX_RANK = 100
METRIC_KEYS = tuple(
    [f"{m}@{k}" for k in CUTOFFS for m in ("recall", "ndcg")] + [f"hit@{MAX_RANK}"]
)


def tiebreak_order(n_items: int, seed: int) -> torch.Tensor:
    """Position of each item in a seeded random order; lower wins a tie."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.empty(n_items, dtype=torch.int64)
    order[torch.randperm(n_items, generator=g)] = torch.arange(n_items)
    return order


@torch.no_grad()
def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor, tiebreak: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target in its row of ``scores`` (0 when beyond ``MAX_RANK``).

    ``scores``: (B, n_items); ``targets``: (B,); ``tiebreak``: (n_items,) from
    :func:`tiebreak_order`, on the same device.
    """
    if not scores.is_floating_point():
        scores = scores.float()  # float64 stays float64: casting down would create ties
    if torch.isnan(scores).any():
        raise ValueError("a method returned NaN scores")
    rows = torch.arange(len(targets), device=scores.device)
    target_score = scores[rows, targets].unsqueeze(1)
    # items ranked before the target: a higher score, or the same score and earlier in the
    # tie-break order; counted as uint8 views summed in int32 (about 2x faster than bool sums)
    ahead = (scores > target_score).view(torch.uint8).sum(1, dtype=torch.int32)
    tied = (scores == target_score) & (tiebreak.unsqueeze(0) < tiebreak[targets].unsqueeze(1))
    rank = (ahead + tied.view(torch.uint8).sum(1, dtype=torch.int32)).long() + 1
    return torch.where(rank <= MAX_RANK, rank, torch.zeros_like(rank))


@torch.no_grad()
def ranks_from_lists(lists: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank of each target in its de-duplicated ranked list.

    ``lists``: (B, L) item ids, best first, ``-1`` for "no item".  Returns
    ``(ranks, n_unique, n_duplicates)``: rank 1-based (0 = absent or beyond ``MAX_RANK``),
    the number of distinct items each list holds, and how many entries were repeats.
    """
    lists = lists.long()
    valid = lists >= 0
    # an entry is a repeat when the same item appears at an earlier position
    same = (lists.unsqueeze(2) == lists.unsqueeze(1)) & valid.unsqueeze(2)
    earlier = torch.tril(torch.ones(lists.shape[1], lists.shape[1], dtype=torch.bool, device=lists.device), -1)
    repeat = (same & earlier).any(2)
    first = valid & ~repeat
    position = torch.cumsum(first.long(), 1)  # de-duplicated 1-based position of each first occurrence
    hit = first & (lists == targets.unsqueeze(1))
    rank = (position * hit).sum(1)
    rank = torch.where(rank <= MAX_RANK, rank, torch.zeros_like(rank))
    return rank, first.sum(1), (valid & repeat).sum(1)


def per_user(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user metric values from capped ranks."""
    ranks = np.asarray(ranks, dtype=np.int64)
    hit = ranks > 0
    gain = np.zeros(len(ranks), dtype=np.float64)
    gain[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    out = {}
    for k in CUTOFFS:
        inside = hit & (ranks <= k)
        out[f"recall@{k}"] = inside.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(inside, gain, 0.0)
    out[f"hit@{MAX_RANK}"] = hit.astype(np.float64)
    return out


def metric_cutoff(key: str) -> int:
    return int(key.split("@")[1])


def summarize(ranks: np.ndarray, list_depth: int | None = None, n_items: int | None = None) -> dict[str, float | None]:
    """Mean of each metric over all evaluated users (a user with nothing scores 0).

    ``list_depth``: for a method that outputs ranked lists, the longest de-duplicated list
    it produced.  A metric at K is missing (``None``) when the lists could not reach K
    although the catalog could (e.g. Hit@100 from a beam of 20): docs/protocol.md §2 says to
    record it as missing rather than invent it.
    """
    if len(ranks) == 0:
        return {k: math.nan for k in METRIC_KEYS}
    out: dict[str, float | None] = {k: float(v.mean()) for k, v in per_user(ranks).items()}
    if list_depth is not None:
        for k in out:
            if list_depth < min(metric_cutoff(k), n_items if n_items is not None else metric_cutoff(k)):
                out[k] = None
    return out
