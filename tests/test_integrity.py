"""A record means what it says: a run never stands in for one made with other settings, a
failing run fails alone, damaged files are named and redone (never averaged into a board),
and bad input is one clear line before any work (docs/protocol.md, "Records")."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import grid
from bench.cli import QUICK_TAG, main
from bench.method import Method
from bench.results import Claim, is_complete, load_records, ranks_path, record_path, write_record
from bench.runner import RunConfig, check_results_dir, run_one
from methods import METHODS

pytestmark = pytest.mark.usefixtures("single_thread")


def args_for(d: dict[str, Path], *extra: str) -> list[str]:
    return ["run", "--datasets", "tinyds", "--data-dir", str(d["data"]), "--cache-dir", str(d["cache"]), "--results-dir",
            str(d["results"]), "--no-download", "--quiet", "--device", "cpu", "--set", "mf.epochs=1", *extra]  # fmt: skip


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---- a record's identity includes its settings ---------------------------------------------
def test_a_record_made_with_other_settings_is_not_reused(capsys, registered_tiny) -> None:
    d = registered_tiny
    assert main(args_for(d, "--methods", "pop,mf", "--seeds", "0")) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in files(d["results"])}
    # the same command skips; another epoch cap stops before any work, naming the field and the two ways on
    assert main(args_for(d, "--methods", "mf", "--seeds", "0")) == 0
    assert "0 run(s) written, 1 skipped" in capsys.readouterr().out
    rc = main(args_for(d, "--methods", "mf", "--seeds", "0", "--set", "mf.epochs=2"))
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "epochs: 1 in the record, 2 here" in line and "--tag" in line and "--overwrite" in line
    assert {p: p.stat().st_mtime_ns for p in files(d["results"])} == before  # nothing trained, nothing written
    # a grid where only some seeds exist: the existing seed's settings decide, before any seed trains
    rc = main(args_for(d, "--methods", "mf", "--seeds", "0,1", "--set", "mf.epochs=2"))
    assert rc == 2 and "epochs" in one_error_line(capsys.readouterr().err)
    assert not record_path(d["results"], "tinyds", "mf", 1).exists()
    # the two ways on: its own table, or replacing the record
    assert main(args_for(d, "--methods", "mf", "--seeds", "0", "--set", "mf.epochs=2", "--tag", "e2")) == 0
    assert is_complete(record_path(d["results"], "tinyds", "mf", 0, "e2"))
    assert main(args_for(d, "--methods", "mf", "--seeds", "0", "--set", "mf.epochs=2", "--overwrite")) == 0
    assert json.loads(record_path(d["results"], "tinyds", "mf", 0).read_text())["config"]["epochs"] == 2


def test_precision_and_selection_metric_are_part_of_the_identity(capsys, registered_tiny) -> None:
    d = registered_tiny
    assert main(args_for(d, "--methods", "mf", "--precision", "fp32")) == 0
    capsys.readouterr()
    assert main(args_for(d, "--methods", "mf", "--precision", "auto")) == 0  # auto accepts what this machine made
    capsys.readouterr()
    assert main(args_for(d, "--methods", "mf", "--select-metric", "recall@10", "--precision", "fp32")) == 2
    assert "select_metric: 'ndcg@10' in the record, 'recall@10' here" in capsys.readouterr().err
    record = record_path(d["results"], "tinyds", "mf", 0)
    data = json.loads(record.read_text())
    data["efficiency"]["precision"] = "bf16"
    record.write_text(json.dumps(data))
    assert main(args_for(d, "--methods", "mf", "--precision", "fp32")) == 2
    assert "precision: bf16 in the record, fp32 here" in capsys.readouterr().err


def test_a_worker_never_reuses_a_record_of_other_settings(registered_tiny) -> None:
    """The same rule where the run is claimed (a record another worker wrote after the plan)."""
    d = registered_tiny
    settings = RunConfig(results_dir=d["results"], data_dir=d["data"], cache_dir=d["cache"], download=False, progress=False,
                         device="cpu", overrides={"mf": {"epochs": 1}})  # fmt: skip
    (spec,) = grid.build_specs(["tinyds"], ["mf"], [0], settings)
    grid.prepare([spec], log=lambda _: None)
    assert run_one(spec).status == "done"
    assert run_one(spec).status == "skipped"
    other = dataclasses.replace(spec, settings=dataclasses.replace(settings, overrides={"mf": {"epochs": 2}}))
    out = run_one(other)
    assert out.status == "failed" and "epochs: 1 in the record, 2 here" in out.message


def test_the_quick_suite_is_tagged(capsys, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("recbole")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--results-dir", str(tmp_path / "q"), "--dry-run", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert f"records tagged '{QUICK_TAG}'" in out and f"(variant {QUICK_TAG})" in out


def test_eval_users_covering_every_user_is_not_a_sample(registered_tiny) -> None:
    d = registered_tiny
    settings = RunConfig(results_dir=d["results"], eval_users=100000)
    (spec,) = grid.build_specs(["tinyds"], ["pop"], [0], settings)
    assert spec.settings.eval_users == 0 and spec.path == record_path(d["results"], "tinyds", "pop", 0)
    (spec,) = grid.build_specs(["tinyds"], ["pop"], [0], dataclasses.replace(settings, eval_users=5))
    assert spec.path == record_path(d["results"], "tinyds", "pop", 0, "users5")


# ---- every input validated before any work --------------------------------------------------
@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--seeds", "-1"], "--seeds '-1': expected integers >= 0"),
        (["--seeds", "0,-1,2"], "--seeds"),
        (["--set", "mf.dim=-5"], "option mf.dim: expected an integer >= 1, got -5"),
        (["--set", "mf.lr=0"], "option mf.lr: expected a positive learning rate"),
        (["--set", "sasrec.dropout=1.5"], "option sasrec.dropout: expected a fraction in [0, 1)"),
        (["--set", "mf.lr=nan"], "option mf.lr: expected a finite number >= 0"),
        (["--eval-batch-size", "0"], "--eval-batch-size 0: expected a positive integer"),
        (["--tag", "My Tag"], "--tag 'My Tag': expected lower-case letters"),
        (["--results-dir", "/proc/bench-results"], "--results-dir /proc/bench-results: cannot be created or written"),
        (["--set", "mf.nonexistent=1"], "unknown option 'nonexistent' of 'mf' (in mf.nonexistent)"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(capsys, registered_tiny, extra: list[str], fragment: str) -> None:
    d = registered_tiny
    rc = main(args_for(d, "--methods", "pop,mf", "--seeds", "0", *extra))
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and fragment in line, line
    assert files(d["results"]) == [] and not d["results"].exists()


def test_a_tag_message_says_what_is_wrong(capsys, registered_tiny) -> None:
    assert main(args_for(registered_tiny, "--methods", "pop", "--tag", "My Tag")) == 2
    assert "mask-history" not in capsys.readouterr().err
    assert main(args_for(registered_tiny, "--methods", "pop", "--tag", "mask-history")) == 2
    assert "use --mask-history" in capsys.readouterr().err


def test_a_config_directory_is_not_called_missing(capsys, registered_tiny, tmp_path: Path) -> None:
    assert main(args_for(registered_tiny, "--methods", "pop", "--config", str(tmp_path))) == 2
    assert "is a directory; expected a TOML or JSON file" in one_error_line(capsys.readouterr().err)


def test_every_committed_record_and_preset_keeps_the_ranges() -> None:
    """The range rules reject nothing that the methods' presets, the tests' tiny configs or the
    curated records ran with (a rule that did would stop a legitimate run)."""
    from bench.config import apply_overrides, resolve_config
    from conftest import TINY_OVERRIDES

    for name in METHODS.names():
        cls = METHODS.get(name)
        for preset in cls.presets:
            resolve_config(cls, preset)
        apply_overrides(cls.Config(), TINY_OVERRIDES.get(name, {}), name)
    root = Path(__file__).resolve().parent.parent / "results"
    for record in load_records(root) if root.is_dir() else []:
        cls = METHODS.get(record.data["method"])
        known = {f.name for f in dataclasses.fields(cls.Config)}
        apply_overrides(cls.Config(), {k: v for k, v in record.data["config"].items() if k in known}, cls.name)


def test_results_dir_check_really_writes_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    check_results_dir(target)
    assert list(tmp_path.iterdir()) == []  # the folders it made to try are gone again
    (tmp_path / "file").write_text("")
    with pytest.raises(Exception, match="not a directory"):
        check_results_dir(tmp_path / "file")


# ---- a failing run fails alone ---------------------------------------------------------------
class Failing(Method):
    name = "failing"

    @dataclasses.dataclass
    class Config:
        pass

    def fit(self) -> None:
        raise RuntimeError("this method always fails")

    def score(self, batch):
        raise AssertionError("not reached")


def test_a_failing_run_fails_alone_in_a_sequential_grid(capsys, registered_tiny, monkeypatch) -> None:
    """As with --jobs (whose workers run the same guarded_run): FAILED in the summary, the grid
    goes on, the exit code says that something failed."""
    monkeypatch.setitem(METHODS._targets, "failing", "test_integrity:Failing")
    monkeypatch.setitem(METHODS._loaded, "failing", Failing)
    d = registered_tiny
    rc = main(args_for(d, "--methods", "failing,pop", "--seeds", "0,1"))
    out, err = capsys.readouterr()
    assert rc == 1
    assert "[tinyds failing seed 0] FAILED: RuntimeError: this method always fails" in out
    assert "2 run(s) written, 0 skipped, 2 FAILED" in out
    assert is_complete(record_path(d["results"], "tinyds", "pop", 1))
    assert not list(d["results"].rglob("*.claim")) and not list(d["results"].rglob("*.tmp"))


# ---- damaged records are named, redone, and never on a board --------------------------------
@pytest.mark.parametrize("damage", ["json-list", "truncated-ranks", "foreign-ranks"])
def test_a_damaged_record_is_named_and_redone(capsys, registered_tiny, damage: str) -> None:
    d = registered_tiny
    assert main(args_for(d, "--methods", "pop", "--seeds", "0")) == 0
    path = record_path(d["results"], "tinyds", "pop", 0)
    if damage == "json-list":
        path.write_text("[]")
        reason = "not a result record"
    elif damage == "truncated-ranks":
        data = ranks_path(path).read_bytes()
        ranks_path(path).write_bytes(data[: len(data) // 2])
        reason = "unreadable"
    else:
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "run_id": "another"}))
        reason = "belongs to another run"
    capsys.readouterr()
    # the board refuses it, by path, and includes nothing of it
    assert main(["leaderboard", "--results-dir", str(d["results"]), "--output", str(d["results"].parent / "lb.md")]) == 0
    board = (d["results"].parent / "lb.md").read_text()
    assert f"`{path.as_posix()}`" in board and reason in board and "| pop" not in board
    with pytest.raises(Exception, match=str(path.name)):
        load_records(d["results"])
    # the plan names it, in --dry-run and with --overwrite too; a re-run redoes it
    for extra in (["--dry-run"], ["--dry-run", "--overwrite"]):
        assert main(args_for(d, "--methods", "pop", "--seeds", "0", *extra)) == 0
        out = capsys.readouterr().out
        assert "cannot be read" in out and reason in out and "1 to run" in out
    assert main(args_for(d, "--methods", "pop", "--seeds", "0")) == 0
    assert is_complete(path) and "1 run(s) written" in capsys.readouterr().out


# ---- claims and signals leave nothing behind -------------------------------------------------
def test_taking_over_a_stale_claim_leaves_no_temporary_file(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "seed0.claim"
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "since": 0}))
    claim = Claim(path)
    assert claim.acquire()
    claim.release()
    assert list(tmp_path.iterdir()) == []


# ---- an honest plan ------------------------------------------------------------------------
def _timed_record(root: Path, dataset: str, method: str, seed: int, seconds: float, users: int, interactions: int,
                  variant: str = "", config: dict | None = None) -> None:  # fmt: skip
    path = record_path(root, dataset, method, seed, variant)
    write_record(path, {"dataset": dataset, "method": method, "seed": seed, "metrics": {}, "protocol": {"variant": variant},
                        **({"config": config} if config is not None else {}),
                        "dataset_info": {"users": users, "interactions": interactions},
                        "efficiency": {"fit_seconds": seconds, "test_seconds": 0.0, "device": "cpu"}}, np.array([1]), "fp")  # fmt: skip


def test_estimates_come_from_the_curated_results_and_scale_by_training_interactions(registered_tiny, tmp_path, monkeypatch) -> None:
    from bench.data import registry

    curated = tmp_path / "curated"
    monkeypatch.setattr(grid, "CURATED_RESULTS", curated)
    grid._MEASURED.clear()
    counts = registry.DATASETS["tinyds"].counts
    train = counts.interactions - 2 * counts.users
    _timed_record(curated, "big", "mf", 0, 200.0, 10, 20 + 4 * train)  # 4x tinyds's training interactions
    _timed_record(curated, "big", "sasrec", 0, 160.0, 10, 20 + 4 * train, variant="cpu")  # a reduced preset only
    settings = RunConfig(results_dir=registered_tiny["results"])
    specs = grid.build_specs(["tinyds"], ["mf", "sasrec", "pop"], [0], settings)
    text, _ = grid.plan_text(specs, {})
    assert "tinyds mf seed(s) 0: about 50s each (scaled from big by training interactions" in text
    assert "same settings" in text.split("tinyds mf")[1].splitlines()[0]
    sasrec = text.split("tinyds sasrec")[1].splitlines()[0]
    assert "about 40s" in sasrec and "from @cpu: other settings" in sasrec
    assert "tinyds pop seed(s) 0: about ? each (no earlier record of this method)" in text
    assert "(1 of the estimates drawn from records made with other settings)" in text
    # a record of the same dataset and variant wins over any scaling
    _timed_record(registered_tiny["results"], "tinyds", "mf", 5, 30.0, counts.users, counts.interactions)
    grid._MEASURED.clear()
    text, _ = grid.plan_text(specs, {})
    assert "tinyds mf seed(s) 0: about 30s each (1 earlier record(s)" in text
    # a record of the same variant made with another config (a preset changed since) is other settings, behind the same settings
    from dataclasses import asdict

    from bench.config import resolve_config
    from methods import METHODS

    mf = asdict(resolve_config(METHODS.get("mf"), "", {}))
    (registered_tiny["results"] / "tinyds" / "mf" / "seed5.json").unlink()
    _timed_record(registered_tiny["results"], "tinyds", "mf", 6, 80.0, counts.users, counts.interactions, config={**mf, "epochs": mf["epochs"] + 1})
    grid._MEASURED.clear()
    line = grid.plan_text(specs, {})[0].split("tinyds mf")[1].splitlines()[0]
    assert "about 50s" in line and "scaled from big" in line  # the same settings on another dataset first
    _timed_record(registered_tiny["results"], "tinyds", "mf", 7, 60.0, counts.users, counts.interactions, config=mf)
    grid._MEASURED.clear()
    line = grid.plan_text(specs, {})[0].split("tinyds mf")[1].splitlines()[0]
    assert "about 60s" in line and "same settings" in line
    for path in curated.glob("big/mf/*"):
        path.unlink()
    (registered_tiny["results"] / "tinyds" / "mf" / "seed7.json").unlink()
    grid._MEASURED.clear()
    line = grid.plan_text(specs, {})[0].split("tinyds mf")[1].splitlines()[0]
    assert "about 80s" in line and "this variant with another config: other settings" in line


def test_a_long_plan_says_how_to_shorten_it(registered_tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(grid, "CURATED_RESULTS", tmp_path / "none")
    grid._MEASURED.clear()
    from bench.data import registry

    counts = registry.DATASETS["tinyds"].counts
    _timed_record(registered_tiny["results"], "tinyds", "mf", 9, 6 * 3600.0, counts.users, counts.interactions)
    text, _ = grid.plan_text(grid.build_specs(["tinyds"], ["mf"], [0, 1], RunConfig(results_dir=registered_tiny["results"])), {})
    assert "--preset cpu" in text and "--jobs N" in text and "--executor slurm" in text
