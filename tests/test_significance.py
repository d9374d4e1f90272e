"""Paired per-user tests between methods and Holm's correction (bench compare --pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel, wilcoxon

from bench.cli import main
from bench.compare import holm, significance
from bench.errors import UserError
from bench.metrics import per_user
from bench.results import record_path, write_record


def brute_holm(p: list[float]) -> list[float]:
    """Holm's adjusted p-value of hypothesis i: the max over k <= rank(i) of (m - k + 1) p_(k), capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    rank = {i: r for r, i in enumerate(order)}
    return [min(1.0, max((m - k) * p[order[k]] for k in range(rank[i] + 1))) for i in range(m)]


@pytest.mark.parametrize("p", [[0.01, 0.04, 0.03, 0.2], [0.5], [0.001, 0.001, 0.9], [0.02, 0.01, 0.04, 0.03, 0.05]])
def test_holm_matches_its_definition(p: list[float]) -> None:
    assert holm(p) == pytest.approx(brute_holm(p))
    assert all(a >= b for a, b in zip(holm(p), p))


def _write(results: Path, method: str, seed: int, ranks: np.ndarray) -> None:
    path = record_path(results, "d", method, seed, "cpu")
    write_record(path, {"dataset": "d", "method": method, "seed": seed, "metrics": {}, "protocol": {"variant": "cpu"},
                        "provenance": {"data_fingerprint": "fp"}}, ranks, "fp")  # fmt: skip


def test_paired_tests_average_seeds_per_user_and_correct_over_pairs(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    users = 300
    base = {s: rng.integers(0, 30, users) for s in (0, 1)}
    better = {s: np.where(rng.random(users) < 0.3, 1, base[s]) for s in (0, 1)}  # rank 1 for 30% more users
    same = {s: base[s].copy() for s in (0, 1)}
    for s in (0, 1):
        _write(tmp_path, "base", s, base[s])
        _write(tmp_path, "better", s, better[s])
        _write(tmp_path, "same", s, same[s])
    _write(tmp_path, "better", 2, better[0])  # a seed the baseline lacks is left out of the pair
    rows, text = significance(tmp_path, "d@cpu", [("better", "base"), ("same", "base")], "ndcg@10")
    ua = np.mean([per_user(better[s])["ndcg@10"] for s in (0, 1)], axis=0)
    ub = np.mean([per_user(base[s])["ndcg@10"] for s in (0, 1)], axis=0)
    assert rows[0]["seeds"] == [0, 1] and rows[0]["users"] == users
    assert rows[0]["delta"] == pytest.approx(ua.mean() - ub.mean()) and rows[0]["delta"] > 0
    assert rows[0]["t_p"] == pytest.approx(ttest_rel(ua, ub).pvalue)
    assert rows[0]["wilcoxon_p"] == pytest.approx(wilcoxon(ua, ub).pvalue)
    assert rows[1]["wilcoxon_p"] == 1.0 and not rows[1]["significant"]
    assert [r["holm_p"] for r in rows] == pytest.approx(holm([r["wilcoxon_p"] for r in rows]))
    assert rows[0]["significant"] and "better vs base" in text
    assert main(["compare", "--results-dir", str(tmp_path), "--dataset", "d@cpu", "--pairs", "better:base,same:base"]) == 0
    assert "Holm p (2 pairs)" in capsys.readouterr().out
    with pytest.raises(UserError, match="no records of method 'nosuch'"):
        significance(tmp_path, "d@cpu", [("nosuch", "base")])
    assert main(["compare", "--dataset", "d@cpu", "--pairs", "better"]) == 2
    assert "--pairs 'better': expected METHOD:BASELINE" in capsys.readouterr().err


def test_a_sampled_record_is_compared_on_exactly_its_users(tmp_path: Path, capsys) -> None:
    """`--users-of`: methods whose records cover every user, restricted to the users of a record
    made on an --eval-users sample (in another table), compared user by user on those only."""
    rng = np.random.default_rng(1)
    n = 200
    full = {m: rng.integers(0, 30, n) for m in ("tiger", "sasrec-ce")}
    for m, ranks in full.items():
        path = record_path(tmp_path, "d", m, 0, "cpu")
        write_record(path, {"dataset": "d", "method": m, "seed": 0, "metrics": {}, "protocol": {"variant": "cpu"},
                            "dataset_info": {"users": n}, "provenance": {"data_fingerprint": "fp"}}, ranks, "fp")  # fmt: skip
    sample = np.sort(rng.choice(n, size=40, replace=False))
    llm = np.where(rng.random(40) < 0.5, 1, full["tiger"][sample])
    sampled = record_path(tmp_path, "d", "lc-rec", 0, "cpu+users40")
    write_record(sampled, {"dataset": "d", "method": "lc-rec", "seed": 0, "metrics": {}, "protocol": {"variant": "cpu+users40"},
                           "dataset_info": {"users": n}, "provenance": {"data_fingerprint": "fp"}}, llm, "fp", users=sample)  # fmt: skip
    rows, text = significance(tmp_path, "d@cpu+users40,d@cpu", [("lc-rec", "tiger"), ("lc-rec", "sasrec-ce")], "ndcg@10", sampled)
    assert [r["users"] for r in rows] == [40, 40] and "restricted to the 40 users" in text
    for row, m in zip(rows, ("tiger", "sasrec-ce")):
        assert row["baseline_value"] == pytest.approx(per_user(full[m][sample])["ndcg@10"].mean())
        assert row["value"] == pytest.approx(per_user(llm)["ndcg@10"].mean())
    # without the restriction the two tables hold different users: refused, not compared
    with pytest.raises(UserError, match="different test users"):
        significance(tmp_path, "d@cpu+users40,d@cpu", [("lc-rec", "tiger")])
    # a record whose users are not all in another record's: named
    with pytest.raises(UserError, match="did not evaluate"):
        significance(tmp_path, "d@cpu+users40,d@cpu", [("tiger", "lc-rec")], "ndcg@10", record_path(tmp_path, "d", "tiger", 0, "cpu"))
    assert main(["compare", "--results-dir", str(tmp_path), "--dataset", "d@cpu+users40,d@cpu", "--pairs", "lc-rec:tiger",
                 "--users-of", str(sampled)]) == 0  # fmt: skip
    assert "restricted to the 40 users" in capsys.readouterr().out
