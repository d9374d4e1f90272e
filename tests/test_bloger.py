"""BLOGER: the lookahead meta-gradient against finite differences, gradient surgery, IDs and
trie rebuilt after tokenizer updates, the checkpoint, and the method contract on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.batching import last_item_windows
from bench.config import resolve_config
from bench.errors import UserError
from bench.runner import build_method, execute
from bench.split import Split
from methods import METHODS
from methods.bloger import BLOGERConfig, BLOGERLetterConfig, combine_gradients, project_conflict
from methods.semid.beam import PrefixTrie
from methods.semid.generative import N_SPECIAL
from methods.semid.rqvae import unique_last_level

pytestmark = pytest.mark.usefixtures("single_thread")


def _method(split: Split, run_cfg, name: str = "bloger", **changes):
    cfg = run_cfg()
    cfg.overrides[name].update(changes)
    method, _ = build_method(METHODS.get(name), split, 0, cfg, torch.device("cpu"))
    method.prepare()
    method.steps_per_epoch, method.train_examples = 1, method.config.batch_size
    return method


def _batch(method, n: int = 8):
    history, target, rows = last_item_windows(method.data.train, method.config.max_len)
    return method.train_batch(*(torch.from_numpy(a[:n]).long() for a in (rows, history, target)))


def _decodes_every_item(method) -> bool:
    trie, codes = method.trie, torch.from_numpy(method.semantic_ids.codes)
    leaves = trie.leaf_of(codes)
    return all(trie.leaf_items[trie.leaf_ptr[leaf] : trie.leaf_ptr[leaf + 1]].tolist() == [i] for i, leaf in enumerate(leaves.tolist()))


# ---- the meta-gradient ---------------------------------------------------------------------
def test_meta_gradient_matches_finite_differences(tiny_split: Split, run_cfg) -> None:
    """G_rec = d/dphi L(theta - eta grad_theta L(theta, phi), phi) on a tiny model in float64.
    The straight-through embedding E[hard] + pE - sg(pE) has the derivatives of
    E[hard] + pE - c with c frozen at the current phi; the reference evaluates that function."""
    eta = 0.5  # large, so the second-order term is visible
    m = _method(tiny_split, run_cfg, dropout=0.0, virtual_lr=eta)
    m.model.double()
    m.tokenizer.double()
    m.item_x = m.item_x.double()
    m.refresh_probs()
    batch = _batch(m)
    named_tok = list(m.tokenizer.named_parameters())
    g_rec, _ = m.rec_meta_gradient(batch)

    frozen: list[torch.Tensor] = []
    m.straight_through = lambda soft: frozen.append(soft.detach()) or soft - soft.detach()

    def lookahead_loss(first_order: bool = False) -> torch.Tensor:
        named = list(m.model.named_parameters())
        m._live = True
        inner = m.loss(m.train_logits(batch), batch.tgt)
        grads = torch.autograd.grad(inner, [p for _, p in named], allow_unused=True)
        virtual = {n: p.detach() - eta * g if g is not None else p.detach() for (n, p), g in zip(named, grads)}
        out = m.loss(m.train_logits(batch, virtual), batch.tgt)
        m._live = False
        return out

    outer = lookahead_loss()  # records the two constants (inner and virtual forward) at phi0
    consts = list(frozen)
    first_order = torch.autograd.grad(outer, [p for _, p in named_tok], allow_unused=True)  # theta' held fixed
    calls = iter(range(10**6))
    m.straight_through = lambda soft: soft - consts[next(calls) % 2]

    gen = torch.Generator().manual_seed(0)
    h, checked, second_order_seen = 1e-6, 0, False
    for k, (name, p) in enumerate(named_tok):
        if g_rec[k] is None:
            assert name.startswith("decoder"), name  # only the tokenizer's decoder is outside the recommender's loss
            continue
        for flat in torch.randint(p.numel(), (3,), generator=gen).tolist():
            idx = np.unravel_index(flat, p.shape)
            p.data[idx] += h
            up = float(lookahead_loss().detach())
            p.data[idx] -= 2 * h
            down = float(lookahead_loss().detach())
            p.data[idx] += h
            fd = (up - down) / (2 * h)
            assert float(g_rec[k][idx]) == pytest.approx(fd, rel=1e-4, abs=1e-8), (name, idx)
            if abs(float(first_order[k][idx]) - fd) > 1e-3 * max(abs(fd), 1e-6):
                second_order_seen = True
            checked += 1
    assert checked >= 12 and second_order_seen  # the first-order gradient alone does not pass this check


def test_straight_through_embeddings_equal_the_lookup(tiny_split: Split, run_cfg) -> None:
    m = _method(tiny_split, run_cfg, dropout=0.0, user_tokens=5)
    batch = _batch(m)
    m.model.eval()
    m._live = True
    with torch.no_grad():  # (attention may take another kernel when a gradient is wanted)
        assert torch.equal(m.train_logits(batch), m.model(batch.src, batch.tgt_in))  # the soft term is exactly zero in value
    m.train_logits(batch).logsumexp(-1).sum().backward()
    reached = [p.grad for p in m.tokenizer.encoder.parameters()] + [b.grad for b in m.tokenizer.codebooks]
    assert all(g is not None and g.abs().sum() > 0 for g in reached)  # ... and carries the tokenizer's gradient


# ---- gradient surgery ----------------------------------------------------------------------
def test_surgery_removes_exactly_the_conflicting_component() -> None:
    gen = torch.Generator().manual_seed(1)
    g_tok = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    r = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    orth = r - (r * g_tok).sum() / g_tok.pow(2).sum() * g_tok  # the part of r orthogonal to g_tok
    conflicting, agreeing = -0.7 * g_tok + orth, 0.3 * g_tok + orth
    out, facts = combine_gradients([g_tok, g_tok, g_tok, None], [conflicting, agreeing, None, orth], 0.5, "tensor")
    assert torch.allclose(out[0], 0.5 * g_tok + orth, atol=1e-12)  # -0.7 g_tok removed, the rest kept
    assert torch.equal(out[1], 0.5 * g_tok + agreeing)  # no conflict: untouched
    assert torch.equal(out[2], 0.5 * g_tok) and torch.equal(out[3], orth)  # one gradient missing: no surgery
    assert facts == {"conflicting": 1, "tensors": 2, "conflict_fraction": 0.5}
    assert abs(float((project_conflict(conflicting, g_tok, "tensor") * g_tok).sum())) < 1e-10

    off, facts_off = combine_gradients([g_tok], [conflicting], 0.5, "off")
    assert torch.equal(off[0], 0.5 * g_tok + conflicting) and facts_off["conflicting"] == 1  # counted, not projected


def test_row_surgery_is_the_paper_rule_on_vectors_only() -> None:
    gen = torch.Generator().manual_seed(2)
    g_tok, g_rec = torch.randn(6, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64)
    assert torch.allclose(project_conflict(g_rec, g_tok, "row"), project_conflict(g_rec, g_tok, "tensor"))
    m_tok, m_rec = torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(3, 4, generator=gen, dtype=torch.float64)
    assert not torch.allclose(project_conflict(m_rec, m_tok, "row"), project_conflict(m_rec, m_tok, "tensor"))


# ---- IDs, trie and checkpoint --------------------------------------------------------------
def test_unique_last_level_moves_duplicates_to_the_nearest_free_code() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 2], [1, 1], [0, 1]])
    book = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    last = np.array([[1.0], [2.9], [2.0], [1.0], [0.1]], dtype=np.float32)
    out, moved = unique_last_level(codes, last, book)
    assert moved == 2 and len(np.unique(out, axis=0)) == 5
    assert out[0].tolist() == [0, 1] and out[1].tolist() == [0, 3] and out[4].tolist() == [0, 0]  # 2 is taken by item 2
    assert out[3].tolist() == [1, 1]  # another prefix: untouched


def test_ids_and_trie_are_rebuilt_after_every_tokenizer_update(tiny_split: Split, run_cfg, monkeypatch) -> None:
    builds = []
    original = PrefixTrie.build.__func__
    monkeypatch.setattr(PrefixTrie, "build", classmethod(lambda cls, ids, device="cpu": builds.append(ids.codes.copy()) or original(cls, ids, device)))
    # 16 last-level codes per prefix: room for every collision group of the 30 tiny items to be split
    m = _method(tiny_split, run_cfg, tokenizer_lr=0.05, rq_codebook_size=16)
    batch = _batch(m, 16)
    start = m.semantic_ids.codes.copy()
    changed = 0
    for k in range(4):
        n_builds = len(builds)
        probs = m.probs.clone()
        m.meta_step(k, batch)
        ids = m.semantic_ids
        assert len(builds) == n_builds + 1 and np.array_equal(builds[-1], ids.codes)  # a new trie for the new IDs
        assert ids.unique_fraction() == 1.0 and _decodes_every_item(m)
        assert torch.equal(m.item_tokens, torch.from_numpy(ids.tokens() + N_SPECIAL))
        assert np.array_equal(m.state.codes.numpy(), ids.codes) and int(m.state.version) == k + 1
        assert not torch.equal(m.probs, probs)  # the soft probabilities follow the tokenizer
        changed += m.ctx.info["bloger"]["updates"][-1]["ids_changed"]
    assert changed > 0 and not np.array_equal(start, m.semantic_ids.codes)
    update = m.ctx.info["bloger"]["updates"][-1]
    assert 0 <= update["conflict_fraction"] <= 1 and update["tensors"] > 0


def test_restored_checkpoint_brings_back_its_ids(tiny_split: Split, run_cfg) -> None:
    m = _method(tiny_split, run_cfg, tokenizer_lr=0.05)
    batch = _batch(m, 16)
    saved = {k: v.clone() for k, v in m.state.state_dict().items()}
    for k in range(4):
        m.meta_step(k, batch)
    assert not np.array_equal(m.semantic_ids.codes, saved["codes"].numpy())
    m.state.load_state_dict(saved)  # what early stopping does with the best state
    m.ctx.info["bloger"].setdefault("updates", [])
    m.after_selection()
    assert np.array_equal(m.semantic_ids.codes, saved["codes"].numpy()) and _decodes_every_item(m)
    assert m.ctx.info["bloger"]["selected_tokenizer_version"] == 0
    assert torch.equal(m.tokenizer.codebooks[0], saved["tokenizer.codebooks.0"])


# ---- options and the method contract -------------------------------------------------------
def test_options_and_variants() -> None:
    with pytest.raises(UserError, match="surgery"):
        BLOGERConfig(surgery="pcgrad")
    with pytest.raises(UserError, match="rq_collisions"):
        BLOGERConfig(rq_collisions="count")
    with pytest.raises(UserError, match="meta_every"):
        BLOGERConfig(meta_every=-1)
    assert METHODS.get("bloger-no-gs").Config().surgery == "off" and BLOGERConfig().surgery == "tensor"
    letter = BLOGERLetterConfig()
    assert letter.alpha > 0 and letter.beta > 0 and letter.rq_train_sinkhorn and letter.tau == 1.0 and letter.rq_levels == 4
    for name in ("bloger", "bloger-no-gs", "bloger-letter"):
        cfg = resolve_config(METHODS.get(name), "cpu")
        assert cfg.rq_epochs < BLOGERConfig().rq_epochs and cfg.d_model < BLOGERConfig().d_model and cfg.beam <= BLOGERConfig().beam


@pytest.mark.parametrize("name", ["bloger", "bloger-letter"])
def test_method_contract_through_the_harness(name: str, tiny_split: Split, run_cfg) -> None:
    cfg = run_cfg()
    rec = json.loads(execute(METHODS.get(name), tiny_split, 0, cfg).read_text())
    n = tiny_split.n_items
    assert rec["codebook"]["n_items"] == n and rec["codebook"]["collision_rate"] == 0.0  # the final IDs, measured
    assert rec["training"]["generation_stats"]["invalid_rate"] == 0 and rec["generation"]["duplicate_rate"] == 0
    bloger = rec["training"]["bloger"]
    epochs, every = rec["efficiency"]["epochs_run"], cfg.overrides[name]["meta_every"]
    steps = rec["training"]["train_examples"] // cfg.overrides[name]["batch_size"] + 1
    assert len(bloger["updates"]) == bloger["tokenizer_updates"] == epochs * steps // every
    assert all(0 <= u["conflict_fraction"] <= 1 for u in bloger["updates"])
    assert bloger["codebook_before"]["n_items"] == n and 0 <= bloger["selected_tokenizer_version"] <= bloger["tokenizer_updates"]
    assert rec["efficiency"]["tokenizer_update_seconds"] > 0 and rec["efficiency"]["tokenizer_seconds"] > 0
    assert len(rec["metrics"]) and rec["metrics"]["recall@10"] is not None
    if name == "bloger-letter":
        assert "regularizers" in rec["training"]["tokenizer"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_meta_step_on_cuda_under_bf16_autocast(tiny_split: Split, run_cfg) -> None:
    """The lookahead (double backward through attention and RMSNorm) under the stack's bf16 autocast."""
    cfg = run_cfg(device="cuda")
    method, _ = build_method(METHODS.get("bloger"), tiny_split, 0, cfg, torch.device("cuda"))
    method.prepare()
    method.steps_per_epoch = 1
    assert method.autocast["enabled"] and method.autocast["dtype"] == torch.bfloat16
    history, target, rows = last_item_windows(method.data.train, method.config.max_len)
    batch = method.train_batch(*(torch.from_numpy(a[:16]).long().cuda() for a in (rows, history, target)))
    g_rec, facts = method.rec_meta_gradient(batch)
    assert all(torch.isfinite(g).all() for g in g_rec if g is not None) and np.isfinite(facts["loss_rec_virtual"])
    method.meta_step(0, batch)
    assert method.semantic_ids.unique_fraction() == 1.0 and method.trie.leaf_items.device.type == "cuda"


def test_once_per_epoch_means_the_last_full_batch(tiny_split: Split, run_cfg, monkeypatch) -> None:
    cfg = run_cfg()
    cfg.overrides["bloger"].update(meta_every=0, epochs=2, batch_size=32)
    method, _ = build_method(METHODS.get("bloger"), tiny_split, 0, cfg, torch.device("cpu"))
    sizes = []
    monkeypatch.setattr(type(method), "meta_step", lambda self, step, batch: sizes.append((step, len(batch.target))))
    method.fit()
    n = method.train_examples
    assert n % 32 and method.steps_per_epoch == n // 32 + 1  # the tiny data ends each epoch on a short batch
    assert sizes == [(n // 32 - 1, 32), (method.steps_per_epoch + n // 32 - 1, 32)]
