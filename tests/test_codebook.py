"""Codebook utilization against hand-computed values on a tiny table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.codebook import plot_first_level, prefix_accuracy, utilization
from bench.semantic_ids import SemanticIDs


def _table() -> SemanticIDs:
    # 2 semantic levels (sizes 4, 3) + a counting level (size 2)
    codes = [[0, 1, 0], [0, 1, 1], [1, 2, 0], [3, 0, 0]]
    return SemanticIDs(np.array(codes), (4, 3, 2), "test", {"semantic_levels": 2})


def test_utilization_hand_computed():
    s = utilization(_table())
    json.dumps(s)  # plain JSON types only
    l0, l1, l2 = s["per_level"]
    assert (l0["used"], l0["size"], l0["used_fraction"]) == (3, 4, 0.75)
    assert l0["entropy_bits"] == pytest.approx(1.5)  # counts 2, 1, 0, 1
    assert l0["entropy_normalized"] == pytest.approx(0.75)
    assert (l1["used"], l1["used_fraction"]) == (3, 1.0)
    assert l1["entropy_bits"] == pytest.approx(1.5)  # counts 1, 2, 1
    assert l1["entropy_normalized"] == pytest.approx(1.5 / math.log2(3))
    assert l2["entropy_bits"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert s["unique_prefixes"] == [3, 3, 4]
    assert s["semantic_levels"] == 2
    # full IDs are unique; the semantic levels alone have one group of 2
    assert (s["collision_rate"], s["largest_group"], s["items_in_collision_groups"]) == (0.0, 1, 0)
    assert s["semantic_collision_rate"] == pytest.approx(0.25)
    assert (s["semantic_largest_group"], s["semantic_items_in_collision_groups"], s["semantic_collision_groups"]) == (2, 2, 1)
    assert s["first_level_counts"] == [2, 1, 0, 1]


def test_semantic_levels_argument_and_range():
    ids = _table()
    s = utilization(ids, semantic_levels=3)
    assert s["semantic_collision_rate"] == s["collision_rate"] == 0.0
    s1 = utilization(ids, semantic_levels=1)
    assert s1["semantic_collision_rate"] == pytest.approx(1 - 3 / 4)
    assert s1["semantic_largest_group"] == 2
    with pytest.raises(ValueError):
        utilization(ids, semantic_levels=4)


def test_plot_first_level(tmp_path):
    path = plot_first_level(utilization(_table()), tmp_path / "sub" / "first.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_prefix_accuracy_against_brute_force():
    ids = _table()
    rng = np.random.default_rng(0)
    top1, targets = rng.integers(-1, 4, 50), rng.integers(0, 4, 50)
    expect = []
    for level in range(3):
        hits = [t1 >= 0 and list(ids.codes[t1][: level + 1]) == list(ids.codes[t][: level + 1]) for t1, t in zip(top1, targets)]
        expect.append(sum(hits) / len(hits))
    assert prefix_accuracy(ids, top1, targets) == pytest.approx(expect)
    assert prefix_accuracy(ids, np.array([0, 1]), np.array([1, 1])) == [1.0, 1.0, 0.5]  # items 0 and 1 share 2 levels
