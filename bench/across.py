"""Comparisons across datasets: mean ranks, and the Friedman test with the Nemenyi critical
difference (Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 2006).

Inputs are ``{dataset: {method: score}}`` with one score per complete (dataset, method) cell
(the mean over seeds; higher is better).  Rank 1 is the best method of a dataset; ties share
the mean of their ranks.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank of each method within one dataset: 1 = highest score, ties averaged."""
    methods = sorted(scores)
    r = stats.rankdata([-scores[m] for m in methods], method="average")
    return {m: float(x) for m, x in zip(methods, r)}


def mean_ranks(table: dict[str, dict[str, float]]) -> dict[str, tuple[float, int]]:
    """Each method's mean rank over the datasets where it has a score, and how many those are."""
    per_method: dict[str, list[float]] = {}
    for scores in table.values():
        for m, r in ranks(scores).items():
            per_method.setdefault(m, []).append(r)
    return {m: (statistics.fmean(rs), len(rs)) for m, rs in sorted(per_method.items())}


def complete_block(table: dict[str, dict[str, float]], min_datasets: int = 2, min_methods: int = 3) -> tuple[list[str], list[str]]:
    """The datasets and methods of the largest complete block (every method scored on every
    dataset) that the Friedman test needs: over every set of at least ``min_datasets`` datasets,
    the methods scored on all of them; the most cells wins, then the most datasets, then the
    first in name order.  ([], []) when no block has ``min_methods`` methods."""
    best: tuple[list[str], list[str]] = ([], [])
    names = sorted(table)
    for size in range(min_datasets, len(names) + 1):
        for subset in itertools.combinations(names, size):
            methods = sorted(set.intersection(*(set(table[d]) for d in subset)))
            if len(methods) >= min_methods and (size * len(methods), size) > (len(best[0]) * len(best[1]), len(best[0])):
                best = (list(subset), methods)
    return best


@dataclass(frozen=True)
class Friedman:
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    avg_ranks: dict[str, float]
    statistic: float  # Friedman's chi-square
    p_value: float
    cd: float  # Nemenyi critical difference of average ranks at ALPHA

    def as_dict(self) -> dict:
        return {"datasets": list(self.datasets), "methods": list(self.methods), "avg_ranks": self.avg_ranks,
                "statistic": self.statistic, "p_value": self.p_value, "cd": self.cd, "alpha": ALPHA}  # fmt: skip


def friedman(table: dict[str, dict[str, float]], datasets: list[str], methods: list[str]) -> Friedman:
    """Friedman's test over ``datasets`` (blocks) for ``methods`` (every cell present), and the
    Nemenyi critical difference CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the studentized
    range quantile over sqrt(2) (Demšar 2006, section 3.2.2)."""
    if len(datasets) < 2 or len(methods) < 3:
        raise ValueError(f"Friedman needs at least 2 datasets and 3 methods, got {len(datasets)} and {len(methods)}")
    per_dataset = [ranks({m: table[d][m] for m in methods}) for d in datasets]
    avg = {m: statistics.fmean(r[m] for r in per_dataset) for m in methods}
    statistic, p = stats.friedmanchisquare(*[[table[d][m] for d in datasets] for m in methods])
    k, n = len(methods), len(datasets)
    q = float(stats.studentized_range.ppf(1 - ALPHA, k, np.inf)) / math.sqrt(2)
    cd = q * math.sqrt(k * (k + 1) / (6 * n))
    return Friedman(tuple(datasets), tuple(methods), avg, float(statistic), float(p), cd)


def cliques(avg_ranks: dict[str, float], cd: float) -> list[list[str]]:
    """Maximal groups of methods whose average ranks lie within ``cd`` of each other (the bars of
    a critical-difference diagram: no difference between their members is significant)."""
    order = sorted(avg_ranks, key=lambda m: (avg_ranks[m], m))
    groups: list[list[str]] = []
    for i, m in enumerate(order):
        group = [x for x in order[i:] if avg_ranks[x] - avg_ranks[m] <= cd]
        if len(group) > 1 and not any(set(group) <= set(g) for g in groups):
            groups.append(group)
    return groups
