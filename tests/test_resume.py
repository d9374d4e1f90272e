"""Runs that outlive an interruption (bench/checkpoint.py): for four shapes of training (sasrec:
one loop; tiger: a tokenizer, then the recommender; bloger: a tokenizer trained with the
recommender; univa: a supervised loop, then an RL loop), a run killed with SIGKILL after a
checkpoint and a run stopped by SIGTERM in the middle of an epoch both resume to the record of
an uninterrupted run.  Also: a checkpoint that does not match the run is refused in one line,
and a Slurm task checkpoints and requeues itself at its time limit."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from bench import checkpoint
from bench.checkpoint import checkpoint_path
from bench.cli import Terminated, main, stop_on_sigterm
from bench.data import registry
from bench.results import claim_path, ranks_path
from bench.runner import RunSpec, run_one
from methods import METHODS

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parents[1]
EVERY_EPOCH = 1e-9  # minutes: write a checkpoint at every epoch boundary
# Long enough that each loop runs several epochs (and univa's RL loop more than one).
LONGER = {"sasrec": {"epochs": 4, "patience": 3}, "tiger": {"epochs": 4, "patience": 3}, "bloger": {"epochs": 4, "patience": 3},
          "univa": {"epochs": 3, "patience": 3, "rl_epochs": 3, "rl_patience": 3}}  # fmt: skip
# (training stage, epoch) of the epoch boundary each interruption follows
KILL_AFTER = {"sasrec": (1, 2), "tiger": (1, 2), "bloger": (1, 2), "univa": (1, 2)}
TERM_AFTER = {"sasrec": (1, 2), "tiger": (1, 1), "bloger": (1, 2), "univa": (2, 1)}


@pytest.fixture
def spec_for(run_cfg, registered_tiny, tmp_path: Path):
    """``spec_for(method, results, **settings)``: a RunSpec on the registered tiny dataset, one thread."""

    def make(method: str, results: str, **changes) -> RunSpec:
        cfg = run_cfg(results_dir=tmp_path / results, data_dir=registered_tiny["data"], cache_dir=registered_tiny["cache"],
                      threads=1, **changes)  # fmt: skip
        cfg.overrides[method].update(LONGER.get(method, {}))
        return RunSpec("tinyds", method, 0, cfg)

    return make


def _volatile(key: str) -> bool:
    return "seconds" in key or key in ("cache_hit", "peak_memory_bytes", "test_users_per_second", "latency_ms_per_user")


def _stable(value):
    """A record section without its timings."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not _volatile(k)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def assert_same_record(a: Path, b: Path) -> dict:
    """Everything but timings and provenance is equal, bit for bit: metrics, validation curves,
    best epochs, config, codebook, the training section, the per-user ranks."""
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    for key in ("metrics", "valid_metrics", "test_metrics_history_masked", "test_metrics_variants", "value_metrics", "config",
                "training", "codebook", "generation", "protocol"):  # fmt: skip
        assert _stable(ra.get(key)) == _stable(rb.get(key)), key
    for key in ("best_epoch", "epochs_run", "rl_best_epoch", "rl_epochs_run", "params_total"):
        assert ra["efficiency"].get(key) == rb["efficiency"].get(key), key
    with np.load(ranks_path(a)) as za, np.load(ranks_path(b)) as zb:
        assert np.array_equal(za["ranks"], zb["ranks"])
    assert ra["provenance"]["resumed"] == []
    return rb


def _saved_at(path: Path) -> tuple[int, int]:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return saved["stage"], saved["epoch"]


@contextmanager
def sigterm_in_epoch(stage: int, epoch: int):
    """SIGTERM to this process, handled as the command line handles it (``stop_on_sigterm``), at
    the first optimizer step after the state of (stage, epoch) was kept: in the next epoch."""
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    stop_on_sigterm()

    def hook(optimizer, args, kwargs):
        last = checkpoint._ACTIVE[-1].last if checkpoint._ACTIVE else None
        if last is not None and (last["stage"], last["epoch"]) == (stage, epoch):
            os.kill(os.getpid(), signal.SIGTERM)

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


# The worker killed with SIGKILL (kill -9) right after it wrote the checkpoint of (stage, epoch):
# nothing of its clean-up runs, its claim stays behind.
KILLED_WORKER = """
import os, pickle, signal, sys
sys.path.insert(0, sys.argv[2])
import conftest
from bench import checkpoint
from bench.data import registry
from bench.runner import run_one
from methods.semid import text

spec, dataset, after = pickle.loads(open(sys.argv[1], "rb").read())
registry.DATASETS[dataset.name] = dataset
text.load_encoder = conftest.hash_encoder
write = checkpoint.Checkpointer.write

def write_then_die(self):
    written = write(self)
    if (self.last["stage"], self.last["epoch"]) == after:
        os.kill(os.getpid(), signal.SIGKILL)
    return written

checkpoint.Checkpointer.write = write_then_die
run_one(spec)
sys.exit(3)
"""


def kill_after_checkpoint(spec: RunSpec, after: tuple[int, int], tmp_path: Path) -> subprocess.CompletedProcess:
    job = tmp_path / "killed-worker.pkl"
    job.write_bytes(pickle.dumps((spec, registry.DATASETS[spec.dataset], after)))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", KILLED_WORKER, str(job), str(REPO / "tests")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture
def reference(spec_for):
    """The uninterrupted run's record, once per method."""
    done: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in done:
            spec = spec_for(method, "uninterrupted")
            assert run_one(spec).status == "done"
            done[method] = spec.path
        return done[method]

    return get


@pytest.mark.parametrize("method", ["sasrec", "tiger", "bloger", "univa"])
def test_killed_after_a_checkpoint_resumes_to_the_same_record(method: str, spec_for, reference, tmp_path: Path, capsys) -> None:
    spec = spec_for(method, "killed", checkpoint_every=EVERY_EPOCH)
    proc = kill_after_checkpoint(spec, KILL_AFTER[method], tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = checkpoint_path(spec.path)
    assert _saved_at(ckpt) == KILL_AFTER[method] and claim_path(spec.path).exists() and not spec.path.exists()
    out = run_one(spec)  # takes the dead worker's claim over, and its checkpoint with it
    assert out.status == "done", out.message
    stage, epoch = KILL_AFTER[method]
    assert f"resuming from epoch {epoch}" in capsys.readouterr().err
    record = assert_same_record(reference(method), spec.path)
    assert [(r["stage"], r["epoch"]) for r in record["provenance"]["resumed"]] == [(stage, epoch)]
    assert not ckpt.exists() and not claim_path(spec.path).exists()  # deleted when the record landed


@pytest.mark.parametrize("method, precision", [("sasrec", "fp32"), ("sasrec", "bf16"), ("tiger", "fp32"), ("bloger", "fp32"),
                                               ("univa", "fp32")])  # fmt: skip
def test_sigterm_mid_epoch_resumes_to_the_same_record(method: str, precision: str, spec_for, tmp_path: Path, capsys) -> None:
    """The default interval (10 minutes) writes nothing in a run this short: the checkpoint is
    the one SIGTERM writes, of the last epoch boundary's state kept in memory."""
    stage, epoch = TERM_AFTER[method]
    uninterrupted = spec_for(method, f"uninterrupted-{precision}", precision=precision)
    assert run_one(uninterrupted).status == "done"
    spec = spec_for(method, "terminated", precision=precision)
    with sigterm_in_epoch(stage, epoch), pytest.raises(Terminated):
        run_one(spec)
    ckpt = checkpoint_path(spec.path)
    assert _saved_at(ckpt) == (stage, epoch)
    assert not claim_path(spec.path).exists() and not spec.path.exists()  # the clean-up ran after the checkpoint was written
    assert f"checkpoint at epoch {epoch}" in capsys.readouterr().err
    assert run_one(spec).status == "done"
    record = assert_same_record(uninterrupted.path, spec.path)
    assert [(r["stage"], r["epoch"]) for r in record["provenance"]["resumed"]] == [(stage, epoch)]
    assert record["efficiency"]["fit_seconds"] > 0 and not ckpt.exists()


def _interrupted(spec: RunSpec, after: tuple[int, int] = (1, 2)) -> Path:
    with sigterm_in_epoch(*after), pytest.raises(Terminated):
        run_one(spec)
    return checkpoint_path(spec.path)


def test_a_checkpoint_that_does_not_match_the_run_is_refused_in_one_line(spec_for, capsys) -> None:
    spec = spec_for("sasrec", "refused")
    ckpt = _interrupted(spec)
    capsys.readouterr()
    other = replace(spec, settings=replace(spec.settings, overrides={**spec.settings.overrides,
                                                                     "sasrec": {**spec.settings.overrides["sasrec"], "lr": 0.002}}))  # fmt: skip
    assert run_one(other).status == "done"
    lines = [line for line in capsys.readouterr().err.splitlines() if "not resuming" in line]
    assert lines == [f"[tinyds sasrec seed 0] not resuming from {ckpt}: its config differs (lr 0.001 in it, 0.002 here); "
                     f"starting over (--resume force uses it anyway)"]  # fmt: skip
    assert json.loads(spec.path.read_text())["provenance"]["resumed"] == []


def test_resume_force_uses_a_checkpoint_of_another_config_and_off_ignores_any(spec_for, capsys) -> None:
    spec = spec_for("sasrec", "force")
    _interrupted(spec)
    settings = replace(spec.settings, resume="force", overrides={**spec.settings.overrides, "sasrec": {**spec.settings.overrides["sasrec"], "lr": 0.002}})
    before = torch.get_num_threads()
    try:  # resumed at another thread count (not part of a run's identity): the record names both segments' counts
        assert run_one(replace(spec, settings=replace(settings, threads=before + 1))).status == "done"
    finally:
        torch.set_num_threads(before)
    assert "resuming from" in capsys.readouterr().err
    resumed = json.loads(spec.path.read_text())["provenance"]["resumed"]
    assert resumed[0]["epoch"] == 2 and (resumed[0]["threads_before"], resumed[0]["threads"]) == (before, before + 1)
    spec.path.unlink()
    _interrupted(spec)
    assert run_one(replace(spec, settings=replace(spec.settings, resume="off"))).status == "done"
    assert "resuming" not in capsys.readouterr().err and json.loads(spec.path.read_text())["provenance"]["resumed"] == []


def test_an_unreadable_checkpoint_is_refused_and_no_checkpoints_with_zero(spec_for, capsys) -> None:
    spec = spec_for("sasrec", "unreadable")
    ckpt = checkpoint_path(spec.path)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    assert run_one(spec).status == "done"
    assert "it cannot be read" in capsys.readouterr().err and not ckpt.exists()
    off = spec_for("sasrec", "off", checkpoint_every=0)
    with sigterm_in_epoch(1, 2):  # no checkpoint is kept, so the hook never fires: the run completes
        assert run_one(off).status == "done"
    assert json.loads(off.path.read_text())["provenance"]["resumed"] == [] and not checkpoint_path(off.path).exists()


def test_slurm_time_limit_checkpoints_and_requeues_the_task(spec_for, reference) -> None:
    """What submitit does at a job's time limit (SIGUSR2): call the task's ``checkpoint`` from its
    signal handler, requeue the returned submission, exit the process; the requeued task resumes."""
    import submitit

    from bench.grid import RunTask

    spec = spec_for("tiger", "slurm")
    task, requeued = RunTask(), []

    def time_limit(optimizer, args, kwargs):
        last = checkpoint._ACTIVE[-1].last if checkpoint._ACTIVE else None
        if last is not None and last["epoch"] == 2 and not requeued:
            requeued.append(task.checkpoint(spec))
            raise SystemExit(-1)  # submitit's exit after requeueing

    handle = register_optimizer_step_post_hook(time_limit)
    try:
        with pytest.raises(SystemExit):
            task(spec)
    finally:
        handle.remove()
    (delayed,) = requeued
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and isinstance(delayed.function, RunTask) and delayed.args == (spec,)
    assert _saved_at(checkpoint_path(spec.path)) == (1, 2) and not claim_path(spec.path).exists()
    assert delayed.result().status == "done"
    record = assert_same_record(reference("tiger"), spec.path)
    assert [r["epoch"] for r in record["provenance"]["resumed"]] == [2]


def test_cli_checks_the_checkpoint_options(capsys, registered_tiny, tmp_path: Path) -> None:
    base = ["run", "--methods", "pop", "--datasets", "tinyds", "--data-dir", str(registered_tiny["data"]), "--results-dir", str(tmp_path / "r")]
    assert main([*base, "--checkpoint-every", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --checkpoint-every -1: expected minutes >= 0 (0 = no checkpoints)"
    with pytest.raises(SystemExit) as exc:
        main([*base, "--resume", "maybe"])
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err


# Methods whose training takes no checkpoint: no loop (pop), or a loop whose state the harness does not hold (iALS's ALS
# solver).  LC-Rec needs the tiny LLM of its own tests: it has its own test below.
NO_CHECKPOINTS = {"pop", "ials"}


@pytest.mark.parametrize("method", [m for m in METHODS.names() if m != "lc-rec"])
def test_every_method_stopped_mid_epoch_resumes_to_the_same_record(method: str, spec_for) -> None:
    """The contract over every registered method: SIGTERM in its second epoch, then a re-run,
    gives the uninterrupted record; a method that takes no checkpoint is never interrupted here
    (the signal comes only after a kept epoch-boundary state) and trains as before."""
    uninterrupted = spec_for(method, "uninterrupted")
    assert run_one(uninterrupted).status == "done"
    spec = spec_for(method, "terminated")
    try:
        with sigterm_in_epoch(1, 1):
            outcome = run_one(spec)
    except Terminated:
        assert method not in NO_CHECKPOINTS
        assert _saved_at(checkpoint_path(spec.path)) == (1, 1)
        outcome = run_one(spec)
        assert [r["epoch"] for r in json.loads(spec.path.read_text())["provenance"]["resumed"]] == [1]
    else:
        assert method in NO_CHECKPOINTS, "not interrupted: does its loop declare its state (Selection(..., state=...))?"
    assert outcome.status == "done"
    assert_same_record(uninterrupted.path, spec.path)


def test_lcrec_stopped_mid_epoch_resumes_to_the_same_record(spec_for, tiny_llm: Path) -> None:
    """LC-Rec on the shared loop: its LoRA and new-token tensors, their optimizer and schedule,
    the example cursor and generators are in the checkpoint; SIGTERM in its second epoch, then a
    re-run, gives the uninterrupted record."""

    def lcrec(results: str) -> RunSpec:
        spec = spec_for("lc-rec", results)
        spec.settings.overrides["lc-rec"].update(model=str(tiny_llm), epochs=3, patience=3, max_examples=40)
        return spec

    uninterrupted = lcrec("uninterrupted")
    assert run_one(uninterrupted).status == "done"
    spec = lcrec("terminated")
    with pytest.raises(Terminated):
        with sigterm_in_epoch(1, 1):
            run_one(spec)
    saved = torch.load(checkpoint_path(spec.path), map_location="cpu", weights_only=False)
    assert (saved["stage"], saved["epoch"]) == (1, 1) and saved["extra"]["examples_seen"] == 40
    # the snapshot holds the trainable tensors only (no copy of the frozen model)
    assert "model" not in saved["training_state"] and all("lora_" in k or "trainable_tokens" in k for k in saved["training_state"]["module"])
    assert run_one(spec).status == "done"
    assert [r["epoch"] for r in json.loads(spec.path.read_text())["provenance"]["resumed"]] == [1]
    assert_same_record(uninterrupted.path, spec.path)
