"""RPG: OPQ semantic IDs, the GPT-2 backbone's multi-token prediction, and the graph-constrained
decoding against a brute-force search on a tiny catalogue."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.config import resolve_config
from bench.errors import UserError
from bench.method import EvalBatch
from bench.runner import build_method, execute
from bench.split import Split
from methods import METHODS
from methods.rpg import RPGConfig, graph_decode, item_graph, item_scores, opq_ids, unpack_codes

pytestmark = pytest.mark.usefixtures("single_thread")


def brute_graph_search(logp: torch.Tensor, tokens: torch.Tensor, graph: torch.Tensor, start: torch.Tensor, steps: int) -> list[list[int]]:
    """One user at a time with Python sets: the distinct neighbours of the beam, each scored by
    the mean of its digits' log-probabilities (in float64), the best ``beam`` kept (ties: smaller item)."""
    out = []
    for row in range(len(start)):
        beam = [int(i) for i in start[row]]
        for _ in range(steps):
            cand = sorted({int(j) for i in beam for j in graph[i]})
            score = {j: round(float(logp[row, tokens[j]].double().mean()), 5) for j in cand}
            beam = sorted(cand, key=lambda j: (-score[j], j))[: len(start[row])]
        out.append(beam)
    return out


def _tiny_problem(n_items=40, digits=3, size=4, users=6, edges=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(size, (n_items, digits), generator=g)
    tokens = codes + size * torch.arange(digits)
    book = torch.randn(digits, size, 8, generator=g)
    logp = torch.log_softmax(torch.randn(users, digits, size, generator=g), -1).flatten(1)
    graph = item_graph(codes, book, edges, chunk=7)
    return codes, tokens, book, logp, graph


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graph_decoding_equals_a_brute_force_search(seed: int) -> None:
    codes, tokens, book, logp, graph = _tiny_problem(seed=seed)
    start = torch.randint(len(codes), (len(logp), 4), generator=torch.Generator().manual_seed(seed + 10))
    table = item_scores(logp, tokens)
    items, scores = graph_decode(table.round(decimals=5), graph, start, steps=3)
    assert items.tolist() == brute_graph_search(logp, tokens, graph, start, 3)
    torch.testing.assert_close(scores, table.gather(1, items), atol=1e-5, rtol=0)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_item_graph_by_brute_force_and_a_complete_graph_finds_the_exact_top() -> None:
    codes, tokens, book, logp, graph = _tiny_problem()
    unit = torch.nn.functional.normalize(book, dim=-1)
    n, D = codes.shape
    sim = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            sim[i, j] = sum(0.5 * (1 + float(unit[d, codes[i, d]] @ unit[d, codes[j, d]])) for d in range(D)) / D
    for i in range(n):  # the neighbours are the most similar items (as a set: ties at the cut may pick either)
        kth = sim[i].topk(graph.shape[1]).values[-1]
        assert (sim[i, graph[i]] >= kth - 1e-6).all() and len(set(graph[i].tolist())) == graph.shape[1]
    complete = item_graph(codes, book, n)
    start = torch.zeros(len(logp), 5, dtype=torch.long)
    exact = item_scores(logp, tokens)
    items, _ = graph_decode(exact, complete, start, steps=1)
    want = [sorted(range(n), key=lambda j: (-float(exact[r, j]), j))[:5] for r in range(len(logp))]
    assert items.tolist() == want


def test_unpack_codes_reads_faiss_bit_order() -> None:
    rng = np.random.default_rng(0)
    for bits in (2, 4, 8):
        codes = rng.integers(2**bits, size=(9, 8))
        packed = np.zeros((9, (8 * bits + 7) // 8), dtype=np.uint8)
        for r in range(9):
            value = sum(int(c) << (bits * d) for d, c in enumerate(codes[r]))  # least significant bit first
            packed[r] = np.frombuffer(value.to_bytes(packed.shape[1], "little"), dtype=np.uint8)
        assert np.array_equal(unpack_codes(packed, 8, bits), codes)


def test_opq_ids_quantize_each_subspace() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    cfg = RPGConfig(n_digits=4, codebook_size=16, pca_dim=0)
    ids = opq_ids(x, np.arange(300), cfg, threads=1)
    assert ids.codes.shape == (300, 4) and ids.sizes == (16,) * 4 and ids.source == "opq"
    assert ids.codes.min() >= 0 and ids.codes.max() < 16 and ids.unique_fraction() > 0.9
    assert all(len(np.unique(ids.codes[:, d])) > 8 for d in range(4))  # every digit's codebook is in use
    again = opq_ids(x, np.arange(300), cfg, threads=1)
    assert np.array_equal(ids.codes, again.codes)
    import faiss

    from methods.rpg import opq_index

    small = rng.normal(size=(260, 8)).astype(np.float32)

    def codes_of(index):
        index.train(small)
        index.add(small)
        lists = faiss.extract_index_ivf(index).invlists
        raw = faiss.rev_swig_ptr(lists.get_codes(0), len(small) * lists.code_size).reshape(len(small), -1).copy()
        order = np.argsort(faiss.rev_swig_ptr(lists.get_ids(0), len(small)).copy())
        return unpack_codes(raw, 2, 8)[order]

    # at 8 bits the index built part by part is the factory's OPQ2,IVF1,PQ2x8 (as the official code names it)
    factory = faiss.index_factory(8, "OPQ2,IVF1,PQ2x8", faiss.METRIC_INNER_PRODUCT)
    assert np.array_equal(codes_of(opq_index(8, 2, 8)), codes_of(factory))
    with pytest.raises(UserError, match="not divisible by n_digits"):
        opq_ids(x, np.arange(300), dataclasses.replace(cfg, n_digits=3), threads=1)
    with pytest.raises(UserError, match="fewer than codebook_size"):
        opq_ids(x, np.arange(10), cfg, threads=1)


def test_rpg_options_checked() -> None:
    with pytest.raises(UserError, match="codebook_size"):
        RPGConfig(codebook_size=100)
    with pytest.raises(UserError, match="decode"):
        RPGConfig(decode="beam")
    with pytest.raises(UserError, match="heads"):
        RPGConfig(d_model=10, heads=4)


def test_rpg_through_the_harness(tiny_split: Split, run_cfg) -> None:
    cfg = run_cfg()
    cfg.overrides["rpg"]["exact_pass"] = True
    rec = json.loads(execute(METHODS.get("rpg"), tiny_split, 0, cfg).read_text())
    tiny = cfg.overrides["rpg"]
    book = rec["codebook"]
    assert book["levels"] == tiny["n_digits"] and book["source"] == "opq" and book["sizes"] == [4] * 4
    assert rec["efficiency"]["tokenizer_seconds"] > 0 and rec["efficiency"]["graph_seconds"] >= 0
    assert rec["generation"]["list_depth"] == tiny["beam"] and rec["metrics"]["recall@20"] is None  # lists of `beam` items
    exact = rec["test_metrics_variants"]["exact"]
    assert exact["metrics"]["hit@100"] == 1.0 and 0 <= exact["method_report"]["beam_recall_of_exact_top10"] <= 1
    assert rec["training"]["graph"]["edges"] == tiny["n_edges"] and rec["training"]["valid_curve"]
    from bench.leaderboard import render_leaderboard

    board = render_leaderboard(cfg.results_dir)
    row = next(line for line in board.splitlines() if line.startswith("| rpg ") and "opq" in line)
    assert " / … / " not in row  # 4 digits: every depth shown (the first 4 and the last from 7 on)
    assert any(line.startswith("| rpg ") and "| exact " in line for line in board.splitlines())


def test_rpg_validates_exactly_while_training_and_learns(tiny_split: Split, run_cfg) -> None:
    cfg = run_cfg()
    cfg.overrides["rpg"].update(epochs=3, patience=5)
    method, _ = build_method(METHODS.get("rpg"), tiny_split, 0, cfg, torch.device("cpu"))
    outputs = []
    validate = method.ctx.validate

    def spy(*request):  # what the method outputs for the decode request of each validation
        before = method.request
        method.request = request[0] if request else before
        outputs.append(method.active_output)
        method.request = before
        return validate(*request)

    method.ctx.validate = spy
    method.fit()
    assert outputs == ["scores"] * 3 and method.active_output == "lists"
    # the multi-token loss falls on the tiny data's pattern
    losses = method.ctx.info["train_loss_curve"]
    assert losses[-1] < losses[0]


def test_rpg_cpu_preset_is_declared() -> None:
    cls = METHODS.get("rpg")
    full, cpu = cls.Config(), resolve_config(cls, "cpu")
    assert cpu.n_digits == full.n_digits and cpu.codebook_size == full.codebook_size  # long IDs kept
    assert cpu.exact_pass and cpu.beam == 100 and cpu.eval_every == 2 and cpu.patience == 3
    assert cpu.d_model < full.d_model and cpu.warmup_steps < full.warmup_steps and cpu.epochs <= full.epochs
