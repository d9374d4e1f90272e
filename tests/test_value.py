"""Item values and value metrics (bench/value.py): brute force on tiny data, the simulated
model's determinism, categories, and adding the section to existing records from their ranks."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.data.canonical import canonicalize
from bench.errors import UserError
from bench.results import load_records, write_record
from bench.split import leave_one_out
from bench.value import (
    VALUE_METRIC_KEYS,
    SimulatedValueModel,
    add_value_metrics,
    dataset_values,
    item_values,
    top_level_categories,
    value_metrics,
    value_section,
)
from tests.conftest import make_raw

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "add_value_metrics.py"


def brute(ranks, values, key: str) -> float | None:
    name, k = key.split("@")
    k = int(k)
    num = den = 0.0
    hits = 0
    for r, v in zip(ranks, values):
        v = 0.0 if not math.isfinite(v) else v
        inside = 0 < r <= k
        hits += inside
        den += v
        if name == "value_hr":
            num += v * inside
        elif name == "wndcg":
            num += v * (1 / math.log2(r + 1) if inside else 0.0)
    if name == "hr":
        return hits / len(ranks)
    return num / den if den > 0 else None


def test_value_metrics_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        ranks = rng.integers(0, 101, size=n)
        values = rng.lognormal(size=n)
        values[rng.random(n) < 0.2] = np.nan
        got = value_metrics(ranks, values)
        assert list(got) == list(VALUE_METRIC_KEYS)
        for key in VALUE_METRIC_KEYS:
            want = brute(ranks.tolist(), values.tolist(), key)
            assert (got[key] is None and want is None) or got[key] == pytest.approx(want), key


def test_value_metrics_known_case() -> None:
    # ranks 1, 11, 0 with values 1, 3, 6: value_hr@10 = 1/10, @100 = 4/10; wndcg@100 = (1 + 3/log2(12))/10
    got = value_metrics(np.array([1, 11, 0]), np.array([1.0, 3.0, 6.0]))
    assert got["hr@10"] == pytest.approx(1 / 3) and got["hr@100"] == pytest.approx(2 / 3)
    assert got["value_hr@10"] == pytest.approx(0.1) and got["value_hr@100"] == pytest.approx(0.4)
    assert got["wndcg@10"] == pytest.approx(0.1) and got["wndcg@100"] == pytest.approx((1 + 3 / math.log2(12)) / 10)
    # equal values: ValueHR = HR
    same = value_metrics(np.array([1, 11, 0, 50]), np.full(4, 2.5))
    assert same["value_hr@100"] == pytest.approx(same["hr@100"]) and same["value_hr@10"] == pytest.approx(same["hr@10"])
    assert value_metrics(np.array([1, 2]), np.array([np.nan, 0.0]))["value_hr@10"] is None


def test_top_level_category_skips_the_shared_root() -> None:
    text = {"categories": ["Sci,Tapes,Duct", "Sci,Test,Meters", "", "Sci,Tapes"]}
    cat, names = top_level_categories(text, 4)
    assert names == ["Tapes", "Test"] and cat.tolist() == [0, 1, -1, 0]
    cat, names = top_level_categories({"title": ["a", "b"]}, 2)
    assert names == [] and cat.tolist() == [-1, -1]


def test_simulated_model_is_deterministic_and_declared() -> None:
    text = {"categories": [f"Root,C{i % 3},x" for i in range(50)]}
    a = item_values("ds", 50, text, None)
    b = item_values("ds", 50, text, None)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.kind == "simulated" and (a.values > 0).all() and a.source["seed"] == 0
    assert a.source["params"] == {"mu": 0.0, "sigma_category": 0.5, "sigma_item": 1.0} and a.source["categories"] == 3
    c = item_values("ds", 50, text, None, SimulatedValueModel(seed=1))
    d = item_values("other", 50, text, None)
    assert not np.allclose(a.values, c.values) and not np.allclose(a.values, d.values)
    # the category effect: with no item noise, items of one category share one value
    e = item_values("ds", 50, text, None, SimulatedValueModel(sigma_item=0.0))
    assert len(np.unique(e.values)) == 3 and all(len(np.unique(e.values[e.category == k])) == 1 for k in range(3))


def test_real_prices_are_log1p_and_never_mixed_with_simulated() -> None:
    price = np.array([0.0, 9.0, np.nan, 99.0], dtype=np.float32)
    v = item_values("ds", 4, {}, price)
    assert v.kind == "real" and v.source["items_with_value"] == 0.75
    np.testing.assert_allclose(v.values[[0, 1, 3]], np.log1p([0.0, 9.0, 99.0]), rtol=1e-6)
    assert np.isnan(v.values[2]) and v.weights(np.array([2, 1]))[0] == 0.0  # no value: weight 0, not simulated
    assert item_values("ds", 4, {}, np.full(4, np.nan, dtype=np.float32)).kind == "simulated"


def _split(with_price: bool):
    raw = make_raw()
    if not with_price:
        raw = dataclasses.replace(raw, item_value={}, value_field=None)
    return leave_one_out(canonicalize("tiny", raw))


def test_value_section_uses_test_targets() -> None:
    split = _split(with_price=True)
    ranks = np.arange(len(split.test.targets)) % 7
    sec = value_section(split, ranks)
    v = np.log1p(split.dataset.item_value[split.test.targets].astype(np.float64))
    assert sec["value_source"]["kind"] == "real" and sec["users"] == len(ranks)
    assert sec["metrics"] == pytest.approx(value_metrics(ranks, v))
    sim = value_section(_split(with_price=False), ranks)
    assert sim["value_source"]["kind"] == "simulated"
    with pytest.raises(ValueError, match="ranks"):
        value_section(split, ranks[:-1])


def _write(results: Path, split, method: str, seed: int, ranks: np.ndarray, fingerprint: str) -> Path:
    path = results / "tiny" / method / f"seed{seed}.json"
    write_record(path, {"dataset": "tiny", "method": method, "seed": seed, "metrics": {"ndcg@10": 0.1},
                        "provenance": {"data_fingerprint": fingerprint}}, ranks, fingerprint)  # fmt: skip
    return path


def test_add_value_metrics_to_old_records(tmp_path: Path) -> None:
    split = _split(with_price=False)
    ranks = (np.arange(len(split.test.targets)) * 5) % 101
    path = _write(tmp_path, split, "m", 0, ranks, split.dataset.fingerprint)
    (rec,) = load_records(tmp_path)
    assert add_value_metrics(rec, split) is True
    data = json.loads(path.read_text())
    assert data["value_metrics"] == json.loads(json.dumps(value_section(split, ranks)))
    assert data["metrics"] == {"ndcg@10": 0.1}  # the rest of the record is kept
    (rec,) = load_records(tmp_path)
    assert add_value_metrics(rec, split) is False  # already there
    _write(tmp_path, split, "stale", 0, ranks, "0000")
    stale = [r for r in load_records(tmp_path) if r.data["method"] == "stale"][0]
    with pytest.raises(UserError, match="wrong targets"):
        add_value_metrics(stale, split)


def test_script_adds_to_a_results_dir(tmp_path: Path) -> None:
    split = _split(with_price=False)
    ranks = np.arange(len(split.test.targets)) % 3
    for seed in (0, 1):
        _write(tmp_path, split, "m", seed, ranks, split.dataset.fingerprint)
    spec = importlib.util.spec_from_file_location("add_value_metrics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        counts = module.add_to_results(tmp_path, load=lambda name, **_: split.dataset)
    finally:
        sys.modules.pop(spec.name, None)
    assert counts == {"added": 2, "kept": 0}
    assert all("value_metrics" in r.data for r in load_records(tmp_path))


def test_leaderboard_value_table_keeps_sources_apart(tmp_path: Path) -> None:
    from bench.leaderboard import render_leaderboard

    split = _split(with_price=False)
    ranks = np.arange(len(split.test.targets)) % 11
    for method in ("a", "b"):
        _write(tmp_path, split, method, 0, ranks, split.dataset.fingerprint)
    _write(tmp_path, split, "none", 0, ranks, split.dataset.fingerprint)  # no section: not in the value table
    for rec in load_records(tmp_path):
        if rec.data["method"] == "a":
            add_value_metrics(rec, split)
        elif rec.data["method"] == "b":
            add_value_metrics(rec, split, SimulatedValueModel(seed=7))
    board = render_leaderboard(tmp_path)
    tables = board.split("Value metrics (")[1:]
    assert len(tables) == 2 and all("simulated" in t for t in tables)
    assert ("| a " in tables[0]) != ("| a " in tables[1]) and not any("| none " in t for t in tables)
    want = value_section(split, ranks)["metrics"]["value_hr@100"]
    assert f"{want:.4f}" in board


def test_short_lists_make_the_deep_cutoff_missing(tmp_path: Path) -> None:
    ranks, v = np.array([1, 15, 0]), np.array([1.0, 2.0, 3.0])
    got = value_metrics(ranks, v, list_depth=20, n_items=500)
    assert got["hr@100"] is None and got["value_hr@100"] is None and got["wndcg@100"] is None
    assert got["value_hr@10"] == pytest.approx(1 / 6)
    assert value_metrics(ranks, v, list_depth=20, n_items=20)["hr@100"] is not None  # the catalog itself is that small
    split = _split(with_price=False)
    ranks = np.arange(len(split.test.targets)) % 21
    path = results_path = tmp_path / "tiny" / "gen" / "seed0.json"
    write_record(results_path, {"dataset": "tiny", "method": "gen", "seed": 0, "metrics": {}, "protocol": {"output": "lists"},
                                "generation": {"list_depth": 20}, "provenance": {"data_fingerprint": split.dataset.fingerprint}},
                 ranks, split.dataset.fingerprint)  # fmt: skip
    (rec,) = load_records(tmp_path)
    add_value_metrics(rec, split)
    section = json.loads(path.read_text())["value_metrics"]["metrics"]
    assert section["value_hr@100"] is None and section["value_hr@10"] is not None
