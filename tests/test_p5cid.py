"""P5-CID's collaborative indexing (methods/semid/cid.py) and the p5-cid method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.config import apply_overrides
from bench.data.canonical import canonicalize
from bench.errors import UserError
from bench.runner import build_method, execute
from bench.split import Sequences, Split, leave_one_out
from methods import METHODS
from methods.p5cid import P5CIDConfig
from methods.semid.beam import PrefixTrie
from methods.semid.cid import CIDConfig, collaborative_ids, cooccurrence, pad_paths
from tests.conftest import make_raw

pytestmark = pytest.mark.usefixtures("single_thread")


def sequences(rows: list[list[int]]) -> Sequences:
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return Sequences(offsets, np.concatenate([np.asarray(r, dtype=np.int32) for r in rows]))


def cliques(n_cliques: int, size: int, users_per_clique: int = 3, seed: int = 0) -> list[list[int]]:
    """Users who each buy a whole clique (in a random order); cliques never meet."""
    rng = np.random.default_rng(seed)
    return [list(rng.permutation(size) + c * size) for c in range(n_cliques) for _ in range(users_per_clique)]


def id_lengths(ids) -> np.ndarray:
    """Number of tokens before the end codes (an end code is the last code of a level that has one)."""
    ended = np.zeros(ids.n_items, dtype=bool)
    lengths = np.full(ids.n_items, ids.levels)
    for level, has_end in enumerate(ids.info["end_codes"]):
        if has_end:
            now = ~ended & (ids.codes[:, level] == ids.sizes[level] - 1)
            lengths[now] = level
            ended |= now
    return lengths


def test_cooccurrence_counts_position_pairs_within_training_sequences() -> None:
    adj = cooccurrence(sequences([[0, 1, 2], [1, 2], [3, 0, 3]]), 5).toarray()
    expected = np.zeros((5, 5))
    for a, b, w in [(0, 1, 1), (0, 2, 1), (1, 2, 2), (0, 3, 2)]:
        expected[a, b] = expected[b, a] = w
    expected[3, 3] = 2  # item 3 twice in one sequence: one position pair, counted both ways
    assert np.array_equal(adj, expected)


def test_disconnected_cliques_get_separate_top_level_clusters() -> None:
    ids = collaborative_ids(sequences(cliques(3, 4)), 12, CIDConfig(n_clusters=3, max_cluster_size=4), np.random.default_rng(0))
    assert ids.unique_fraction() == 1.0 and ids.source == "cid"
    top = ids.codes[:, 0].reshape(3, 4)
    assert all(len(set(row)) == 1 for row in top) and len(set(top[:, 0])) == 3
    # every clique fits a leaf: ID = (cluster, index within the leaf), indices 0..3 in each clique
    assert ids.levels == 2 and sorted(map(sorted, ids.codes[:, 1].reshape(3, 4).tolist())) == [[0, 1, 2, 3]] * 3
    assert ids.info["isolated_items"] == 0 and ids.info["levels"] == 2


def test_clusters_larger_than_m_are_split_again_and_the_trie_is_exact() -> None:
    # 6 cliques of 5 into N=2 top clusters: each top cluster holds more than M=6 items and is split again
    n = 30
    cfg = CIDConfig(n_clusters=2, max_cluster_size=6)
    ids = collaborative_ids(sequences(cliques(6, 5)), n, cfg, np.random.default_rng(1))
    assert ids.unique_fraction() == 1.0
    lengths = id_lengths(ids)
    assert lengths.max() >= 3 and ids.info["spectral_splits"] >= 3
    leaves: dict[tuple, int] = {}
    for codes, length in zip(ids.codes.tolist(), lengths):
        leaves[tuple(codes[: length - 1])] = leaves.get(tuple(codes[: length - 1]), 0) + 1
    assert max(leaves.values()) <= cfg.max_cluster_size and sum(leaves.values()) == n
    assert sorted(leaves.values()) == sorted(ids.info["leaf_sizes"])
    # a clique is never cut by the clustering of disjoint cliques: its items share the leaf path
    for c in range(6):
        paths = {tuple(ids.codes[i, : lengths[i] - 1]) for i in range(5 * c, 5 * c + 5)}
        assert len(paths) == 1
    trie = PrefixTrie.build(ids)
    assert len(trie.leaf_ptr) - 1 == n


def test_pad_paths_ends_short_ids_with_a_dedicated_code() -> None:
    codes, sizes, ends = pad_paths([[0, 1], [1, 0, 2], [1, 1, 0], [0, 0]])
    assert sizes == (2, 2, 4) and ends == [False, False, True]
    assert codes.tolist() == [[0, 1, 3], [1, 0, 2], [1, 1, 0], [0, 0, 3]]


def test_isolated_items_get_their_own_cluster_and_valid_ids() -> None:
    # items 8..11 never co-occur with another item in training (item 8 alone, 9..11 absent)
    rows = cliques(2, 4) + [[8]]
    cfg = CIDConfig(n_clusters=2, max_cluster_size=4)
    ids = collaborative_ids(sequences(rows), 12, cfg, np.random.default_rng(0))
    assert ids.unique_fraction() == 1.0 and ids.info["isolated_items"] == 4
    assert (ids.codes[8:, 0] == cfg.n_clusters).all() and not (ids.codes[:8, 0] == cfg.n_clusters).any()
    # more isolated items than M: chunked under the isolated cluster, still unique
    many = collaborative_ids(sequences(rows), 30, cfg, np.random.default_rng(0))
    assert many.unique_fraction() == 1.0 and many.info["isolated_items"] == 22 and many.info["chunk_splits"] >= 1
    assert (many.codes[8:, 0] == cfg.n_clusters).all()
    assert len(PrefixTrie.build(many).leaf_ptr) - 1 == 30


def test_ids_are_deterministic_for_a_seed() -> None:
    train = sequences(cliques(4, 6, seed=3))
    cfg = CIDConfig(n_clusters=2, max_cluster_size=5)
    a, b = (collaborative_ids(train, 24, cfg, np.random.default_rng(7)) for _ in range(2))
    c = collaborative_ids(train, 24, cfg, np.random.default_rng(8))
    assert np.array_equal(a.codes, b.codes) and a.sizes == b.sizes
    assert not np.array_equal(a.codes, c.codes)  # the within-leaf order is seeded


def _split(raw) -> Split:
    return leave_one_out(canonicalize("tiny", raw))


def test_ids_use_training_interactions_only(run_cfg) -> None:
    raw = make_raw(n_users=60, n_items=40, seed=2)
    # swap the test targets of user pairs: the item set and every training row stay as they
    # were, but whole-sequence co-occurrence (targets included) changes
    swapped = make_raw(n_users=60, n_items=40, seed=2)
    users = [u for u in sorted(swapped.sequences) if len(swapped.sequences[u]) >= 3]
    for a, b in zip(users[0::2], users[1::2]):
        sa, sb = swapped.sequences[a], swapped.sequences[b]
        if sa[-1] not in sb and sb[-1] not in sa:
            sa[-1], sb[-1] = sb[-1], sa[-1]
    one, two = _split(raw), _split(swapped)
    assert np.array_equal(one.dataset.item_ids, two.dataset.item_ids) and np.array_equal(one.train.items, two.train.items)
    assert not np.array_equal(one.test.targets, two.test.targets)
    full = [cooccurrence(Sequences(s.dataset.offsets, s.dataset.items), s.n_items).toarray() for s in (one, two)]
    assert not np.array_equal(*full)  # the swap would show in a graph built from whole sequences

    cfg = run_cfg()
    built = []
    for split in (one, two):
        method, _ = build_method(METHODS.get("p5-cid"), split, 0, cfg, torch.device("cpu"))
        built.append(method.build_ids())
    assert np.array_equal(built[0].codes, built[1].codes)


def test_p5cid_record_carries_tokenizer_facts(tiny_split: Split, run_cfg) -> None:
    cfg = run_cfg()
    path = execute(METHODS.get("p5-cid"), tiny_split, 0, cfg)
    rec = json.loads(path.read_text())
    book, cid = rec["codebook"], rec["training"]["tokenizer"]["cid"]
    assert book["n_items"] == tiny_split.n_items and book["collision_rate"] == 0.0 and book["source"] == "cid"
    assert cid["levels"] == book["levels"] and cid["max_cluster_size"] == cfg.overrides["p5-cid"]["max_cluster_size"]
    assert sum(cid["leaf_sizes"]) == tiny_split.n_items and cid["seconds"] > 0
    assert rec["generation"]["duplicate_rate"] == 0.0


def test_p5cid_config_checks_options() -> None:
    cfg = apply_overrides(P5CIDConfig(), {"n_clusters": "8", "max_cluster_size": "100"}, "p5-cid")
    assert (cfg.cid_config().n_clusters, cfg.cid_config().max_cluster_size) == (8, 100)
    assert (P5CIDConfig().n_clusters, P5CIDConfig().max_cluster_size) == (20, 500)
    with pytest.raises(UserError, match="max_cluster_size"):
        apply_overrides(P5CIDConfig(), {"n_clusters": "30", "max_cluster_size": "10"}, "p5-cid")
    with pytest.raises(UserError, match="n_clusters"):
        apply_overrides(P5CIDConfig(), {"n_clusters": "1"}, "p5-cid")
    with pytest.raises(UserError, match="eigen_solver"):
        apply_overrides(P5CIDConfig(), {"eigen_solver": "amg"}, "p5-cid")


def test_backbone_difference_is_stated() -> None:
    """Our p5-cid is not P5's pretrained T5-small with prompts: its description and its leaderboard footnote say so."""
    cls = METHODS.get("p5-cid")
    assert "from scratch" in cls.description and "T5-small" in cls.description
    assert "T5-small" in cls.footnote and ".0590" in cls.footnote and "not like-for-like" in cls.footnote
