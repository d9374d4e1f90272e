"""The exact ranking pass of the generative methods: every item's ID log-likelihood, checked
against a brute-force teacher-forced likelihood of each item; the supplementary pass and its
record; options that only add supplementary passes are no part of a record's identity."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.config import config_differences, normalized_config, resolve_config
from bench.errors import UserError
from bench.leaderboard import render_leaderboard
from bench.method import EvalBatch
from bench.runner import build_method, execute
from bench.split import Split
from methods import METHODS
from methods.semid.exact import exact_item_scores
from methods.semid.generative import BOS, GenerativeConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def _test_batch(split: Split, method) -> EvalBatch:
    ev = split.test.input
    hist = torch.from_numpy(ev.history.padded(method.history_cap))
    return EvalBatch(torch.from_numpy(ev.users.astype(np.int64)), hist, torch.from_numpy(np.minimum(ev.history.lengths, hist.shape[1])))


def _fitted(name: str, split: Split, run_cfg, **changes):
    cfg = run_cfg()
    cfg.overrides[name].update(changes)
    method, _ = build_method(METHODS.get(name), split, 0, cfg, torch.device("cpu"))
    method.fit()
    method.eval()
    return method


def brute_force(method, batch: EvalBatch) -> torch.Tensor:
    """(B, n_items): for every (user, item) pair on its own, the teacher-forced log-likelihood of
    the item's full ID, log-softmax over the whole vocabulary at each level, summed."""
    src = method.encoder_input(batch.users, batch.history)
    tokens = method.item_tokens  # (n_items, levels)
    out = torch.empty(len(src), len(tokens))
    for row in range(len(src)):
        s = src[row : row + 1].expand(len(tokens), -1)
        tgt_in = torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], 1)
        logp = torch.log_softmax(method.model(s, tgt_in).double(), -1)
        out[row] = logp.gather(2, tokens.unsqueeze(-1)).squeeze(-1).sum(1).float()
    return out


@pytest.mark.parametrize("name", ["tiger", "letter-base", "p5-cid"])
def test_exact_scores_equal_a_brute_force_likelihood_of_every_item(name: str, tiny_split: Split, run_cfg) -> None:
    method = _fitted(name, tiny_split, run_cfg)
    batch = _test_batch(tiny_split, method)
    method.config = dataclasses.replace(method.config, decode="exact")
    assert method.active_output == "scores"
    with torch.no_grad():
        exact = method.score(batch)
        want = brute_force(method, batch)
    assert exact.shape == (len(batch.users), tiny_split.n_items)
    torch.testing.assert_close(exact, want, atol=2e-5, rtol=1e-5)
    # chunking rows (users x trie nodes per decoder call) changes nothing
    src = method.encoder_input(batch.users, batch.history)
    from methods.semid.generative import seq2seq_step

    def make_step(chunk):
        return seq2seq_step(method.model, chunk, method.level_offsets, method.semantic_ids.sizes)

    small = exact_item_scores(make_step, src, method.trie, method.leaf_of_item, rows=7)
    torch.testing.assert_close(small, exact, atol=1e-5, rtol=1e-5)


def test_branch_and_bound_keeps_every_item_above_the_bound_exact(tiny_split: Split, run_cfg) -> None:
    """With a bound that 5 items reach (the 5th best brute-force score, or a beam's 5th ID), the
    items scoring at least the bound get their exact scores, prefixes below it are cut (-inf), and
    the top 5 is the exact one."""
    from methods.semid.exact import beam_bound
    from methods.semid.generative import seq2seq_step

    method = _fitted("tiger", tiny_split, run_cfg)
    batch = _test_batch(tiny_split, method)
    src = method.encoder_input(batch.users, batch.history)

    def make_step(rows):
        return seq2seq_step(method.model, rows, method.level_offsets, method.semantic_ids.sizes)

    with torch.no_grad():
        want = brute_force(method, batch)
        beam = beam_bound(method.search(batch, src, 5, 5).scores, depth=5)
    bound = want.topk(5, dim=1).values[:, -1]
    assert (beam <= bound + 1e-5).all()  # a beam's 5th ID is a valid (looser) bound
    for b in (bound, beam):
        got = exact_item_scores(make_step, src, method.trie, method.leaf_of_item, b, rows=50)
        finite = torch.isfinite(got)
        torch.testing.assert_close(got[finite], want[finite], atol=2e-5, rtol=1e-5)
        assert finite[want >= b.unsqueeze(1)].all() and not finite.all()  # every item above the bound is kept; something was cut
        assert torch.equal(got.topk(5, dim=1).indices.sort(1).values, want.topk(5, dim=1).indices.sort(1).values)


def test_exact_pass_in_the_record_and_the_beam_it_checks(tiny_split: Split, run_cfg) -> None:
    """With a beam as wide as the catalogue's 30 IDs the beam search is exhaustive: it found all of
    the exact top 10 and ranks as the exact pass does.  A beam of 3 finds at most 3 of 10."""
    cfg = run_cfg()
    cfg.overrides["tiger"].update(exact_pass=True)
    rec = json.loads(execute(METHODS.get("tiger"), tiny_split, 0, cfg).read_text())
    exact = rec["test_metrics_variants"]["exact"]
    assert exact["options"] == {"decode": "exact"} and exact["test_seconds"] > 0
    report = exact["method_report"]
    assert report["users_compared"] == len(tiny_split.test.targets) and report["beam"] == 100
    assert report["beam_recall_of_exact_top10"] == 1.0 == report["beam_top10_share_of_exact_top10"]
    for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20"):
        assert exact["metrics"][k] == pytest.approx(rec["metrics"][k]), k
    assert rec["metrics"]["hit@100"] == exact["metrics"]["hit@100"] == 1.0  # both rank all 30 items
    assert rec["protocol"]["output"] == "lists"
    board = render_leaderboard(cfg.results_dir)
    rows = [line.split("|")[1:-1] for line in board.splitlines() if line.startswith("| tiger ")]
    exact_row = next(r for r in rows if r[1].strip() == "exact")
    assert "beam found (of exact top-10)" in board and exact_row[-2].strip() == "1.000"

    cfg = run_cfg(results_dir=cfg.results_dir.parent / "narrow")
    cfg.overrides["tiger"].update(exact_pass=True, beam=3)
    rec = json.loads(execute(METHODS.get("tiger"), tiny_split, 0, cfg).read_text())
    report = rec["test_metrics_variants"]["exact"]["method_report"]
    assert report["beam"] == 3 and 0 < report["beam_recall_of_exact_top10"] <= 0.3


def test_beam_recall_counts_by_hand(tiny_split: Split, run_cfg) -> None:
    method = _fitted("tiger", tiny_split, run_cfg, epochs=1, beam=3)
    batch = _test_batch(tiny_split, method)
    lists = method.recommend(batch, 100)
    method.config = dataclasses.replace(method.config, decode="exact")
    scores = method.score(batch)
    top = scores.topk(10, dim=1).indices
    found = sum(len(set(t.tolist()) & {i for i in l.tolist() if i >= 0}) for t, l in zip(top, lists))
    report = method.pass_report()
    assert report["beam_recall_of_exact_top10"] == pytest.approx(found / (10 * len(top)))
    assert method.pass_report() == {}  # read once: the counts start again
    # a history the beam never saw is not compared
    other = EvalBatch(batch.users, torch.roll(batch.history, 1, dims=1), batch.lengths)
    method.score(other)
    assert method.pass_report().get("users_compared", 0) < len(batch.users)


def test_exact_pass_is_no_part_of_a_records_identity() -> None:
    cls = METHODS.get("tiger")
    cpu = resolve_config(cls, "cpu")
    assert cpu.exact_pass is True and cls.Config().exact_pass is False  # on at the cpu preset, off at the defaults
    recorded = {k: v for k, v in dataclasses.asdict(cpu).items() if k not in ("exact_pass", "decode")}  # made before the options
    assert config_differences(cpu, recorded) == []
    assert normalized_config(cls.Config, recorded) == normalized_config(cls.Config, {**recorded, "exact_pass": True, "decode": "beam"})
    assert config_differences(cpu, {**recorded, "decode": "exact"}) == [("decode", "exact", "beam", "")]


def test_exact_options_checked() -> None:
    with pytest.raises(UserError, match="decode"):
        GenerativeConfig(decode="greedy")
    with pytest.raises(UserError, match="exact_pass"):
        resolve_config(METHODS.get("univa"), "", {"exact_pass": "true"})
    assert resolve_config(METHODS.get("univa"), "cpu").exact_pass is False
    for name in ("tiger", "tiger-rkmeans", "letter-tiger", "bloger", "p5-cid", "tiger-letterindex"):
        method_cls = METHODS.get(name)
        assert resolve_config(method_cls, "cpu").exact_pass is True, name
