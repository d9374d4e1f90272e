"""GenerativeMethod: training examples, the harness contract for a subclass with random
(seeded) unique IDs, the record it writes, and that it learns the tiny data's pattern."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch

from bench.errors import UserError
from bench.method import EvalBatch
from bench.runner import build_method, execute
from bench.split import Sequences, Split
from methods import METHODS
from bench.batching import last_item_windows
from methods.semid.generative import EOS, N_SPECIAL, PAD, GenerativeConfig, GenerativeMethod
from bench.semantic_ids import SemanticIDs

pytestmark = pytest.mark.usefixtures("single_thread")


class RandomIDs(GenerativeMethod):
    """Seeded random unique 3-level IDs (no semantics): the recommender must learn item
    transitions through the codes alone."""

    name = "random-ids"
    description = "test only: random unique semantic IDs"

    def build_ids(self) -> SemanticIDs:
        sizes = (4, 4, 4)
        rng = self.ctx.numpy_rng("random-ids")
        every = np.array(list(itertools.product(*[range(s) for s in sizes])))
        return SemanticIDs(every[rng.permutation(len(every))[: self.data.n_items]], sizes, "random")


TINY = {"epochs": 2, "eval_every": 1, "patience": 1, "d_model": 16, "layers": 1, "heads": 1, "max_len": 8, "batch_size": 32, "beam": 100}


def test_tiny_overrides_fit_the_shared_generic_ones() -> None:
    from tests.conftest import GENERIC_TINY

    fields = {f.name for f in dataclasses.fields(GenerativeConfig)}
    assert {k: v for k, v in GENERIC_TINY.items() if k in fields} == TINY


def test_training_examples_match_a_loop() -> None:
    seqs = Sequences(np.array([0, 4, 5, 7]), np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.int32))
    hist, tgt, rows = last_item_windows(seqs, 2)  # the generative methods' training examples
    want = []
    for r in range(seqs.n):
        s = seqs[r].tolist()
        for t in range(1, len(s)):
            h = s[max(0, t - 2) : t]
            want.append(([-1] * (2 - len(h)) + h, s[t], r))
    assert [(h.tolist(), int(t), int(r)) for h, t, r in zip(hist, tgt, rows)] == want


def test_encoder_input_layout(tiny_split: Split, run_cfg) -> None:
    method, _ = build_method(RandomIDs, tiny_split, 0, run_cfg(overrides={"random-ids": dict(TINY, user_tokens=5)}), torch.device("cpu"))
    method.prepare()
    ids = method.semantic_ids
    src = method.encoder_input(torch.tensor([7, 8]), torch.tensor([[-1, 4, 2], [1, 2, 3]]))
    assert src.shape == (2, 1 + 3 * 3 + 1) and (src[:, -1] == EOS).all()
    assert (src[:, 0] >= N_SPECIAL + ids.vocab_size).all() and (src[:, 0] < N_SPECIAL + ids.vocab_size + 5).all()
    assert (src[0, 1:4] == PAD).all() and src[0, 4:7].tolist() == (ids.tokens()[4] + N_SPECIAL).tolist()
    assert src[1, 7:10].tolist() == (ids.tokens()[3] + N_SPECIAL).tolist()
    assert method.model.vocab_size == N_SPECIAL + ids.vocab_size + 5


def test_lr_schedules() -> None:
    for name in ("cosine", "constant", "rsqrt"):
        m = RandomIDs.__new__(RandomIDs)
        m.config = GenerativeConfig(lr_schedule=name, warmup_ratio=0.1)
        f = [m.lr_factor(s, 100) for s in range(100)]
        assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
        assert all(a >= b for a, b in zip(f[9:], f[10:])) and 0 <= f[-1] <= 1
    assert f[39] == pytest.approx(0.5)  # rsqrt: sqrt(10 / 40)


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="lr_schedule"):
        GenerativeConfig(lr_schedule="linear")
    with pytest.raises(UserError, match="valid_beam"):
        GenerativeConfig(valid_beam=0)
    with pytest.raises(UserError, match="tau"):
        GenerativeConfig(tau=0)


def _fit_and_recommend(split: Split, run_cfg, overrides: dict, device: str = "cpu"):
    method, _ = build_method(RandomIDs, split, 0, run_cfg(device=device, overrides={"random-ids": overrides}), torch.device(device))
    method.fit()
    method.eval()
    ev = split.test.input
    hist = torch.from_numpy(ev.history.padded(method.history_cap)).to(device)
    batch = EvalBatch(torch.from_numpy(ev.users.astype(np.int64)).to(device), hist,
                      torch.from_numpy(np.minimum(ev.history.lengths, hist.shape[1])).to(device))  # fmt: skip
    with torch.no_grad():
        return method, method.recommend(batch, 100)


def test_generative_subclass_meets_the_method_contract(tiny_split: Split, run_cfg) -> None:
    assert RandomIDs.name not in METHODS.names()  # test-only, never registered
    method, out = _fit_and_recommend(tiny_split, run_cfg, TINY)
    B = len(tiny_split.test.targets)
    assert out.dim() == 2 and out.shape == (B, 100) and ((out >= -1) & (out < tiny_split.n_items)).all()
    for row in out.tolist():  # every item at most once; the beam (100) covers all 30 items
        real = [i for i in row if i >= 0]
        assert len(real) == len(set(real)) == tiny_split.n_items
    counts = method.parameter_counts()
    assert 0 < counts["params_trainable"] <= counts["params_total"]
    assert method.semantic_ids.n_items == tiny_split.n_items and method.history_cap == 8
    info = method.ctx.info
    assert method.ctx.efficiency["tokenizer_seconds"] >= 0 and info["semantic_ids"]["sizes"] == [4, 4, 4]
    gen = info["generation_stats"]
    assert gen["beam"] == 100 and gen["invalid_rate"] == 0 and gen["duplicate_rate"] == 0
    assert gen["empty_beam_rate"] == pytest.approx(1 - tiny_split.n_items / 100)  # 30 valid IDs for a beam of 100
    _, again = _fit_and_recommend(tiny_split, run_cfg, TINY)
    assert torch.equal(out, again), "not deterministic on CPU for a fixed seed"


def test_validation_during_training_uses_the_validation_beam(tiny_split: Split, run_cfg, monkeypatch) -> None:
    import methods.semid.generative as generative

    beams = []
    original = generative.beam_search

    def spy(step, trie, batch, beam, k, device):
        beams.append(beam)
        return original(step, trie, batch, beam, k, device)

    monkeypatch.setattr(generative, "beam_search", spy)
    method, _ = _fit_and_recommend(tiny_split, run_cfg, dict(TINY, valid_beam=12, beam=30))  # valid_beam >= 10: NDCG@10 selects
    n_batches = -(-len(tiny_split.valid.targets) // 16)
    assert beams[: 2 * n_batches] == [12] * (2 * n_batches)  # two epochs' validations
    assert beams[-1] == 30 and method.ctx.info["generation_stats"]["beam"] == 30


def test_run_one_record_carries_tokenizer_time_and_generation_stats(tiny_split: Split, run_cfg) -> None:
    path = execute(RandomIDs, tiny_split, 0, run_cfg(overrides={"random-ids": TINY}))
    rec = json.loads(path.read_text())
    assert rec["efficiency"]["tokenizer_seconds"] >= 0 and rec["protocol"]["output"] == "lists"
    assert rec["training"]["generation_stats"]["invalid_rate"] == 0 and rec["generation"]["duplicate_rate"] == 0
    assert rec["training"]["semantic_ids"]["source"] == "random" and rec["protocol"]["history_cap"] == 8


def test_learns_the_tiny_pattern_better_than_pop(tiny_split: Split, run_cfg) -> None:
    """Users walk the catalog in steps of 1 or 2: after training, validation NDCG@10 is far
    above popularity's (the IDs are random, so this is learned through the codes)."""
    # the next item depends on the last one only: a history of 3 items is plenty
    learn = dict(TINY, d_model=32, heads=2, d_kv=16, d_ff=64, epochs=20, eval_every=10, patience=2, lr=5e-3, max_len=3,
                 dropout=0.0, warmup_ratio=0.02, lr_schedule="constant", valid_beam=10)  # fmt: skip
    ours = json.loads(execute(RandomIDs, tiny_split, 0, run_cfg(overrides={"random-ids": learn})).read_text())
    pop = json.loads(execute(METHODS.get("pop"), tiny_split, 0, run_cfg()).read_text())
    assert ours["valid_metrics"]["ndcg@10"] > pop["valid_metrics"]["ndcg@10"] + 0.2, (ours["valid_metrics"], pop["valid_metrics"])
    assert ours["metrics"]["recall@10"] > pop["metrics"]["recall@10"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generative_subclass_on_cuda(tiny_split: Split, run_cfg) -> None:
    method, out = _fit_and_recommend(tiny_split, run_cfg, TINY, "cuda")
    assert out.device.type == "cuda" and out.shape == (len(tiny_split.test.targets), 100)
    assert ((out >= -1) & (out < tiny_split.n_items)).all()
    assert method.ctx.info["generation_stats"]["invalid_rate"] == 0
