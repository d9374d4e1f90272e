"""The run loop end to end on a tiny split: records, per-user ranks, determinism, resume,
interruption, checkpoint selection, and a contract every registered method must meet."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.results as results
from bench.config import to_dict
from bench.evaluate import Evaluator
from bench.method import Context, EvalBatch, Method
from bench.metrics import METRIC_KEYS, summarize, tiebreak_order
from bench.results import Record, is_complete, load_records, ranks_path, record_path
from bench.runner import build_method, derive_seed, execute
from bench.split import Split
from bench.training import Selection
from methods import METHODS

pytestmark = pytest.mark.usefixtures("single_thread")

QUICK = ["pop", "mf", "sasrec", "sasrec-ce"]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---- records -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", QUICK)
def test_run_one_writes_a_complete_record(name: str, tiny_split: Split, run_cfg, tmp_path: Path) -> None:
    cls = METHODS.get(name)
    tiny = run_cfg().overrides[name]
    path = execute(cls, tiny_split, 3, run_cfg())
    assert path == record_path(tmp_path / "results", "tiny", name, 3) and is_complete(path)
    rec = json.loads(path.read_text())
    assert (rec["dataset"], rec["method"], rec["seed"]) == ("tiny", name, 3)
    assert list(rec["metrics"]) == list(METRIC_KEYS) and list(rec["valid_metrics"]) == list(METRIC_KEYS)
    assert all(0.0 <= v <= 1.0 for v in rec["metrics"].values())

    eff = rec["efficiency"]
    for key in ("params_total", "params_trainable", "fit_seconds", "test_seconds", "test_users", "test_users_per_second",
                "latency_ms_per_user", "eval_batch_size", "peak_memory_bytes", "peak_memory_kind", "device"):  # fmt: skip
        assert key in eff, key
    assert eff["test_users"] == len(tiny_split.test.targets) == rec["protocol"]["users_evaluated"]
    assert eff["params_trainable"] <= eff["params_total"] and eff["peak_memory_bytes"] > 0
    assert (eff["params_total"] == 0) == (name == "pop")
    if name != "pop":
        assert 1 <= eff["best_epoch"] <= eff["epochs_run"] <= tiny["epochs"]
        assert rec["training"]["valid_curve"] and rec["training"]["best_valid"] == pytest.approx(rec["valid_metrics"]["ndcg@10"], abs=1e-12)
    prov = rec["provenance"]
    for key in ("git_sha", "git_dirty", "data_fingerprint", "packages", "hardware", "command", "started_at", "finished_at"):
        assert key in prov, key
    assert prov["data_fingerprint"] == tiny_split.dataset.fingerprint and "torch" in prov["packages"]
    assert rec["run_id"] and rec["efficiency"]["precision"] in ("fp32", "bf16") and rec["efficiency"]["threads"] >= 1
    values = rec["value_metrics"]  # every method gets the value metrics (the tiny data has real prices)
    assert values["value_source"]["kind"] == "real" and values["metrics"]["hr@10"] == pytest.approx(rec["metrics"]["recall@10"])
    proto = rec["protocol"]
    assert proto["ranking"] == "full catalog" and proto["select_metric"] == "ndcg@10" and proto["output"] == cls.output
    expected_config = to_dict(dataclasses.replace(cls.Config(), **tiny))
    assert rec["config"] == expected_config
    assert proto["history_cap"] == expected_config.get("max_len")
    assert rec["dataset_info"]["items"] == tiny_split.n_items and rec["schema"] == results.SCHEMA_VERSION

    # the per-user file reproduces the record's metrics exactly
    assert rec["per_user"] == ranks_path(path).name
    ranks = Record(path, rec).ranks()
    assert ranks.shape == (len(tiny_split.test.targets),) and ranks.min() >= 0 and ranks.max() <= 100
    assert summarize(ranks) == rec["metrics"]
    with np.load(ranks_path(path)) as z:
        assert str(z["fingerprint"]) == tiny_split.dataset.fingerprint
    assert not [f for f in files_under(tmp_path / "results") if f.endswith(".tmp")]


def test_pop_ranks_match_a_brute_force_ranking(tiny_split: Split, run_cfg) -> None:
    """End to end: the recorded rank of each test target is its position when the catalog is
    sorted by training count, ties broken by the run's seeded order."""
    path = execute(METHODS.get("pop"), tiny_split, 5, run_cfg())
    counts = np.bincount(tiny_split.train.items, minlength=tiny_split.n_items)
    tb = tiebreak_order(tiny_split.n_items, derive_seed(5, "tiny", "tiebreak")).numpy()
    order = sorted(range(tiny_split.n_items), key=lambda i: (-counts[i], tb[i]))
    want = [order.index(t) + 1 for t in tiny_split.test.targets]
    np.testing.assert_array_equal(load_records(path.parent.parent.parent)[0].ranks(), want)


# ---- determinism -------------------------------------------------------------------------
def _run(name: str, split: Split, seed: int, cfg) -> tuple[dict, np.ndarray]:
    path = execute(METHODS.get(name), split, seed, cfg)
    rec = json.loads(path.read_text())
    return rec["metrics"], Record(path, rec).ranks()


def test_same_seed_same_result_different_seed_differs(tiny_split: Split, run_cfg, tmp_path: Path) -> None:
    m1, r1 = _run("mf", tiny_split, 0, run_cfg(results_dir=tmp_path / "a"))
    m2, r2 = _run("mf", tiny_split, 0, run_cfg(results_dir=tmp_path / "b"))
    m3, r3 = _run("mf", tiny_split, 1, run_cfg(results_dir=tmp_path / "a"))
    assert m1 == m2 and np.array_equal(r1, r2)
    assert not np.array_equal(r1, r3)


def test_sasrec_is_deterministic_on_cpu(tiny_split: Split, run_cfg, tmp_path: Path) -> None:
    m1, r1 = _run("sasrec", tiny_split, 0, run_cfg(results_dir=tmp_path / "a"))
    m2, r2 = _run("sasrec", tiny_split, 0, run_cfg(results_dir=tmp_path / "b"))
    assert m1 == m2 and np.array_equal(r1, r2)


# ---- resume and interruption -------------------------------------------------------------
def test_complete_record_is_skipped_unless_overwrite(registered_tiny, monkeypatch) -> None:
    from bench.runner import RunConfig, RunSpec, run_one

    cls = METHODS.get("pop")
    settings = RunConfig(results_dir=registered_tiny["results"], device="cpu", progress=False, data_dir=registered_tiny["data"],
                         cache_dir=registered_tiny["cache"], download=False)  # fmt: skip
    spec = RunSpec("tinyds", "pop", 0, settings)
    first = run_one(spec)
    path = first.path
    assert first.status == "done" and is_complete(path)
    old = 1_000_000_000
    os.utime(path, (old, old))
    os.utime(ranks_path(path), (old, old))

    def boom(self):
        raise AssertionError("a complete record must not be re-run")

    with monkeypatch.context() as m:
        m.setattr(cls, "fit", boom)
        again = run_one(spec)
        assert again.status == "skipped" and again.path == path
    assert path.stat().st_mtime == old and ranks_path(path).stat().st_mtime == old

    assert run_one(dataclasses.replace(spec, settings=dataclasses.replace(settings, overwrite=True))).status == "done"
    assert path.stat().st_mtime > old and ranks_path(path).stat().st_mtime > old
    assert is_complete(path)


def test_incomplete_records_are_not_complete(tmp_path: Path) -> None:
    path = record_path(tmp_path, "d", "m", 0)
    results.write_record(path, {"dataset": "d", "method": "m", "seed": 0, "metrics": {}}, np.array([1, 0, 3]), "fp")
    assert is_complete(path)
    text = path.read_text()
    path.unlink()
    assert not is_complete(path)  # ranks without the JSON
    assert load_records(tmp_path) == []
    path.write_text(text[: len(text) // 2])
    assert not is_complete(path)  # truncated JSON
    path.write_text(text)
    ranks_path(path).unlink()
    assert not is_complete(path)  # JSON without ranks


@pytest.mark.parametrize("where", ["fit", "test-eval"])
def test_interrupted_run_leaves_no_record(where: str, tiny_split: Split, run_cfg, tmp_path: Path, monkeypatch) -> None:
    cls = METHODS.get("mf")
    if where == "fit":
        monkeypatch.setattr(cls, "fit", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    else:
        original = Evaluator.run
        calls = {"n": 0}

        def run(self):
            calls["n"] += 1
            if self.desc == "test":
                raise KeyboardInterrupt
            return original(self)

        monkeypatch.setattr(Evaluator, "run", run)
    with pytest.raises(KeyboardInterrupt):
        execute(cls, tiny_split, 0, run_cfg())
    if where == "test-eval":
        assert calls["n"] > 1  # validation ran, the test pass was interrupted
    # no record, no temporary file; only the training state of the last epoch boundary (bench/checkpoint.py)
    assert files_under(tmp_path / "results") == (["tiny/mf/seed0.ckpt"] if where == "test-eval" else [])
    monkeypatch.undo()
    path = execute(cls, tiny_split, 0, run_cfg())  # a re-run completes it (and deletes the checkpoint)
    assert is_complete(path) and not path.with_suffix(".ckpt").exists()


def test_interrupted_while_writing_json_leaves_no_complete_record(tiny_split: Split, run_cfg, tmp_path: Path, monkeypatch) -> None:
    original = results._atomic

    def atomic(path, write):
        if path.suffix == ".json":

            def partial(f):
                f.write(b'{"dataset": "tiny", "met')
                raise KeyboardInterrupt

            return original(path, partial)
        return original(path, write)

    monkeypatch.setattr(results, "_atomic", atomic)
    cls = METHODS.get("pop")
    with pytest.raises(KeyboardInterrupt):
        execute(cls, tiny_split, 0, run_cfg())
    path = record_path(tmp_path / "results", "tiny", "pop", 0)
    assert files_under(tmp_path / "results") == ["tiny/pop/seed0.ranks.npz"]  # the JSON is written last
    assert not is_complete(path) and load_records(tmp_path / "results") == []
    monkeypatch.undo()
    assert is_complete(execute(cls, tiny_split, 0, run_cfg()))  # resumes: not skipped


def test_failed_overwrite_never_pairs_old_json_with_new_ranks(tiny_split: Split, run_cfg, tmp_path: Path, monkeypatch) -> None:
    cls = METHODS.get("mf")
    path = execute(cls, tiny_split, 0, run_cfg())
    original = results._atomic

    def atomic(target, write):
        if target.suffix == ".json":
            raise OSError(28, "No space left on device")
        return original(target, write)

    monkeypatch.setattr(results, "_atomic", atomic)
    with pytest.raises(OSError):
        execute(cls, tiny_split, 1, run_cfg(overwrite=True, results_dir=path.parent.parent.parent))  # another seed: fine
    with pytest.raises(OSError):
        execute(cls, tiny_split, 0, run_cfg(overwrite=True, overrides={"mf": dict(run_cfg().overrides["mf"], dim=8)}))
    # the new ranks are on disk; the old JSON must not stand next to them as a complete record
    assert not is_complete(path)
    for rec in load_records(tmp_path / "results"):
        assert summarize(rec.ranks()) == rec.data["metrics"]


# ---- methods that return ranked lists, and bad outputs ----------------------------------
class FixedLists(Method):
    """Ranked lists with a repeated first item, -1 padding, and a short list for odd users."""

    name = "fixed-lists"
    output = "lists"

    @dataclasses.dataclass
    class Config:
        max_len: int = 3

    def fit(self) -> None:
        self.ctx.validate()

    def recommend(self, batch: EvalBatch, k: int) -> torch.Tensor:
        assert k == 100 and batch.history.shape[1] <= 3
        n = self.data.n_items
        rows = []
        for u in batch.users.tolist():
            order = [(u * 7 + j) % n for j in range(n)]
            row = [order[0]] + order  # the first item twice
            if u % 2:
                row = row[:6]  # a short list
            rows.append(row + [-1] * (n + 1 - len(row)) + [-1] * (k - n))
        return torch.tensor(rows)


def test_lists_method_through_run_one(tiny_split: Split, run_cfg) -> None:
    path = execute(FixedLists, tiny_split, 0, run_cfg())
    rec = json.loads(path.read_text())
    n = tiny_split.n_items
    want = []
    for u, t in zip(tiny_split.test.input.users.tolist(), tiny_split.test.targets.tolist()):
        order = [(u * 7 + j) % n for j in range(n)][: 5 if u % 2 else n]
        want.append(order.index(t) + 1 if t in order else 0)
    np.testing.assert_array_equal(Record(path, rec).ranks(), want)
    users = tiny_split.test.input.users
    entries = sum(6 if u % 2 else n + 1 for u in users)
    assert rec["generation"]["short_list_users"] == len(users)  # n = 30 < 100: every list is short
    assert rec["generation"]["duplicate_rate"] == pytest.approx(len(users) / entries)
    assert rec["protocol"]["output"] == "lists" and rec["protocol"]["history_cap"] == 3


def test_wrong_score_shape_is_an_error(tiny_split: Split, run_cfg, tmp_path: Path) -> None:
    class Bad(Method):
        name = "bad"

        @dataclasses.dataclass
        class Config:
            pass

        def fit(self) -> None:
            pass

        def score(self, batch: EvalBatch) -> torch.Tensor:
            return torch.zeros(len(batch.users), self.data.n_items - 1)

    with pytest.raises(ValueError, match=r"bad.score returned shape"):
        execute(Bad, tiny_split, 0, run_cfg())
    assert files_under(tmp_path / "results") == []


# ---- checkpoint selection ----------------------------------------------------------------
def test_selection_restores_the_best_epoch() -> None:
    curve = iter([0.1, 0.5, 0.3, 0.2, 0.9])
    module = torch.nn.Linear(1, 1)
    ctx = Context(device=torch.device("cpu"), seed=0, validate=lambda: {"ndcg@10": next(curve)})
    epochs = []
    for epoch in Selection(ctx, module, epochs=10, patience=2):
        epochs.append(epoch)
        with torch.no_grad():
            module.weight.fill_(float(epoch))
    assert epochs == [1, 2, 3, 4]  # stopped after 2 validations without improvement
    assert module.weight.item() == 2.0 and not module.training
    assert ctx.efficiency["best_epoch"] == 2 and ctx.efficiency["epochs_run"] == 4
    assert ctx.info["valid_curve"] == [(1, 0.1), (2, 0.5), (3, 0.3), (4, 0.2)]


def test_selection_validates_every_k_epochs_and_at_the_last() -> None:
    calls = []
    ctx = Context(device=torch.device("cpu"), seed=0, validate=lambda: calls.append(1) or {"ndcg@10": float(len(calls))})
    module = torch.nn.Linear(1, 1)
    for epoch in Selection(ctx, module, epochs=7, patience=5, eval_every=3):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
    assert [e for e, _ in ctx.info["valid_curve"]] == [3, 6, 7]
    assert module.weight.item() == 7.0 and ctx.efficiency["best_epoch"] == 7


def test_selection_logs_one_line_per_validation_without_a_terminal(capsys) -> None:
    curve = iter([0.2, 0.1, 0.3])
    ctx = Context(device=torch.device("cpu"), seed=0, validate=lambda: {"ndcg@10": next(curve)}, log=True)
    for _ in Selection(ctx, torch.nn.Linear(1, 1), epochs=6, patience=5, eval_every=2):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["epoch 2/6", "epoch 4/6", "epoch 6/6"]
    assert "best 0.2000 at 2" in lines[1] and "best 0.3000 at 6" in lines[2]


class PeakAtTwo(Method):
    """Scores that put each validation target first at epoch 2 only (the test is cheating
    on purpose to give Selection a known best epoch); state = the epoch number."""

    name = "peak2"

    @dataclasses.dataclass
    class Config:
        epochs: int = 5
        max_len: int = 0

    targets: torch.Tensor  # set by the test

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.model = torch.nn.Module()
        self.model.register_buffer("epoch", torch.zeros(()))

    def fit(self) -> None:
        for epoch in Selection(self.ctx, self.model, self.config.epochs, patience=10):
            self.model.epoch.fill_(epoch)

    def score(self, batch: EvalBatch) -> torch.Tensor:
        scores = torch.zeros(len(batch.users), self.data.n_items)
        if int(self.model.epoch) == 2:
            scores[torch.arange(len(batch.users)), self.targets[batch.users]] = 1.0
        return scores


def test_run_one_evaluates_the_selected_checkpoint(tiny_split: Split, run_cfg) -> None:
    by_user = torch.zeros(tiny_split.n_users, dtype=torch.long)
    by_user[torch.from_numpy(tiny_split.valid.input.users)] = torch.from_numpy(tiny_split.valid.targets)
    PeakAtTwo.targets = by_user
    path = execute(PeakAtTwo, tiny_split, 0, run_cfg())
    rec = json.loads(path.read_text())
    assert rec["efficiency"]["best_epoch"] == 2 and rec["efficiency"]["epochs_run"] == 5
    assert rec["valid_metrics"]["ndcg@10"] == 1.0  # validated again after fit: epoch 2's state is back


# ---- the contract every registered method meets ------------------------------------------
def _fit_and_score(name: str, split: Split, device: str, run_cfg) -> tuple[object, torch.Tensor]:
    cls = METHODS.get(name)
    cfg = run_cfg(device=device)
    method, _ = build_method(cls, split, 0, cfg, torch.device(device))
    method.fit()
    method.eval()
    ev = split.test.input
    hist = torch.from_numpy(ev.history.padded(method.history_cap)).to(device)  # None = all, 0 = none
    batch = EvalBatch(
        torch.from_numpy(ev.users.astype(np.int64)).to(device),
        hist,
        torch.from_numpy(np.minimum(ev.history.lengths, hist.shape[1])).to(device),
    )
    with torch.no_grad():
        out = method.score(batch) if cls.output == "scores" else method.recommend(batch, 100)
    return method, out


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract_cpu(name: str, tiny_split: Split, run_cfg, request) -> None:
    if name == "lc-rec":  # a tiny random LM with the real tokenizer; skips without the llm extra
        run_cfg = request.getfixturevalue("lcrec_run_cfg")
    cls = METHODS.get(name)
    assert cls.name == name and cls.output in ("scores", "lists")
    assert dataclasses.is_dataclass(cls.Config)
    method, out = _fit_and_score(name, tiny_split, "cpu", run_cfg)
    B = len(tiny_split.test.targets)
    if cls.output == "scores":
        assert out.shape == (B, tiny_split.n_items) and out.is_floating_point()
        assert torch.isfinite(out).all()
    else:
        assert out.dim() == 2 and out.shape[0] == B and out.shape[1] >= 100
        assert ((out >= -1) & (out < tiny_split.n_items)).all()
    counts = method.parameter_counts()
    assert counts["params_trainable"] <= counts["params_total"]
    _, again = _fit_and_score(name, tiny_split, "cpu", run_cfg)
    assert torch.equal(out, again), f"{name} is not deterministic on CPU for a fixed seed"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract_cuda(name: str, tiny_split: Split, run_cfg, tmp_path: Path, request) -> None:
    if name == "lc-rec":
        run_cfg = request.getfixturevalue("lcrec_run_cfg")
    cls = METHODS.get(name)
    method, out = _fit_and_score(name, tiny_split, "cuda", run_cfg)
    assert out.device.type == "cuda"
    B = len(tiny_split.test.targets)
    if cls.output == "scores":
        assert out.shape == (B, tiny_split.n_items) and torch.isfinite(out).all()
    else:
        assert out.shape[0] == B and ((out >= -1) & (out < tiny_split.n_items)).all()
    path = execute(cls, tiny_split, 0, run_cfg(device="cuda"))
    rec = json.loads(path.read_text())
    assert rec["provenance"]["hardware"]["gpu"] and rec["efficiency"]["peak_memory_kind"] == "cuda max_memory_allocated"
    assert summarize(Record(path, rec).ranks()) == rec["metrics"]


class MemorizeHistory(Method):
    """Scores each user's history items highest (most recent first): the kind of model whose
    numbers move most when history items are masked from the ranking."""

    name = "memorize"
    output = "scores"

    @dataclasses.dataclass
    class Config:
        max_len: int = 5

    def fit(self) -> None:
        pass

    def score(self, batch):
        scores = torch.zeros(len(batch.users), self.data.n_items)
        for row, (hist, n) in enumerate(zip(batch.history, batch.lengths)):
            items = hist[len(hist) - int(n):]
            scores[row, items] = torch.arange(1, len(items) + 1, dtype=torch.float32) + 100.0
        return scores


def test_records_add_history_masked_test_metrics_for_score_methods(tiny_split, run_cfg) -> None:
    plain = json.loads(execute(MemorizeHistory, tiny_split, 0, run_cfg()).read_text())
    masked_run = json.loads(execute(MemorizeHistory, tiny_split, 0, run_cfg(mask_history=True)).read_text())
    supplementary = plain["test_metrics_history_masked"]
    assert supplementary == masked_run["metrics"]  # the same numbers a masked run gets from this (untrained) method
    assert plain["metrics"] != supplementary and "test_metrics_history_masked" not in masked_run
    assert plain["protocol"]["history_masking"] is False
