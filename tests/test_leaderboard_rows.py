"""Leaderboard rows that come from outside our records: published numbers and footnotes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.leaderboard import render_leaderboard
from bench.results import record_path, write_record
from methods import METHODS


def _record(results: Path, method: str, seed: int, headline: float, masked: float | None, preset: str = "") -> None:
    metrics = {k: headline for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "hit@100")}
    rec = {"dataset": "beauty", "method": method, "seed": seed, "metrics": metrics, "protocol": {"variant": preset, "preset": preset},
           "config": {}, "efficiency": {}}  # fmt: skip
    if masked is not None:
        rec["test_metrics_history_masked"] = {k: masked for k in metrics}
    write_record(record_path(results, "beauty", method, seed, preset), rec, np.array([1, 0]), "fp")


def test_paper_rows_sit_beside_the_metrics_evaluated_their_way(tmp_path: Path, monkeypatch) -> None:
    _record(tmp_path, "mf", 0, 0.02, 0.04)
    _record(tmp_path, "mf", 1, 0.02, 0.05)
    _record(tmp_path, "tiger", 0, 0.06, None)
    monkeypatch.setattr(METHODS.get("tiger"), "footnote", "a caveat about tiger", raising=False)
    text = render_leaderboard(tmp_path)
    mf = next(line for line in text.splitlines() if line.startswith("| paper: MF "))
    assert "history-masked supplement" in mf and "0.0474" in mf and "0.0450 ± 0.0071" in mf  # ours: the masked mean over 2 seeds
    tiger = next(line for line in text.splitlines() if line.startswith("| paper: TIGER "))
    assert "headline" in tiger and "0.0648" in tiger and "0.0600" in tiger
    assert "| paper: LightGCN" in text and "not run" in text
    assert "- `tiger`: a caveat about tiger" in text


def test_preset_tables_compare_configs_with_the_preset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(METHODS.get("pop"), "presets", {"cpu": {}})
    _record(tmp_path, "pop", 0, 0.01, 0.01, preset="cpu")
    text = render_leaderboard(tmp_path)
    assert "## beauty@cpu" in text and "Preset runs (cpu)" in text
    cpu = text.split("## beauty@cpu")[1].splitlines()
    # paper rows sit beside a preset's table too: a classical row (cpu preset = defaults) like for like,
    # a generative one (its cpu preset shrinks the model) labelled as not
    sasrec = next(line for line in cpu if line.startswith("| paper: SASRec "))
    tiger = next(line for line in cpu if line.startswith("| paper: TIGER "))
    assert "not like-for-like" not in sasrec and "paper scale; not like-for-like" in tiger


def test_each_table_links_its_own_plots_and_paired_tests(tmp_path: Path) -> None:
    _record(tmp_path, "mf", 0, 0.02, None)
    _record(tmp_path, "mf", 0, 0.02, None, preset="cpu")
    (tmp_path / "plots").mkdir()
    (tmp_path / "paired").mkdir()
    (tmp_path / "plots" / "beauty@cpu-univa-beta.png").write_bytes(b"\x89PNG")
    (tmp_path / "paired" / "beauty-ndcg@10.md").write_text("x")
    (tmp_path / "paired" / "beauty@cpu-notes.txt").write_text("x")  # neither a plot nor a paired table
    text = render_leaderboard(tmp_path)
    plain, cpu = text.split("## beauty@cpu")
    assert "[beauty-ndcg@10.md](" in plain and "univa-beta" not in plain
    assert "[beauty@cpu-univa-beta.png](" in cpu and "beauty-ndcg@10" not in cpu and "notes" not in text


def test_each_published_row_is_held_once_and_names_registered_methods(tmp_path: Path) -> None:
    from bench.published import PUBLISHED

    rows = [(p.dataset, p.label, p.source) for p in PUBLISHED]
    assert len(rows) == len(set(rows))  # a paper row beside several of our variants lists them, not repeats itself
    for p in PUBLISHED:
        assert p.methods and all(METHODS.get(m) for m in p.methods)  # an unknown name raises
    _record(tmp_path, "caser-bce", 0, 0.03, 0.04)
    text = render_leaderboard(tmp_path)
    caser = [line for line in text.splitlines() if line.startswith("| paper: Caser ")]
    assert len(caser) == 2 and "| caser-bce " in caser[1] and "0.0400" in caser[1] and "not run" in caser[0]
