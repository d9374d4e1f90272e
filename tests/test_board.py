"""Boards (declared cells of a leaderboard), identical settings across presets, declared gaps,
coverage lines, the across-datasets summary and the leaderboard's figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import across
from bench.board import equivalent_settings, load_board
from bench.cli import main
from bench.data import registry
from bench.errors import UserError
from bench.leaderboard import render_leaderboard, stale, write_leaderboard
from bench.results import record_path, write_record
from bench.runner import RunConfig
from tests.conftest import make_raw, write_p5_folder

GROUP = 'datasets = ["beauty"]\nmethods = ["mf"]\nseeds = [0]\n'


def _board(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _record(results: Path, dataset: str, method: str, seed: int, ndcg: float, preset: str = "", text_fields=("title",),
            fit: float = 10.0, params: int = 1000) -> None:  # fmt: skip
    from dataclasses import asdict

    from bench.config import resolve_config
    from methods import METHODS

    metrics = {k: ndcg for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "hit@100")}
    config = asdict(resolve_config(METHODS.get(method), preset)) if method in METHODS else {}  # what a run at these settings records
    rec = {"dataset": dataset, "method": method, "seed": seed, "metrics": metrics, "config": config,
           "protocol": {"variant": preset, "preset": preset, "tag": "", "history_masking": False, "eval_users": None},
           "efficiency": {"fit_seconds": fit, "params_total": params},
           "dataset_info": {"users": 10, "items": 5, "interactions": 40, "text_fields": list(text_fields)}}  # fmt: skip
    write_record(record_path(results, dataset, method, seed, preset), rec, np.array([1, 0]), "fp")


# ---- loading ---------------------------------------------------------------------------------
def test_the_committed_boards_load() -> None:
    board = load_board("main")
    tables = {c.table for c in board.cells()}
    assert {"beauty", "beauty@cpu", "instruments@cpu", "yelp@cpu", "sports", "toys@cpu", "ml-1m", "scientific@cpu"} <= tables
    assert all(c.seed in (0, 1, 2) for c in board.cells())


def test_a_board_declares_groups_of_cells(tmp_path: Path) -> None:
    path = _board(tmp_path, f'description = "x"\nresults_dir = "res"\n[[group]]\n{GROUP}\n'
                            '[[group]]\nname = "gen"\ndatasets = ["beauty", "yelp"]\nmethods = ["letter", "p5-cid"]\n'
                            'seeds = [0, 1]\npreset = "cpu"\n')  # fmt: skip
    board = load_board(str(path))
    assert board.name == "tiny" and board.results_dir == "res" and len(board.cells()) == 1 + 2 * 2 * 2
    assert board.groups[1].methods == ("letter-tiger", "p5-cid")  # aliases resolved
    assert {c.table for c in board.cells()} == {"beauty", "beauty@cpu", "yelp@cpu"}
    specs = board.specs(RunConfig(results_dir=tmp_path))
    assert {s.settings.preset for s in specs} == {"", "cpu"} and specs[-1].path.parent.parent.name == "yelp@cpu"


@pytest.mark.parametrize(("text", "fragments"), [
    (GROUP.replace('"mf"', '"mff"'), ("field 'methods'", "unknown method 'mff'", "Did you mean 'mf'")),
    (GROUP.replace('"beauty"', '"beuty"'), ("field 'datasets'", "unknown dataset 'beuty'", "'beauty'")),
    (GROUP + 'preset = "gpu"\n', ("field 'preset'", "declares no such preset")),
    (GROUP + 'seed = [1]\n', ("unknown field 'seed'", "Did you mean 'seeds'")),
    (GROUP.replace("[0]", '["a"]'), ("field 'seeds'", "non-negative integers")),
    (GROUP.replace('["mf"]', "[]"), ("field 'methods'", "non-empty list")),
    (GROUP + "[[group]]\n" + GROUP.replace('["mf"]', '["pop", "mf"]'), ("cell beauty mf seed 0 is declared by group",)),
    ("[[group]\n", ("not valid TOML",)),
    ('description = "no groups"\n', ("expected one or more [[group]] tables",)),
])  # fmt: skip
def test_bad_boards_are_one_clear_error_naming_the_file_and_field(tmp_path: Path, text: str, fragments) -> None:
    path = _board(tmp_path, "[[group]]\n" + text if text.startswith("datasets") else text)
    with pytest.raises(UserError) as err:
        load_board(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_an_unknown_board_name_suggests_the_boards(capsys) -> None:
    assert main(["run", "--board", "mian", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'mian'" in err and "Did you mean 'main'" in err


def test_a_board_run_takes_no_methods_of_its_own(capsys, tmp_path: Path) -> None:
    path = _board(tmp_path, "[[group]]\n" + GROUP)
    assert main(["run", "--board", str(path), "--methods", "pop", "--dry-run"]) == 2
    assert "drop --methods" in capsys.readouterr().err


def test_list_boards(capsys) -> None:
    assert main(["list", "--boards"]) == 0
    out = capsys.readouterr().out
    assert "board main" in out and "beauty@cpu" in out and "python -m bench run --board main" in out


# ---- identical settings -----------------------------------------------------------------------
def test_a_preset_that_resolves_to_the_defaults_is_equivalent_both_ways() -> None:
    assert [s.preset for s in equivalent_settings("mf", RunConfig(preset="cpu"))] == [""]
    assert [s.preset for s in equivalent_settings("mf", RunConfig(preset=""))] == ["cpu"]
    assert equivalent_settings("tiger", RunConfig(preset="cpu")) == []  # its cpu preset shrinks the model
    # an override that makes the two differ breaks the equivalence
    assert equivalent_settings("mf", RunConfig(preset="cpu", overrides={"mf": {"dim": 8}})) == [RunConfig(overrides={"mf": {"dim": 8}})]


# ---- a board's run: existing, equivalent and impossible cells --------------------------------
@pytest.fixture
def tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two registered P5 datasets under tmp_path/data: 'tinyds' with item text, 'notext' without."""
    data = tmp_path / "data"
    for name in ("tinyds", "notext"):
        raw = make_raw(n_users=20)
        write_p5_folder(data / name, raw)
        counts = registry.Counts(len(raw.sequences), len({i for s in raw.sequences.values() for i in s}),
                                 sum(len(s) for s in raw.sequences.values()))  # fmt: skip
        monkeypatch.setitem(registry.DATASETS, name, registry.DatasetSpec(name, "tiny", counts, name, (registry.P5_LAYOUT,)))
    (data / "notext" / "items.csv").unlink()
    return data


def test_dataset_inputs_come_from_the_copys_files(tiny_data: Path) -> None:
    assert registry.dataset_inputs("tinyds", tiny_data, cache_dir=tiny_data / "cache")[0] == {"item_text"}
    assert registry.dataset_inputs("notext", tiny_data, cache_dir=tiny_data / "cache")[0] == frozenset()


def test_a_board_run_skips_existing_equivalent_and_impossible_cells(capsys, tmp_path: Path, tiny_data: Path) -> None:
    results = tmp_path / "results"
    _record(results, "tinyds", "mf", 0, 0.1)
    path = _board(tmp_path, f'results_dir = "{results}"\n'
                            '[[group]]\ndatasets = ["tinyds"]\nmethods = ["mf"]\nseeds = [0, 1]\n'
                            '[[group]]\ndatasets = ["tinyds", "notext"]\nmethods = ["mf", "tiger"]\nseeds = [0, 1]\npreset = "cpu"\n')
    assert main(["run", "--board", str(path), "--data-dir", str(tiny_data), "--cache-dir", str(tmp_path / "cache"), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    # notext has no item text: tiger is skipped there with one line naming the missing input
    assert "skip notext tiger: needs item text" in err and "notext@cpu tiger" not in out
    # tinyds@cpu mf seed 0 is the record at the defaults; seed 1 is the same run as the defaults' seed 1
    assert "2 cell(s) at settings equivalent to another cell's" in out and "1 by records that exist, 1 by runs of this board" in out
    assert "1 exist and will be skipped" in out
    assert "tinyds mf seed(s) 1:" in out and "tinyds@cpu mf" not in out
    assert "tinyds@cpu tiger seed(s) 0,1:" in out and "notext@cpu mf seed(s) 0,1:" in out
    assert not (results / "tinyds@cpu").exists()  # a dry run writes nothing


def test_datasets_all_skips_a_pair_without_its_input_and_a_named_one_is_an_error(capsys, tmp_path: Path, tiny_data: Path) -> None:
    common = ["--data-dir", str(tiny_data), "--cache-dir", str(tmp_path / "cache"), "--no-download", "--dry-run",
              "--results-dir", str(tmp_path / "results")]  # fmt: skip
    assert main(["run", "--methods", "mf,tiger", "--datasets", "all", *common]) == 0
    out, err = capsys.readouterr()
    assert "skip notext tiger: needs item text" in err and "notext mf" in out and "notext tiger" not in out and "tinyds tiger" in out
    assert main(["run", "--methods", "tiger", "--datasets", "notext", *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tiger cannot run on notext: it needs item text" in err and "items.csv" not in err


# ---- the leaderboard --------------------------------------------------------------------------
def test_coverage_lines_name_missing_cells_and_declared_gaps(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _record(results, "beauty", "mf", 0, 0.02)
    _record(results, "sports", "pop", 0, 0.01, text_fields=())
    board = load_board(str(_board(tmp_path, '[[group]]\ndatasets = ["beauty", "sports"]\nmethods = ["mf", "pop"]\nseeds = [0, 1]\n'
                                            '[[group]]\ndatasets = ["sports", "toys"]\nmethods = ["tiger", "p5-cid"]\nseeds = [0]\n'
                                            'preset = "cpu"\n')))  # fmt: skip
    text = render_leaderboard(results, [board])
    beauty = text.split("## beauty\n")[1].split("## ")[0]
    assert "Coverage (board `tiny`): 1 of 4 declared cells. Missing: mf seed 1; pop seeds 0, 1." in beauty
    sports_cpu = text.split("## sports@cpu\n")[1].split("## ")[0]
    # pop's sports record is at the defaults, the cpu preset is its defaults: shown, but not declared here
    assert "| pop (= defaults) " in sports_cpu
    assert "Coverage (board `tiny`): 0 of 1 declared cells. Missing: p5-cid seed 0." in sports_cpu
    assert "Declared gaps, not run: `tiger`: needs item text" in sports_cpu
    toys = text.split("## toys@cpu\n")[1]  # no record says what toys offers: tiger is missing, not a gap
    assert "No records yet." in toys and "0 of 2 declared cells" in toys and "tiger seed 0" in toys
    write_leaderboard(results, tmp_path / "lb.md", [board])
    assert stale(results, tmp_path / "lb.md", [board]) == []  # missing cells are information: --check passes


def test_records_at_the_defaults_fill_the_cpu_table_and_the_reverse(tmp_path: Path) -> None:
    _record(tmp_path, "beauty", "mf", 0, 0.02)
    _record(tmp_path, "beauty", "mf", 1, 0.04, preset="cpu")
    _record(tmp_path, "beauty", "tiger", 0, 0.05, preset="cpu")
    _record(tmp_path, "beauty", "tiger", 1, 0.06)
    text = render_leaderboard(tmp_path)
    plain, cpu = text.split("## beauty@cpu")
    assert "| mf (seed 1 = cpu) " in plain and "| mf (seed 0 = defaults) " in cpu  # each table: its own seed and the other's
    assert "| tiger " in plain and "| tiger " in cpu and "tiger (" not in text  # tiger's cpu preset is another model: never shared
    assert "0.0300 ± 0.0141" in plain and "0.0300 ± 0.0141" in cpu


def test_across_datasets_ranks_and_friedman_on_a_small_synthetic_set() -> None:
    table = {"a": {"x": 0.3, "y": 0.2, "z": 0.1}, "b": {"x": 0.5, "y": 0.4, "z": 0.3}, "c": {"x": 0.2, "y": 0.1, "z": 0.05, "w": 0.9}}
    assert across.ranks({"x": 0.3, "y": 0.3, "z": 0.1}) == {"x": 1.5, "y": 1.5, "z": 3.0}
    assert across.mean_ranks(table) == {"w": (1.0, 1), "x": (4 / 3, 3), "y": (7 / 3, 3), "z": (10 / 3, 3)}
    datasets, methods = across.complete_block(table)
    assert datasets == ["a", "b", "c"] and methods == ["x", "y", "z"]
    result = across.friedman(table, datasets, methods)
    # perfect agreement, N = 3, k = 3: chi2 = 12N/(k(k+1)) * sum(R^2) - 3N(k+1) = 6; p = exp(-3); CD = 2.3437 * sqrt(12 / 18)
    assert result.avg_ranks == {"x": 1.0, "y": 2.0, "z": 3.0}
    assert math.isclose(result.statistic, 6.0) and math.isclose(result.p_value, math.exp(-3), rel_tol=1e-9)
    assert math.isclose(result.cd, 2.3437 * math.sqrt(12 / 18), rel_tol=1e-3)
    assert across.cliques(result.avg_ranks, result.cd) == [["x", "y"], ["y", "z"]]
    assert across.complete_block({"a": {"x": 1, "y": 2, "z": 3}, "b": {"x": 1, "y": 2}}) == ([], [])


def test_the_summary_and_its_figures_are_written_once_and_checked(tmp_path: Path) -> None:
    for dataset, scores in (("beauty", (0.3, 0.2, 0.1)), ("toys", (0.25, 0.2, 0.15))):
        for method, score in zip(("sasrec-ce", "mf", "pop"), scores):
            _record(tmp_path, dataset, method, 0, score)
    text = render_leaderboard(tmp_path)
    summary = text.split("## Across datasets")[1].split("## beauty")[0]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in summary.splitlines()
                                              if line.startswith("| ") and not line.startswith("| method"))}  # fmt: skip
    assert rows == {"mf": ["—", "0", "2.00", "2"], "pop": ["—", "0", "3.00", "2"], "sasrec-ce": ["—", "0", "1.00", "2"]}
    assert "Critical difference, `@cpu` tables: not drawn" in summary
    assert "3 methods complete on all of 2 datasets (beauty, toys)" in summary and "critical-difference-defaults.png" in summary
    assert "[beauty.png](" in text and "[toys.png](" in text
    out = tmp_path / "lb.md"
    write_leaderboard(tmp_path, out)
    pngs = sorted((tmp_path / "plots").rglob("*.png"))
    assert [p.name for p in pngs] == ["beauty.png", "toys.png", "critical-difference-defaults.png"]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in pngs}
    write_leaderboard(tmp_path, out)  # nothing changed: no figure is redrawn
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in pngs} == before
    assert stale(tmp_path, out) == []
    _record(tmp_path, "toys", "pop", 1, 0.15)  # a new seed changes toys' figure data (and the text)
    assert set(stale(tmp_path, out)) == {str(out), str(tmp_path / "plots" / "cost" / "toys.png")}


def test_published_rows_of_the_new_datasets() -> None:
    from bench.published import published_for

    lightgcn = next(p for p in published_for("instruments") if p.label == "LightGCN")
    assert lightgcn.metrics["recall@10"] == 0.1000 and lightgcn.metrics["recall@5"] == 0.0794  # the paper's ".0100" is a typo
    tiger = next(p for p in published_for("toys") if p.label == "TIGER")
    assert tiger.metrics == {"recall@5": 0.0521, "ndcg@5": 0.0371, "recall@10": 0.0712, "ndcg@10": 0.0432}
    for dataset in ("sports", "toys", "instruments", "yelp"):
        rows = published_for(dataset)
        assert rows and all(p.metrics["recall@10"] >= p.metrics.get("recall@5", 0) and p.metrics["ndcg@10"] >= p.metrics.get("ndcg@5", 0)
                            for p in rows)
        assert all({"recall@10", "ndcg@10"} <= set(p.metrics) for p in rows)  # what the leaderboard shows


def test_a_board_names_and_keeps_a_record_of_other_settings_where_a_grid_stops(capsys, tmp_path: Path, tiny_data: Path) -> None:
    """A cell recorded before a default changed: the board run says so, one line per method, and
    leaves it (--overwrite redoes it); the same run asked for as a grid stops on it."""
    results = tmp_path / "results"
    for seed in (0, 1):
        _record(results, "tinyds", "mf", seed, 0.1)
        path = record_path(results, "tinyds", "mf", seed)
        data = json.loads(path.read_text())
        data["config"]["epochs"] = 7
        path.write_text(json.dumps(data))
    board = _board(tmp_path, f'results_dir = "{results}"\n[[group]]\ndatasets = ["tinyds"]\nmethods = ["mf", "pop"]\nseeds = [0, 1]\n')
    common = ["--data-dir", str(tiny_data), "--cache-dir", str(tmp_path / "cache"), "--dry-run"]
    assert main(["run", "--board", str(board), *common]) == 0
    out = capsys.readouterr().out
    assert "keep tinyds mf seed(s) 0,1: recorded with other settings (epochs: 7 in the record, 200 here)" in out
    assert "tinyds pop seed(s) 0,1:" in out and "tinyds mf seed(s)" not in out.split("plan:")[1]
    assert main(["run", "--methods", "mf", "--datasets", "tinyds", "--seeds", "0", "--results-dir", str(results), *common]) == 2
    assert "epochs: 7 in the record, 200 here" in capsys.readouterr().err
