"""UniVA-style method: the value level of the commercial SID, the RL stage's data, the
value-guided beam search against brute force, the request constraint, record and presets."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.config import resolve_config
from bench.data.canonical import RawData, canonicalize
from bench.errors import UserError
from bench.runner import build_method, execute, supplementary_passes
from bench.split import Split, leave_one_out
from bench.value import ItemValues, train_values
from methods import METHODS
from methods.semid.generative import BOS
from methods.univa import UniVAConfig, value_bins
from tests.conftest import make_raw

pytestmark = pytest.mark.usefixtures("single_thread")


def _method(split: Split, run_cfg, name: str = "univa", **changes):
    cfg = run_cfg()
    cfg.overrides[name].update(changes)
    method, _ = build_method(METHODS.get(name), split, 0, cfg, torch.device("cpu"))
    return method


def test_value_bins_equal_frequency_within_category_ties_and_missing() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 20.0, 30.0, np.nan])
    cat = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    codes, n = value_bins(ItemValues(values, cat, ["a", "b"], {"kind": "real"}), 2)
    # category 0: 1,2 -> bin 0; 3,4 -> bin 1.  category 1: 10 -> 0; the tied 20s share bin 0 (one value smaller); 30 -> 1
    assert codes.tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 2] and n == 3
    codes, n = value_bins(ItemValues(values[:8], cat[:8], ["a", "b"], {"kind": "real"}), 4)
    assert n == 4 and codes[:4].tolist() == [0, 1, 2, 3]


def test_commercial_sid_is_unique_and_decodes_to_the_value_bin(tiny_split: Split, run_cfg) -> None:
    method = _method(tiny_split, run_cfg)
    method.prepare()
    ids = method.semantic_ids
    level = ids.info["value_level"]
    assert ids.unique_fraction() == 1.0 and ids.source.startswith("rqvae+value")
    want, n_codes = value_bins(train_values(method.data), method.config.value_bins)
    assert (ids.codes[:, level] == want).all() and ids.sizes[level] == n_codes
    # every ID decodes to exactly its item through the trie
    items = method.items_of(torch.from_numpy(ids.codes))
    assert items.tolist() == list(range(ids.n_items))
    # within a category, a higher value never sits in a lower bin
    v = method.values
    for c in np.unique(v.category):
        m = v.category == c
        order = np.argsort(v.values[m])
        assert (np.diff(ids.codes[m, level][order]) >= 0).all()


def _fresh_target_split() -> Split:
    """Every evaluated user's validation and test items are their own fresh items that no
    training sequence holds: a reward that saw them would show in the log."""
    raw = make_raw()
    seqs = {u: (s + [f"v{u}", f"t{u}"] if len(s) >= 3 else s) for u, s in raw.sequences.items()}
    items = {i for s in seqs.values() for i in s}
    text = {i: {"title": f"Item {i}", "brand": "b"} for i in items}
    value = {i: float(len(i)) for i in items}
    return leave_one_out(canonicalize("fresh", RawData(seqs, text, value, "price", ("title", "brand"), "test")))


def test_rl_rewards_see_training_targets_only(run_cfg) -> None:
    split = _fresh_target_split()
    held_out = set(split.valid.targets.tolist()) | set(split.test.targets.tolist())
    train_items = set(split.train.items.tolist())
    assert not held_out & train_items
    method = _method(split, run_cfg, rl_epochs=2, rl_examples=0)
    log = []
    reward = method.reward

    def logged(sampled, target):
        log.append(target.clone())
        return reward(sampled, target)

    method.reward = logged
    method.fit()
    seen = set(torch.cat(log).tolist())
    assert len(log) >= 2 and seen  # the RL stage ran
    assert not seen & held_out and seen <= train_items
    stages = method.ctx.info["stages"]
    assert set(stages) == {"supervised", "rl"} and len(stages["rl"]["valid_curve"]) >= 1
    assert len(stages["supervised"]["valid_curve"]) >= 1 and "GRPO" in stages["rl"]["algorithm"]


def test_value_guided_beam_matches_brute_force(tiny_split: Split, run_cfg) -> None:
    method = _method(tiny_split, run_cfg, beta=2.0, rl_epochs=0)
    method.fit()
    method.eval()
    ids = method.semantic_ids
    users = torch.arange(3)
    hist = torch.from_numpy(tiny_split.test.input.history.padded(method.history_cap)[:3])
    src = method.encoder_input(users, hist)
    beam = method.trie.n_leaves
    from bench.method import EvalBatch

    got = method.search(EvalBatch(users, hist, (hist >= 0).sum(1)), src, beam, ids.n_items).items
    tokens = torch.from_numpy(ids.tokens()) + method.level_offsets[0] - int(ids.offsets[0])
    tgt_in = torch.cat([torch.full((ids.n_items, 1), BOS), tokens[:, :-1]], 1)
    with torch.no_grad():
        for b in range(3):
            logits = method.model(src[b : b + 1].expand(ids.n_items, -1), tgt_in)
            logp = torch.log_softmax(logits, -1).gather(2, tokens.unsqueeze(-1)).squeeze(-1).sum(1)
            v = method.model.values(method.model.last_hidden)[:, -1].gather(1, tokens[:, -1:]).squeeze(1)
            score = logp + 2.0 * v
            want = torch.argsort(-score, stable=True)
            assert got[b].tolist() == want.tolist() or torch.allclose(score[got[b]], score[want], atol=1e-5)


def test_constraint_valued_shows_only_items_with_a_value(run_cfg) -> None:
    raw = make_raw()
    items = sorted(raw.item_value)
    raw = dataclasses.replace(raw, item_value={i: v for k, (i, v) in enumerate(sorted(raw.item_value.items())) if k % 3})
    split = leave_one_out(canonicalize("tiny", raw))
    method = _method(split, run_cfg, constraint="valued", rl_epochs=0)
    method.fit()
    known = method.values.known
    assert method.values.kind == "real" and not known.all() and len(items) == split.n_items
    from bench.method import EvalBatch

    # the head regresses log(v / mean v); an item without a value counts as the smallest known one
    v = method.values.values
    norm = v[known] / v[known].mean()
    np.testing.assert_allclose(method.value_target[torch.from_numpy(known)].numpy(), np.log(norm), rtol=1e-5)
    assert torch.all(method.value_target[torch.from_numpy(~known)] == float(np.log(norm.min())))
    assert torch.all(method.value_norm[torch.from_numpy(~known)] == 0)  # the RL reward: no value, no bonus
    linear = _method(split, run_cfg, value_scale="linear", rl_epochs=0)
    np.testing.assert_allclose(linear.value_target[torch.from_numpy(known)].numpy(), norm, rtol=1e-5)

    hist = torch.from_numpy(split.test.input.history.padded(method.history_cap))
    out = method.recommend(EvalBatch(torch.from_numpy(split.test.input.users), hist, (hist >= 0).sum(1)), 100)
    shown = out[out >= 0].numpy()
    assert len(shown) and known[shown].all()


def test_record_carries_both_stages_and_the_value_model(tiny_split: Split, run_cfg, tmp_path) -> None:
    cfg = run_cfg()
    cfg.overrides["univa"]["beta_sweep"] = (0.0, 1.0, 5.0)
    rec = json.loads(execute(METHODS.get("univa"), tiny_split, 0, cfg).read_text())
    train = rec["training"]
    assert set(train["stages"]) == {"supervised", "rl"}
    # the supervised stage selects on the unguided decode; RL starts from that checkpoint decoded at beta
    supervised = train["stages"]["supervised"]
    assert supervised["selected_at_beta"] == 0.0 and supervised["valid_at_beta"]["beta"] == 1.0
    assert supervised["best_valid"] == pytest.approx(max(v for _, v in supervised["valid_curve"]), abs=1e-6)
    rl_curve = train["stages"]["rl"]["valid_curve"]
    assert train["stages"]["rl"]["best_valid"] == pytest.approx(max([supervised["valid_at_beta"]["ndcg@10"]] + [v for _, v in rl_curve]), abs=1e-6)
    # the beta sweep: supplementary passes at the other beta; the headline's config is restored after them
    assert train["value_model"]["value_source"]["kind"] == "real" and train["value_model"]["beta"] == 1.0
    variants = rec["test_metrics_variants"]
    assert set(variants) == {"beta=0", "beta=5"} and variants["beta=5"]["options"] == {"beta": 5.0}
    assert all(set(v["value_metrics"]) >= {"hr@100", "value_hr@100", "wndcg@100"} for v in variants.values())
    from bench.leaderboard import render_leaderboard

    table = render_leaderboard(cfg.results_dir).split("Decoding variants", 1)[1].split("\n\n", 2)[1]
    rows = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"headline", "beta=0", "beta=5"}
    assert f"{variants['beta=5']['value_metrics']['value_hr@100']:.4f}" in rows["beta=5"]
    assert f"{rec['value_metrics']['metrics']['value_hr@100']:.4f}" in rows["headline"]
    assert rec["efficiency"]["rl_epochs_run"] >= 1 and rec["codebook"]["semantic_levels"] == 3
    assert rec["generation"]["duplicate_rate"] == 0.0


def test_ablations_and_presets() -> None:
    base = METHODS.get("univa")
    assert METHODS.get("univa-no-rl").Config().rl_epochs == 0
    assert METHODS.get("univa-no-value-head").Config().value_head is False
    assert METHODS.get("univa-beta0").Config().beta == 0.0
    for name in ("univa", "univa-no-rl", "univa-no-value-head", "univa-beta0"):
        cls = METHODS.get(name)
        cpu = resolve_config(cls, "cpu")
        assert cpu.d_model < base.Config().d_model and cpu.beam == 100
        assert (cpu.rl_epochs == 0) == (name == "univa-no-rl")
    with pytest.raises(UserError, match="constraint"):
        UniVAConfig(constraint="all")
    with pytest.raises(UserError, match="rq_collisions"):
        UniVAConfig(rq_collisions="count")


def test_beta_sweep_script_on_tiny_data(tiny_split: Split, run_cfg, tmp_path) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "univa_beta_tradeoff.py"
    spec = importlib.util.spec_from_file_location("univa_beta_tradeoff", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        cfg = run_cfg()
        cfg.overrides["univa"]["rl_epochs"] = 0
        method, parts = build_method(METHODS.get("univa"), tiny_split, 0, cfg, torch.device("cpu"))
        method.fit()
        # the harness's supplementary passes decode as the script does, and leave the config as it was
        method.config = dataclasses.replace(method.config, beta_sweep=(0.0, 5.0))
        variants = supplementary_passes(method, tiny_split, parts["tiebreak"], cfg)
        assert method.config.beta == 1.0
        rows = module.sweep(method, tiny_split, parts["tiebreak"], [0.0, 5.0], 16)
        assert [variants[f"beta={b:g}"]["metrics"] for b in (0, 5)] == [r["metrics"] for r in rows]
        module.plot(rows, tmp_path / "sweep.png", "tiny")
    finally:
        sys.modules.pop(spec.name, None)
    assert [r["beta"] for r in rows] == [0.0, 5.0] and (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert all(set(r["value_metrics"]) >= {"hr@100", "value_hr@100", "wndcg@100"} for r in rows)
