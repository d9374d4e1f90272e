"""TIGER and tiger-letterindex through the harness: IDs, codebook record and plot, config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config import apply_overrides
from bench.errors import UserError
from bench.results import ranks_path
from bench.leaderboard import render_leaderboard
from bench.runner import build_method, execute
from bench.split import Split
from methods import METHODS
from methods.tiger import TIGERConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def test_tiger_record_carries_codebook_utilization_and_plot(tiny_split: Split, run_cfg) -> None:
    cfg = run_cfg()
    path = execute(METHODS.get("tiger"), tiny_split, 0, cfg)
    rec = json.loads(path.read_text())
    book = rec["codebook"]
    tiny = cfg.overrides["tiger"]
    n = tiny_split.n_items
    # 2 semantic levels of 4 codes + TIGER's counting level: every item has a unique ID
    assert book["n_items"] == n and book["semantic_levels"] == tiny["rq_levels"] == book["levels"] - 1
    assert book["collision_rate"] == 0.0 and book["unique_ids"] == n and book["largest_group"] == 1
    assert sum(book["first_level_counts"]) == n and len(book["first_level_counts"]) == tiny["rq_codebook_size"]
    assert book["semantic_collision_rate"] == pytest.approx(1 - book["semantic_unique_ids"] / n)
    png = path.with_name(rec["codebook_plot"])
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    train = rec["training"]
    assert train["text_embeddings"]["n_items"] == n and "rqvae" in train["tokenizer"]
    assert rec["efficiency"]["tokenizer_seconds"] > 0
    assert rec["generation"]["duplicate_rate"] == 0.0  # unique IDs: one item per generated ID
    # the first recommended ID against the target's, level by level: never rising with depth, and with
    # unique IDs a full match is the target ranked first
    prefix = rec["generation"]["top1_prefix_accuracy"]
    with np.load(ranks_path(path)) as z:
        first = float((z["ranks"] == 1).mean())
    assert len(prefix) == book["levels"] and all(a >= b for a, b in zip(prefix, prefix[1:])) and prefix[-1] == pytest.approx(first)

    board = render_leaderboard(cfg.results_dir)
    assert "Codebook utilization" in board and "| tiger " in board


def test_letter_index_ids_are_the_files(tiny_split: Split, run_cfg, tmp_path: Path) -> None:
    cfg = run_cfg()
    method, _ = build_method(METHODS.get("tiger-letterindex"), tiny_split, 0, cfg, torch.device("cpu"))
    ids = method.build_ids()
    index = json.loads(Path(cfg.overrides["tiger-letterindex"]["index"]).read_text())
    maps = json.loads((tmp_path / "letter-index" / "datamaps.json").read_text())["id2item"]
    ours = {str(orig): i for i, orig in enumerate(tiny_split.dataset.item_ids)}
    for key, tokens in index.items():
        item = ours[maps[str(int(key) + 1)]]
        assert ids.codes[item].tolist() == [int(t.split("_")[1].rstrip(">")) for t in tokens]
    assert ids.source.startswith("external")


def test_letter_index_missing_is_a_clear_error(tiny_split: Split, run_cfg) -> None:
    cfg = run_cfg()
    cfg.overrides["tiger-letterindex"]["index"] = ""
    method, _ = build_method(METHODS.get("tiger-letterindex"), tiny_split, 0, cfg, torch.device("cpu"))
    with pytest.raises(UserError, match=r"--set tiger-letterindex\.index=PATH"):
        method.fit()


def test_tiger_config_maps_prefixed_options() -> None:
    cfg = apply_overrides(TIGERConfig(), {"rq_epochs": "7", "rq_collisions": "sinkhorn", "rq_hidden": "64,32"}, "tiger")
    rq = cfg.rqvae_config()
    assert (rq.epochs, rq.collisions, tuple(rq.hidden), rq.levels, rq.codebook_size) == (7, "sinkhorn", (64, 32), 3, 256)
    with pytest.raises(UserError, match="rq_collisions"):
        apply_overrides(TIGERConfig(), {"rq_collisions": "merge"}, "tiger")
    with pytest.raises(UserError, match="codebook_size"):
        apply_overrides(TIGERConfig(), {"rq_codebook_size": "0"}, "tiger")
    assert cfg.text_config().normalize is False and cfg.text_config().fields == ()


GENERATIVE = ("tiger", "tiger-letterindex", "letter-tiger", "letter-base", "tiger-cr", "tiger-dr", "tiger-cr-dr", "p5-cid")


@pytest.mark.parametrize("name", GENERATIVE)
def test_cpu_preset_shrinks_the_recommender_and_the_tokenizer(name: str) -> None:
    from bench.config import resolve_config

    cls = METHODS.get(name)
    full, cpu = cls.Config(), resolve_config(cls, "cpu")
    assert (cpu.d_model, cpu.layers, cpu.beam) == (64, 2, 100) and cpu.valid_beam < cpu.beam <= full.beam  # Hit@100 measured
    assert cpu.d_ff < full.d_ff and cpu.epochs < full.epochs and cpu.patience <= full.patience
    if hasattr(full, "rq_epochs"):
        assert cpu.rq_epochs < full.rq_epochs
        assert (cpu.rq_levels, cpu.rq_codebook_size, cpu.rq_kmeans_init) == (full.rq_levels, full.rq_codebook_size, full.rq_kmeans_init)
    if hasattr(full, "alpha"):  # the preset keeps which regularizers each LETTER row turns on (their weights: test_letter)
        assert (cpu.alpha > 0, cpu.beta > 0, cpu.tau) == (full.alpha > 0, full.beta > 0, full.tau)
    assert resolve_config(cls, "cpu", {"d_model": "32"}).d_model == 32  # the user's --set still wins


@pytest.mark.parametrize(("precision", "device", "bf16"), [("bf16", "cuda", True), ("fp32", "cuda", False), ("bf16", "cpu", False), ("fp32", "cpu", False)])
def test_beam_search_precision_follows_the_run_on_cuda_and_stays_fp32_on_cpu(precision: str, device: str, bf16: bool) -> None:
    """One setting, resolved once: decoding is bf16 only where the run's precision is bf16 on CUDA
    (a --precision fp32 run decodes in fp32 there too); every CPU run decodes in fp32."""
    from types import SimpleNamespace

    from bench.method import Context
    from methods.semid.generative import GenerativeMethod

    method = SimpleNamespace(ctx=Context(device=torch.device(device), seed=0, validate=dict, precision=precision), device=torch.device(device))
    assert GenerativeMethod.decode_bf16.fget(method) is bf16
