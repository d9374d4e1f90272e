"""LightGCN and iALS: the graph they are built on, what they reduce to, and that they learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from bench.errors import UserError
from bench.method import EvalBatch
from bench.runner import RunConfig, build_method, execute
from bench.split import Split
from methods import METHODS
from methods.lightgcn import normalized_adjacency

pytestmark = pytest.mark.usefixtures("single_thread")


def dense_reference(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    n = n_users + n_items
    a = np.zeros((n, n))
    a[users, n_users + items] = 1.0
    a[n_users + items, users] = 1.0
    d = a.sum(1)
    inv = np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_normalized_adjacency_equals_dense_reference() -> None:
    # user 0 -> items 0, 1 (item 1 twice: one edge); user 1 -> item 1; user 2 isolated; item 3 isolated
    users = np.array([0, 0, 0, 1])
    items = np.array([0, 1, 1, 1])
    adj = normalized_adjacency(users, items, 3, 4, torch.device("cpu"))
    want = dense_reference(users, items, 3, 4)
    np.testing.assert_allclose(adj.to_dense().numpy(), want, rtol=1e-6, atol=0)
    assert adj.is_coalesced() and adj._nnz() == 6  # 3 distinct edges, both directions
    # spot values: edge user0-item1 = 1/sqrt(deg 2 * deg 2)
    assert adj.to_dense()[0, 3 + 1].item() == pytest.approx(0.5)
    assert not adj.to_dense()[2].any() and not adj.to_dense()[3 + 3].any()


def _lightgcn(split: Split, **changes):
    overrides = {"dim": 8, "epochs": 2, "eval_every": 1, "patience": 2, "batch_size": 64, **changes}
    cfg = RunConfig(device="cpu", progress=False, eval_batch_size=16, overrides={"lightgcn": overrides})
    method, _ = build_method(METHODS.get("lightgcn"), split, 0, cfg, torch.device("cpu"))
    return method


def _batch(split: Split) -> EvalBatch:
    users = torch.from_numpy(split.test.input.users.astype(np.int64))
    return EvalBatch(users, torch.full((len(users), 0), -1, dtype=torch.long), torch.zeros(len(users), dtype=torch.long))


def test_lightgcn_graph_holds_training_interactions_only(tiny_split: Split) -> None:
    method = _lightgcn(tiny_split)
    rows, items = tiny_split.train.user_item_pairs()
    want = dense_reference(rows, items, tiny_split.n_users, tiny_split.n_items)
    dense = method.model.adjacency.to_dense().numpy()
    np.testing.assert_allclose(dense, want, rtol=1e-6, atol=0)
    # validation and test targets that the user never had in training are not edges
    train_pairs = set(zip(rows.tolist(), items.tolist()))
    for evalset in (tiny_split.valid, tiny_split.test):
        for u, t in zip(evalset.input.users.tolist(), evalset.targets.tolist()):
            if (u, t) not in train_pairs:
                assert dense[u, tiny_split.n_users + t] == 0.0


def test_lightgcn_propagation_is_the_layer_mean(tiny_split: Split) -> None:
    method = _lightgcn(tiny_split, layers=3)
    model = method.model
    a = torch.from_numpy(dense_reference(*tiny_split.train.user_item_pairs(), tiny_split.n_users, tiny_split.n_items)).float()
    e = torch.cat([model.user.weight, model.item.weight]).detach()
    want = (e + a @ e + a @ a @ e + a @ a @ a @ e) / 4
    users, items = model.propagate()
    torch.testing.assert_close(torch.cat([users, items]).detach(), want, rtol=1e-5, atol=1e-6)
    # the gradient through the sparse propagation equals the dense one
    w = torch.randn(len(want), want.shape[1], generator=torch.Generator().manual_seed(0))
    (torch.cat([users, items]) * w).sum().backward()
    e_ref = e.clone().requires_grad_(True)
    ((e_ref + a @ e_ref + a @ a @ e_ref + a @ a @ a @ e_ref) / 4 * w).sum().backward()
    torch.testing.assert_close(torch.cat([model.user.weight.grad, model.item.weight.grad]), e_ref.grad, rtol=1e-5, atol=1e-6)


def test_lightgcn_with_zero_layers_scores_like_mf(tiny_split: Split) -> None:
    method = _lightgcn(tiny_split, layers=0)
    method.fit()
    method.eval()
    batch = _batch(tiny_split)
    with torch.no_grad():
        got = method.score(batch)
        want = method.model.user.weight[batch.users] @ method.model.item.weight.T
    torch.testing.assert_close(got, want)


def test_lightgcn_eval_cache_follows_the_weights(tiny_split: Split) -> None:
    method = _lightgcn(tiny_split)
    model = method.model
    method.eval()
    batch = _batch(tiny_split)
    with torch.no_grad():
        first = method.score(batch)
        assert model._cache is not None and torch.equal(method.score(batch), first)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["item.weight"] = state["item.weight"] * 2
        model.load_state_dict(state)  # as Selection does when it restores the best epoch
        second = method.score(batch)
        assert not torch.allclose(second, first)
        users, items = model.propagate()
        torch.testing.assert_close(second, users[batch.users] @ items.T)
    model.train()
    assert model._cache is None


def _recall(name: str, split: Split, tmp_path, overrides: dict) -> float:
    """Test + validation recall@10 with history items masked: the tiny users walk the catalog
    without repeats, so a collaborative model's training items (scored high) would otherwise
    crowd out the targets, as on Amazon data."""
    cfg = RunConfig(results_dir=tmp_path / name, device="cpu", progress=False, eval_batch_size=16, mask_history=True,
                    overrides={name: overrides})
    rec = json.loads(execute(METHODS.get(name), split, 0, cfg).read_text())
    return rec["metrics"]["recall@10"] + rec["valid_metrics"]["recall@10"]


def test_ials_beats_popularity_on_tiny_data(tiny_split: Split, tmp_path) -> None:
    ials = _recall("ials", tiny_split, tmp_path, {"factors": 8, "iterations": 5, "alpha": 10.0, "regularization": 0.1})
    pop = _recall("pop", tiny_split, tmp_path, {})
    assert ials > pop + 0.1, (ials, pop)


def test_lightgcn_beats_popularity_on_tiny_data(tiny_split: Split, tmp_path) -> None:
    gcn = _recall("lightgcn", tiny_split, tmp_path, {"dim": 16, "epochs": 40, "eval_every": 5, "patience": 8, "batch_size": 64, "lr": 0.02})
    pop = _recall("pop", tiny_split, tmp_path, {})
    assert gcn > pop + 0.2, (gcn, pop)


def test_implicit_continues_from_fitted_factors() -> None:
    """iALS trains one sweep per ``fit`` call: that must equal one call with more iterations."""
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(0)
    m = sp.random(30, 20, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    m.data[:] = 5.0
    once = AlternatingLeastSquares(4, 0.1, 1.0, iterations=3, num_threads=1, random_state=7)
    once.fit(m, show_progress=False)
    stepwise = AlternatingLeastSquares(4, 0.1, 1.0, iterations=1, num_threads=1, random_state=7)
    for _ in range(3):
        stepwise.fit(m, show_progress=False)
    np.testing.assert_allclose(stepwise.user_factors, once.user_factors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stepwise.item_factors, once.item_factors, rtol=1e-5, atol=1e-6)


def test_ials_selects_the_best_sweep_and_uses_torch_threads(tiny_split: Split) -> None:
    cfg = RunConfig(device="cpu", progress=False, eval_batch_size=16,
                    overrides={"ials": {"factors": 8, "iterations": 4, "patience": 10, "alpha": 10.0}})
    method, _ = build_method(METHODS.get("ials"), tiny_split, 0, cfg, torch.device("cpu"))
    method.fit()
    info = method.ctx.info
    assert info["backend"] == "implicit.cpu" and method.ctx.efficiency["epochs_run"] == 4 and len(info["valid_curve"]) == 4
    assert info["best_valid"] == pytest.approx(max(v for _, v in info["valid_curve"]), abs=1e-6)
    assert method.ctx.validate()["ndcg@10"] == pytest.approx(info["best_valid"])  # the best sweep's factors are back
    assert method._als_threads == torch.get_num_threads() == 1


@pytest.mark.parametrize("bad", [{"factors": 0}, {"alpha": 0.0}, {"iterations": 0}])
def test_ials_rejects_bad_config(bad: dict, tiny_split: Split) -> None:
    cfg = RunConfig(device="cpu", progress=False, overrides={"ials": bad})
    with pytest.raises(UserError, match="ials"):
        build_method(METHODS.get("ials"), tiny_split, 0, cfg, torch.device("cpu"))
