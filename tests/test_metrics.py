"""The one metric implementation (docs/protocol.md §2): ranks from scores and from ranked
lists, per-user values and means, checked against brute force and against ir_measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.metrics import (
    CUTOFFS,
    MAX_RANK,
    METRIC_KEYS,
    per_user,
    ranks_from_lists,
    ranks_from_scores,
    summarize,
    tiebreak_order,
)


# ---- brute-force references ------------------------------------------------------------
def brute_rank_scores(scores: np.ndarray, target: int, tiebreak: np.ndarray) -> int:
    """Sort items by (score descending, tie-break position ascending); 1-based, 0 beyond MAX_RANK."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], tiebreak[i]))
    rank = order.index(target) + 1
    return rank if rank <= MAX_RANK else 0


def brute_rank_list(items: list[int], target: int) -> tuple[int, int, int]:
    seen: list[int] = []
    dup = 0
    for i in items:
        if i < 0:
            continue
        if i in seen:
            dup += 1
        else:
            seen.append(i)
    rank = seen.index(target) + 1 if target in seen else 0
    return (rank if rank <= MAX_RANK else 0), len(seen), dup


def brute_metric(rank: int, key: str) -> float:
    name, k = key.split("@")
    k = int(k)
    if rank == 0 or rank > k:
        return 0.0
    return 1.0 if name in ("recall", "hit") else 1.0 / math.log2(rank + 1)


# ---- tiebreak_order ----------------------------------------------------------------------
def test_tiebreak_order_is_a_seeded_permutation() -> None:
    a, b, c = tiebreak_order(500, 1), tiebreak_order(500, 1), tiebreak_order(500, 2)
    assert sorted(a.tolist()) == list(range(500))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, torch.arange(500))  # not item-id order


# ---- ranks_from_scores -------------------------------------------------------------------
@pytest.mark.parametrize("n_items", [7, 60, 250])
def test_ranks_from_scores_matches_brute_force_with_many_ties(n_items: int) -> None:
    rng = np.random.default_rng(n_items)
    for seed in range(3):
        B = 40
        scores = rng.integers(0, 4, size=(B, n_items)).astype(np.float32)  # 4 distinct values: heavy ties
        scores[0] = 1.0  # a row that is all ties
        scores[1, :] = -np.inf
        scores[1, 3] = np.inf
        targets = rng.integers(0, n_items, size=B)
        targets[1] = 3
        tb = tiebreak_order(n_items, seed)
        got = ranks_from_scores(torch.from_numpy(scores), torch.from_numpy(targets), tb).numpy()
        want = [brute_rank_scores(scores[b], int(targets[b]), tb.numpy()) for b in range(B)]
        np.testing.assert_array_equal(got, want)
        assert got[1] == 1
        if n_items > MAX_RANK:
            assert (got == 0).any()  # beyond the cap is 0


def test_all_equal_scores_give_a_uniform_rank_not_rank_one() -> None:
    n = 50  # below MAX_RANK, so no rank is capped
    scores = torch.zeros(n, n)
    targets = torch.arange(n)  # every item is the target once
    for seed in range(5):
        ranks = ranks_from_scores(scores, targets, tiebreak_order(n, seed))
        assert sorted(ranks.tolist()) == list(range(1, n + 1))  # a permutation: mean (n + 1) / 2, never all 1
    # for one fixed item id (the smallest and the largest), the rank over seeds averages ~ (n + 1) / 2
    for item in (0, n - 1):
        ranks = [int(ranks_from_scores(scores[:1], torch.tensor([item]), tiebreak_order(n, s))) for s in range(400)]
        assert abs(np.mean(ranks) - (n + 1) / 2) < 4  # sd of the mean is about 0.7
        assert min(ranks) == 1 and max(ranks) == n


def test_target_rank_does_not_depend_on_its_item_id() -> None:
    """Relabelling items (a permutation of ids, scores and tie-break moved along) keeps every rank."""
    rng = np.random.default_rng(3)
    n, B = 80, 64
    scores = torch.from_numpy(rng.integers(0, 3, size=(B, n)).astype(np.float32))
    targets = torch.from_numpy(rng.integers(0, n, size=B))
    tb = tiebreak_order(n, 11)
    perm = torch.from_numpy(rng.permutation(n))  # new id of old item i is perm[i]
    new_scores = torch.empty_like(scores)
    new_scores[:, perm] = scores
    new_tb = torch.empty_like(tb)
    new_tb[perm] = tb
    assert torch.equal(ranks_from_scores(scores, targets, tb), ranks_from_scores(new_scores, perm[targets], new_tb))
    # and the target has no edge over its equals: with all-tied rows, being the lowest id does not make it first
    flat = torch.zeros(B, n)
    ranks = ranks_from_scores(flat, torch.zeros(B, dtype=torch.long), tb)
    assert int(ranks[0]) == int(tb[0]) + 1


def test_float64_scores_are_not_rounded_into_ties() -> None:
    scores = torch.tensor([[1.0, 1.0 + 1e-12, 0.5]], dtype=torch.float64)
    for seed in range(10):
        assert int(ranks_from_scores(scores, torch.tensor([0]), tiebreak_order(3, seed))) == 2


def test_nan_scores_raise() -> None:
    scores = torch.zeros(2, 5)
    scores[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(scores, torch.tensor([0, 1]), tiebreak_order(5, 0))


# ---- ranks_from_lists --------------------------------------------------------------------
def test_ranks_from_lists_dedups_first_occurrence_wins() -> None:
    lists = torch.tensor(
        [
            [4, 4, 4, 7, -1, -1],  # target 7 at de-duplicated position 2, two repeats
            [1, 2, 1, 2, 3, 9],  # target 3 -> 3 (the repeats do not push it down)
            [5, -1, -1, -1, -1, -1],  # short list, target absent
            [-1, -1, -1, -1, -1, -1],  # nothing at all
            [8, 2, 8, 6, 6, 6],  # target 8 counted once, at 1
            [3, -1, 0, -1, 1, 2],  # padding inside a list is skipped
        ]
    )
    targets = torch.tensor([7, 3, 9, 0, 8, 1])
    ranks, n_unique, n_dup = ranks_from_lists(lists, targets)
    assert ranks.tolist() == [2, 3, 0, 0, 1, 3]
    assert n_unique.tolist() == [2, 4, 1, 0, 3, 4]
    assert n_dup.tolist() == [2, 2, 0, 0, 3, 0]


def test_ranks_from_lists_matches_brute_force_random() -> None:
    rng = np.random.default_rng(0)
    B, L = 200, 130  # longer than MAX_RANK: ranks beyond it are 0
    lists = rng.integers(0, 90, size=(B, L))
    lengths = rng.integers(0, L + 1, size=B)
    lists[np.arange(L)[None, :] >= lengths[:, None]] = -1  # short lists, padded with -1
    targets = rng.integers(0, 90, size=B)
    ranks, n_unique, n_dup = ranks_from_lists(torch.from_numpy(lists), torch.from_numpy(targets))
    want = [brute_rank_list(lists[b].tolist(), int(targets[b])) for b in range(B)]
    np.testing.assert_array_equal(ranks.numpy(), [w[0] for w in want])
    np.testing.assert_array_equal(n_unique.numpy(), [w[1] for w in want])
    np.testing.assert_array_equal(n_dup.numpy(), [w[2] for w in want])
    # no duplicates -> position 150 of a 150-long list is beyond the cap
    long = torch.arange(150).unsqueeze(0)
    assert ranks_from_lists(long, torch.tensor([99]))[0].item() == 100
    assert ranks_from_lists(long, torch.tensor([100]))[0].item() == 0


def test_duplicates_never_inflate_ndcg_above_recall() -> None:
    """A list that repeats the target (duplicate beams) counts it once (docs/protocol.md §8)."""
    lists = torch.tensor([[5, 5, 5, 5, 5, 1, 2, 3, 4, 6]])
    ranks, _, n_dup = ranks_from_lists(lists, torch.tensor([5]))
    assert ranks.tolist() == [1] and n_dup.tolist() == [4]
    s = summarize(ranks.numpy())
    assert s["ndcg@10"] == s["recall@10"] == 1.0


# ---- per_user / summarize ----------------------------------------------------------------
def test_metric_keys() -> None:
    assert set(METRIC_KEYS) == {f"{m}@{k}" for k in CUTOFFS for m in ("recall", "ndcg")} | {f"hit@{MAX_RANK}"}
    assert CUTOFFS == (5, 10, 20) and MAX_RANK == 100


def test_per_user_and_summarize_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    ranks = rng.integers(0, MAX_RANK + 1, size=500)
    ranks[:12] = [0, 1, 2, 5, 6, 10, 11, 20, 21, 99, 100, 3]  # every boundary
    pu = per_user(ranks)
    summary = summarize(ranks)
    assert set(pu) == set(METRIC_KEYS) == set(summary)
    for key in METRIC_KEYS:
        want = np.array([brute_metric(int(r), key) for r in ranks])
        np.testing.assert_allclose(pu[key], want, rtol=0, atol=1e-12)
        assert summary[key] == pytest.approx(want.mean(), abs=1e-12)
    for k in CUTOFFS:
        assert np.all(pu[f"ndcg@{k}"] <= pu[f"recall@{k}"])
        assert summary[f"ndcg@{k}"] <= summary[f"recall@{k}"]
    assert summary["hit@100"] == pytest.approx(np.mean(ranks > 0))
    assert pu["ndcg@5"][1] == 1.0 and pu["ndcg@5"][2] == pytest.approx(1 / math.log2(3))


def test_summarize_counts_every_user_and_empty_is_nan() -> None:
    assert summarize(np.array([1, 0, 0, 0]))["recall@5"] == 0.25  # users with nothing score 0
    assert all(math.isnan(v) for v in summarize(np.array([], dtype=np.int64)).values())


def test_against_ir_measures_on_random_rankings() -> None:
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import R, nDCG

    rng = np.random.default_rng(7)
    n_items, n_users = 300, 150
    lists, targets = [], []
    for _ in range(n_users):
        length = int(rng.choice([1, 3, 15, 60, 120]))  # incl. short lists
        lst = rng.choice(n_items, size=length, replace=False).tolist()
        if rng.random() < 0.2:  # some duplicated beams
            lst = lst[:2] + lst[:2] + lst[2:]
        lists.append(lst)
        targets.append(int(rng.integers(0, n_items)) if rng.random() < 0.5 else lst[int(rng.integers(0, len(lst)))])
    L = max(len(x) for x in lists)
    padded = torch.full((n_users, L), -1, dtype=torch.long)
    for u, lst in enumerate(lists):
        padded[u, : len(lst)] = torch.tensor(lst)
    ranks, _, _ = ranks_from_lists(padded, torch.tensor(targets))
    ours = summarize(ranks.numpy())

    qrels = [ir_measures.Qrel(f"q{u}", f"d{t}", 1) for u, t in enumerate(targets)]
    run = []
    for u, lst in enumerate(lists):
        dedup = list(dict.fromkeys(lst))
        run += [ir_measures.ScoredDoc(f"q{u}", f"d{i}", float(len(dedup) - p)) for p, i in enumerate(dedup)]
    measures = {f"recall@{k}": R @ k for k in CUTOFFS} | {f"ndcg@{k}": nDCG @ k for k in CUTOFFS} | {"hit@100": R @ 100}
    theirs = ir_measures.calc_aggregate(list(measures.values()), qrels, run)
    assert set(measures) == set(METRIC_KEYS)
    for key, measure in measures.items():
        assert ours[key] == pytest.approx(theirs[measure], abs=1e-9), key


def test_metrics_beyond_the_lists_are_missing_not_invented() -> None:
    ranks = np.array([1, 0, 7, 20, 0])
    full = summarize(ranks)
    beam20 = summarize(ranks, list_depth=20, n_items=1000)  # a beam of 20: Hit@100 cannot be measured
    assert beam20["hit@100"] is None and all(beam20[k] == full[k] for k in METRIC_KEYS if k != "hit@100")
    beam5 = summarize(ranks, list_depth=5, n_items=1000)
    assert [k for k in METRIC_KEYS if beam5[k] is None] == ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "hit@100"]
    small_catalog = summarize(ranks, list_depth=30, n_items=30)  # every item was ranked: all metrics are real
    assert small_catalog == full
