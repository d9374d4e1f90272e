"""Presets declared by the methods, applied by the harness; training precision."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.config import resolve_config
from bench.errors import UserError
from bench.method import Context
from bench.results import record_path
from bench.runner import PRECISIONS, resolve_precision
from methods import METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_a_valid_cpu_preset(name: str) -> None:
    cls = METHODS.get(name)
    assert "cpu" in cls.presets, f"{name} declares no cpu preset"
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    for preset, values in cls.presets.items():
        unknown = set(values) - fields
        assert not unknown, f"{name} preset {preset!r} names options that do not exist: {unknown}"
        config = resolve_config(cls, preset)  # coerces every value and runs the config's own checks
        for key, value in values.items():
            assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value)


def test_preset_then_overrides_win_and_unknown_presets_are_errors(monkeypatch) -> None:
    cls = METHODS.get("mf")
    monkeypatch.setattr(cls, "presets", {"cpu": {"dim": 32, "epochs": 7}})
    config = resolve_config(cls, "cpu", {"dim": "16"})
    assert config.dim == 16 and config.epochs == 7  # --set wins over the preset, the preset over the defaults
    with pytest.raises(UserError, match=r"--preset 'gpu-big'.*'mf'.*it has: cpu"):
        resolve_config(cls, "gpu-big")


def test_preset_records_are_labelled_and_kept_apart(capsys, registered_tiny, monkeypatch) -> None:
    monkeypatch.setattr(METHODS.get("mf"), "presets", {"cpu": {"dim": 8, "epochs": 2, "eval_every": 1}})
    d = registered_tiny
    rc = main(["run", "--methods", "mf", "--datasets", "tinyds", "--preset", "cpu", "--data-dir", str(d["data"]), "--no-download",
               "--cache-dir", str(d["cache"]), "--results-dir", str(d["results"]), "--quiet", "--device", "cpu"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rec = json.loads(record_path(d["results"], "tinyds", "mf", 0, "cpu").read_text())
    assert rec["protocol"]["preset"] == "cpu" and rec["protocol"]["variant"] == "cpu"
    assert rec["config"]["dim"] == 8 and rec["efficiency"]["precision"] in ("fp32", "bf16")


def test_a_preset_a_method_lacks_is_refused_before_anything_runs(capsys, registered_tiny) -> None:
    d = registered_tiny
    rc = main(["run", "--methods", "mf", "--datasets", "tinyds", "--preset", "nonesuch", "--data-dir", str(d["data"]),
               "--results-dir", str(d["results"]), "--no-download", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--preset 'nonesuch'" in err[0] and not d["results"].exists()


def test_precision_resolution_and_autocast() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) in ("fp32", "bf16") and "auto" in PRECISIONS
    with pytest.raises(UserError, match="--precision 'fp16'"):
        resolve_precision("fp16", cpu)
    x = torch.randn(4, 8)
    w = torch.randn(8, 3)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        ctx = Context(device=cpu, seed=0, validate=dict, precision=precision)
        with ctx.autocast():
            assert (x @ w).dtype == dtype


@pytest.mark.parametrize("name", ["sasrec-ce", "tiger"])
def test_bf16_training_runs_and_is_recorded(name: str, tiny_split, run_cfg) -> None:
    from bench.runner import execute

    rec = json.loads(execute(METHODS.get(name), tiny_split, 0, run_cfg(precision="bf16")).read_text())
    assert rec["efficiency"]["precision"] == "bf16"
    assert all(v is None or 0.0 <= v <= 1.0 for v in rec["metrics"].values())
    assert all(np.isfinite(rec["training"]["train_loss_curve"]))


def test_length_grouped_batches_cover_every_row_once_with_little_padding() -> None:
    from bench.batching import length_grouped_batches, shuffled_batches

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 21, (1000,), generator=g)
    batches = list(length_grouped_batches(lengths, 32, torch.Generator().manual_seed(1), mega=10))
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(1000)) and all(len(b) <= 32 for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    plain = sum(int(lengths[b].max()) * len(b) for b in shuffled_batches(1000, 32, torch.Generator().manual_seed(1), torch.device("cpu")))
    assert padded < 0.75 * plain  # grouped batches pad far less than random ones
    again = list(length_grouped_batches(lengths, 32, torch.Generator().manual_seed(1), mega=10))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))  # seeded


def test_token_batches_cover_every_row_once_with_equal_targets_and_little_padding() -> None:
    from bench.batching import shuffled_batches, token_batches

    g = torch.Generator().manual_seed(0)
    lengths = torch.cat([torch.randint(1, 8, (950,), generator=g), torch.full((50,), 50)])  # a long tail, as Beauty's windows
    batches = list(token_batches(lengths, 32, torch.Generator().manual_seed(1), mega=10))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    budget = 32 * float(lengths.float().mean())
    targets = [int(lengths[b].sum()) for b in batches]
    assert all(t <= budget + 50 for t in targets)  # a batch ends once its targets pass the budget
    assert abs(len(batches) - 1000 / 32) <= 10 / 2 + 1  # about as many steps as batches of 32 rows (one short batch per mega-batch)
    plain = list(shuffled_batches(1000, 32, torch.Generator().manual_seed(1), torch.device("cpu")))
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    assert padded < 0.4 * sum(int(lengths[b].max()) * len(b) for b in plain)  # rows of one batch have similar lengths
    again = list(token_batches(lengths, 32, torch.Generator().manual_seed(1), mega=10))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))  # seeded


def test_shared_adam_is_fused_and_takes_the_same_steps_as_torch_adam() -> None:
    from bench.training import adam

    g = torch.Generator().manual_seed(0)
    start = [torch.randn(30, 4, generator=g), torch.randn(7, generator=g)]
    grads = [[torch.randn(p.shape, generator=g) for p in start] for _ in range(5)]
    runs = []
    for make in (lambda ps: adam(ps, lr=1e-2, weight_decay=1e-3, betas=(0.9, 0.98)),
                 lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3, betas=(0.9, 0.98), foreach=False)):  # fmt: skip
        ps = [torch.nn.Parameter(p.clone()) for p in start]
        opt = make(ps)
        for step in grads:
            for p, grad in zip(ps, step):
                p.grad = grad.clone()
            opt.step()
        runs.append((opt, ps))
    (fused, got), (_, want) = runs
    assert fused.defaults["fused"] is True
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want))


def test_length_grouping_applies_where_shuffled_batches_would_be_mostly_padding() -> None:
    from bench.batching import EpochBatches, shuffled_batches, shuffled_padding_share

    g = torch.Generator().manual_seed(0)
    short = torch.cat([torch.randint(1, 8, (950,), generator=g), torch.full((50,), 50)])  # Amazon-like windows
    long = torch.cat([torch.full((800,), 50), torch.randint(1, 50, (200,), generator=g)])  # MovieLens-like windows
    for lengths in (short, long):  # the exact expectation against shuffled passes
        passes = [list(shuffled_batches(1000, 32, torch.Generator().manual_seed(s), torch.device("cpu"))) for s in range(20)]
        simulated = 1 - float(lengths.sum()) * 20 / sum(int(lengths[b].max()) * len(b) for p in passes for b in p)
        assert abs(shuffled_padding_share(lengths, 32) - simulated) < 0.02
    grouped = EpochBatches(short, 32, torch.Generator().manual_seed(1), True)
    assert grouped.grouped and "length-grouped" in grouped.describe
    assert [b.tolist() for b in grouped()] != [b.tolist() for b in shuffled_batches(1000, 32, torch.Generator().manual_seed(1), torch.device("cpu"))]
    for lengths, flag in ((long, True), (short, False)):
        plain = EpochBatches(lengths, 32, torch.Generator().manual_seed(1), flag)
        assert not plain.grouped and plain.describe.startswith("shuffled")
        want = shuffled_batches(1000, 32, torch.Generator().manual_seed(1), torch.device("cpu"))
        assert all(torch.equal(a, b) for a, b in zip(plain(), want))
