"""Grids of runs: the plan, preparing once, parallel workers, cluster engines, and a results
directory shared by several workers (claims, run ids, stale claims of killed workers)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import grid
from bench.cli import main
from bench.errors import UserError
from bench.method import Method
from bench.results import Claim, Record, claim_path, is_complete, load_records, ranks_path, record_path, write_record
from bench.runner import RunConfig, RunSpec, check_results_dir, run_one
from methods import METHODS

needs_ml100k = pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="the ml-100k copy ships in the recbole wheel")
# Small enough for seconds per run on a busy CPU; the same settings for the sequential and the parallel grid.
FAST = {"mf": {"dim": 16, "epochs": 3, "eval_every": 1, "patience": 2}, "sasrec": {"hidden": 16, "layers": 1, "max_len": 10, "epochs": 2}}


def settings_for(d: dict[str, Path], **changes) -> RunConfig:
    base = dict(results_dir=d["results"], device="cpu", progress=False, data_dir=d["data"], cache_dir=d["cache"], download=False,
                threads=1, overrides={"mf": {"dim": 8, "epochs": 2, "eval_every": 1}})  # fmt: skip
    base.update(changes)
    return RunConfig(**base)


def ranks_and_metrics(results: Path) -> dict:
    return {r.key: (r.data["metrics"], r.ranks().tolist()) for r in load_records(results)}


# ---- claims and run ids -------------------------------------------------------------------
def test_claim_is_exclusive_and_released(tmp_path: Path) -> None:
    path = tmp_path / "r" / "seed0.claim"
    a, b = Claim(path), Claim(path)
    assert a.acquire() and not b.acquire()
    assert a.owner()["pid"] == os.getpid()
    a.release()
    assert not path.exists() and b.acquire()
    b.release()


def test_claim_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "seed0.claim"
    import socket

    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": time.time()}))
    claim = Claim(path)
    assert claim.stale() and claim.acquire()  # e.g. a worker killed with kill -9
    claim.release()


def test_claim_of_another_host_is_stale_only_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "seed0.claim"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": time.time()}))
    assert not Claim(path, stale_after=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    claim = Claim(path, stale_after=60)
    assert claim.acquire()
    claim.release()


def test_json_and_ranks_of_different_runs_never_pair(tmp_path: Path) -> None:
    a = record_path(tmp_path / "a", "d", "m", 0)
    b = record_path(tmp_path / "b", "d", "m", 0)
    write_record(a, {"dataset": "d", "method": "m", "seed": 0, "metrics": {}}, np.array([1, 2]), "fp", "run-a")
    write_record(b, {"dataset": "d", "method": "m", "seed": 0, "metrics": {}}, np.array([3, 0]), "fp", "run-b")
    assert is_complete(a) and json.loads(a.read_text())["run_id"] == "run-a"
    os.replace(ranks_path(b), ranks_path(a))  # a ranks file of another run next to a's JSON
    assert not is_complete(a)
    with pytest.raises(UserError, match="run-b.*run-a"):
        Record(a, json.loads(a.read_text())).ranks()


def test_busy_run_is_left_to_its_claimant(registered_tiny) -> None:
    spec = RunSpec("tinyds", "pop", 0, settings_for(registered_tiny))
    holder = Claim(claim_path(spec.path))
    assert holder.acquire()
    try:
        out = run_one(spec)
        assert out.status == "busy" and not spec.path.exists()
    finally:
        holder.release()
    assert run_one(spec).status == "done"


# ---- bad paths, the plan, preparing once -------------------------------------------------
def test_unwritable_results_dir_fails_before_training(capsys, registered_tiny, monkeypatch) -> None:
    blocker = registered_tiny["data"].parent / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(Method, "fit", lambda self: pytest.fail("trained although the results dir is unusable"))
    rc = main(["run", "--methods", "pop", "--datasets", "tinyds", "--data-dir", str(registered_tiny["data"]), "--no-download",
               "--cache-dir", str(registered_tiny["cache"]), "--results-dir", str(blocker / "results"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --results-dir") and "a-file" in err[0]
    with pytest.raises(UserError, match="not a directory"):
        check_results_dir(blocker)


def test_dry_run_prints_the_plan_and_writes_nothing(capsys, registered_tiny, monkeypatch) -> None:
    monkeypatch.setattr(grid, "CURATED_RESULTS", Path("/nonexistent"))  # estimates from this test's records only
    d = registered_tiny
    args = ["run", "--methods", "pop,mf", "--datasets", "tinyds", "--seeds", "0,1", "--data-dir", str(d["data"]), "--no-download",
            "--cache-dir", str(d["cache"]), "--results-dir", str(d["results"]), "--quiet", "--set", "mf.epochs=1"]  # fmt: skip
    assert main([*args, "--methods", "pop", "--seeds", "0"]) == 0  # one earlier record: an estimate for pop
    capsys.readouterr()
    before = sorted(p for p in d["results"].rglob("*"))
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "plan: 4 run(s): 3 to run, 1 exist and will be skipped" in out
    assert "dataset tinyds: source local" in out and "canonical cache ready" in out
    assert "tinyds pop seed(s) 1: about" in out and "1 earlier record(s) on" in out
    assert "tinyds mf seed(s) 0,1: about ? each (no earlier record of this method)" in out
    assert sorted(p for p in d["results"].rglob("*")) == before


class CountingPrepare(Method):
    name = "counting-prepare"
    calls: list[str] = []

    @dataclasses.dataclass
    class Config:
        pass

    @classmethod
    def prepare_dataset(cls, data, config, device):
        cls.calls.append(data.dataset)
        return {"made": "once"}

    def fit(self) -> None:
        pass

    def score(self, batch):
        import torch

        return torch.zeros(len(batch.users), self.data.n_items)


def test_each_dataset_is_prepared_once_before_runs(registered_tiny, monkeypatch) -> None:
    monkeypatch.setitem(METHODS._targets, "counting-prepare", "test_grid:CountingPrepare")
    monkeypatch.setitem(METHODS._loaded, "counting-prepare", CountingPrepare)
    CountingPrepare.calls.clear()
    specs = grid.build_specs(["tinyds"], ["counting-prepare", "pop"], [0, 1, 2], settings_for(registered_tiny))
    lines: list[str] = []
    ready = grid.prepare(specs, log=lines.append)
    assert ready == specs and CountingPrepare.calls == ["tinyds"]
    assert "counting-prepare: made once" in lines[-1]


def test_longest_expected_runs_go_first(registered_tiny) -> None:
    settings = settings_for(registered_tiny)
    for method, seconds in (("pop", 1.0), ("mf", 50.0)):
        path = record_path(settings.results_dir, "tinyds", method, 9)
        write_record(path, {"dataset": "tinyds", "method": method, "seed": 9, "metrics": {},
                            "efficiency": {"fit_seconds": seconds, "test_seconds": 0.0, "device": "cpu"}}, np.array([1]), "fp")  # fmt: skip
    specs = grid.build_specs(["tinyds"], ["pop", "mf", "sasrec"], [0], settings)
    _, pending = grid.plan_text(specs, {})
    assert [s.method for s in pending] == ["sasrec", "mf", "pop"]  # no estimate first, then longest


# ---- parallel and cluster engines give the sequential run's records ----------------------
def _ml100k_settings(tmp_path: Path, results: str) -> RunConfig:
    return RunConfig(results_dir=tmp_path / results, device="cpu", progress=False, log=False, cache_dir=tmp_path / "cache",
                     download=False, threads=1, overrides=FAST)  # fmt: skip


@needs_ml100k
@pytest.mark.slow
def test_parallel_jobs_and_submitit_match_the_sequential_run(tmp_path: Path) -> None:
    methods, seeds = ["pop", "mf"], [0, 1]
    sequential = grid.build_specs(["ml-100k"], methods, seeds, _ml100k_settings(tmp_path, "seq"))
    grid.prepare(sequential, log=lambda _: None)
    assert {o.status for o in grid.run_local(sequential)} == {"done"}
    parallel = grid.build_specs(["ml-100k"], methods, seeds, _ml100k_settings(tmp_path, "par"))
    assert {o.status for o in grid.run_local(parallel, jobs=2)} == {"done"}
    expected = ranks_and_metrics(tmp_path / "seq")
    assert len(expected) == 4 and ranks_and_metrics(tmp_path / "par") == expected
    pytest.importorskip("submitit")
    array = grid.build_specs(["ml-100k"], methods, seeds, _ml100k_settings(tmp_path, "sub"))
    options = grid.SlurmOptions(cpus=1, time_min=20, folder=str(tmp_path / "submitit"))
    outcomes = grid.run_submitit(array, options, cluster="local", log=lambda _: None)
    assert [o.status for o in outcomes] == ["done"] * 4, [o.message for o in outcomes]
    assert ranks_and_metrics(tmp_path / "sub") == expected


@needs_ml100k
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (optional: pip install ray)")
def test_ray_matches_the_sequential_run(tmp_path: Path) -> None:
    specs = grid.build_specs(["ml-100k"], ["pop", "mf"], [0], _ml100k_settings(tmp_path, "seq"))
    grid.prepare(specs, log=lambda _: None)
    grid.run_local(specs)
    remote = grid.build_specs(["ml-100k"], ["pop", "mf"], [0], _ml100k_settings(tmp_path, "ray"))
    outcomes = grid.run_ray(remote, cpus_per_task=1, log=lambda _: None)
    assert [o.status for o in outcomes] == ["done", "done"], [o.message for o in outcomes]
    assert ranks_and_metrics(tmp_path / "ray") == ranks_and_metrics(tmp_path / "seq")


def _cli_run(tmp_path: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "bench", "run", "--datasets", "ml-100k", "--cache-dir", str(tmp_path / "cache"), "--no-download",
            "--results-dir", str(tmp_path / "results"), "--device", "cpu", "--threads", "1",
            "--set", "mf.dim=16", "--set", "mf.epochs=3", "--set", "mf.eval_every=1", *extra]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


@needs_ml100k
@pytest.mark.slow
def test_two_invocations_of_one_grid_train_each_run_once(tmp_path: Path) -> None:
    grid.prepare(grid.build_specs(["ml-100k"], ["pop"], [0], _ml100k_settings(tmp_path, "results")), log=lambda _: None)
    procs = [_cli_run(tmp_path, "--methods", "pop,mf", "--seeds", "0,1,2") for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    written = sum(int(out.split(" run(s) written")[0].rsplit("\n", 1)[-1]) for out, _ in outs)
    records = load_records(tmp_path / "results")
    assert written == 6 and len(records) == 6  # every run trained exactly once, by one of the two
    assert all(is_complete(r.path) for r in records) and not list((tmp_path / "results").rglob("*.claim"))
    assert not list((tmp_path / "results").rglob("*.tmp"))


@needs_ml100k
@pytest.mark.slow
def test_a_killed_worker_leaves_nothing_partial_and_the_grid_completes(tmp_path: Path) -> None:
    proc = _cli_run(tmp_path, "--methods", "mf", "--seeds", "0", "--set", "mf.epochs=200", "--set", "mf.patience=1000")
    claim = tmp_path / "results" / "ml-100k" / "mf" / "seed0.claim"
    deadline = time.monotonic() + 120
    while not claim.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert claim.exists(), proc.communicate()
    proc.kill()  # SIGKILL while training
    proc.wait()
    assert not is_complete(claim.with_name("seed0.json")) and not claim.with_name("seed0.json").exists()
    again = _cli_run(tmp_path, "--methods", "mf", "--seeds", "0")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "1 run(s) written" in out and is_complete(claim.with_name("seed0.json")) and not claim.exists()


def _grid_training(tmp_path: Path, jobs: int, sigint) -> tuple[subprocess.Popen, Path]:
    """A two-run mf grid in its own process group, returned once every worker is training."""
    import signal

    args = [sys.executable, "-m", "bench", "run", "--datasets", "ml-100k", "--cache-dir", str(tmp_path / "cache"), "--no-download",
            "--results-dir", str(tmp_path / "results"), "--device", "cpu", "--jobs", str(jobs), "--methods", "mf", "--seeds", "0,1",
            "--set", "mf.epochs=500", "--set", "mf.patience=1000", "--set", "mf.eval_every=100"]  # fmt: skip
    # SIGINT's disposition is set explicitly: a terminal's process has it at its default, while a
    # test session started in the background (`nohup ... &`) would pass SIG_IGN down.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))  # fmt: skip
    results = tmp_path / "results" / "ml-100k" / "mf"
    deadline = time.monotonic() + 180
    while len(list(results.glob("*.claim"))) < jobs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(list(results.glob("*.claim"))) == jobs, proc.communicate()
    time.sleep(2)  # every worker is training
    return proc, results


def _assert_stopped_leaving_nothing(proc: subprocess.Popen, results: Path, code: int) -> None:
    start = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert time.monotonic() - start < 20  # promptly, not after the runs finish
    assert "interrupted" in err
    # no traceback: before the workers' no-op handler (bench.grid.ignore_signal), a SIGTERM pending while a worker
    # switched to SIG_IGN printed "OSError: Signal 15 ignored due to race condition" once per worker
    assert "Traceback" not in err and "race condition" not in err, err
    assert not list(results.glob("*.claim")) and not list(results.glob("*.json")) and not list(results.glob("*.npz"))
    assert not list(results.glob(".*tmp*"))


@needs_ml100k
@pytest.mark.slow
@pytest.mark.parametrize("sig, jobs, code", [("SIGINT", 2, 130), ("SIGTERM", 1, 143), ("SIGTERM", 2, 143)])
def test_ctrl_c_or_sigterm_stops_every_worker_promptly_and_leaves_nothing(tmp_path: Path, sig: str, jobs: int, code: int) -> None:
    """A terminal's Ctrl-C (SIGINT) and SIGTERM (kill, Slurm's pre-emption or time limit), sent to
    the whole process group, stop the grid promptly: no claim, record or temporary file is left."""
    import signal

    proc, results = _grid_training(tmp_path, jobs, signal.SIG_DFL)
    os.killpg(proc.pid, getattr(signal, sig))  # to the whole group, as a terminal, Slurm or `kill -- -PGID` does
    _assert_stopped_leaving_nothing(proc, results, code)


@needs_ml100k
@pytest.mark.slow
def test_a_grid_launched_with_ctrl_c_ignored_ignores_it_in_every_worker_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`nohup bench run --jobs 2 ... &` ignores SIGINT in the parent; its workers must ignore it
    too, or a SIGINT to the group would fail the running runs while the parent goes on."""
    import signal

    proc, results = _grid_training(tmp_path, 2, signal.SIG_IGN)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(3)
    assert proc.poll() is None and len(list(results.glob("*.claim"))) == 2
    os.killpg(proc.pid, signal.SIGTERM)
    _assert_stopped_leaving_nothing(proc, results, 143)
