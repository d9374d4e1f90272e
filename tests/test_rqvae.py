"""RQ-VAE tokenizer and external indices on tiny data written here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bench.errors import UserError
from bench.method import TrainData
from methods.semid.rqvae import (
    RQVAE,
    RQVAEConfig,
    count_level,
    external_index,
    kmeans_init,
    sinkhorn,
    train_rqvae,
)

TINY = {"latent_dim": 4, "hidden": (16,), "levels": 2, "codebook_size": 4, "epochs": 15, "batch_size": 16, "kmeans_iters": 20, "log_every": 5}


def _embeddings(n: int = 60, d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d)) * 3
    x = centres[rng.integers(6, size=n)] + rng.normal(size=(n, d)) * 0.5
    x[1] = x[0]  # exact duplicates collide whatever the tokenizer does
    x[3] = x[2]
    return x.astype(np.float32)


def test_deterministic_for_a_seed():
    x = _embeddings()
    _, a = train_rqvae(x, RQVAEConfig(**TINY, collisions="none"), "cpu", seed=3)
    _, b = train_rqvae(x, RQVAEConfig(**TINY, collisions="none"), "cpu", seed=3)
    _, c = train_rqvae(x, RQVAEConfig(**TINY, collisions="none"), "cpu", seed=4)
    assert np.array_equal(a.codes, b.codes)
    assert a.info["loss_curve"] == b.info["loss_curve"]
    assert a.info["loss_curve"] != c.info["loss_curve"]
    assert a.sizes == (4, 4) and a.source == "rqvae"
    assert [e["epoch"] for e in a.info["loss_curve"]] == [5, 10, 15]
    json.dumps(a.info)


def test_training_lowers_the_reconstruction_loss():
    x = _embeddings()
    _, ids = train_rqvae(x, RQVAEConfig(**{**TINY, "epochs": 40, "log_every": 1}, collisions="none"), "cpu", seed=0)
    curve = [e["recon"] for e in ids.info["loss_curve"]]
    assert curve[-1] < 0.8 * curve[0]  # (the quantization loss first grows as the encoder moves away from the k-means init)


def test_count_level_by_hand():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0], [3, 3]])
    assert count_level(codes).tolist() == [0, 0, 1, 2, 1, 0]


def test_count_makes_every_item_unique():
    x = _embeddings()
    _, plain = train_rqvae(x, RQVAEConfig(**TINY, collisions="none"), "cpu", seed=0)
    _, ids = train_rqvae(x, RQVAEConfig(**TINY, collisions="count"), "cpu", seed=0)
    assert ids.unique_fraction() == 1.0
    assert np.array_equal(ids.codes[:, :2], plain.codes)  # the semantic levels are untouched
    _, counts = np.unique(plain.codes, axis=0, return_counts=True)
    assert ids.sizes == (4, 4, counts.max()) and counts.max() > 1
    assert ids.info["semantic_levels"] == 2 and ids.source == "rqvae+count"
    assert ids.info["before_collision_handling"]["largest_group"] == counts.max()
    assert ids.info["after_collision_handling"]["collision_rate"] == 0.0


def test_sinkhorn_reduces_collisions():
    x = _embeddings()
    _, plain = train_rqvae(x, RQVAEConfig(**TINY, collisions="none"), "cpu", seed=0)
    _, ids = train_rqvae(x, RQVAEConfig(**TINY, collisions="sinkhorn"), "cpu", seed=0)
    assert ids.levels == 2 and ids.source == "rqvae+sinkhorn"
    assert np.array_equal(ids.codes[:, 0], plain.codes[:, 0])  # only the last level moves
    assert ids.unique_fraction() > plain.unique_fraction()
    assert ids.info["sinkhorn_rounds"] >= 1


def test_sinkhorn_plan_has_uniform_marginals():
    cost = torch.rand(5, 8, generator=torch.Generator().manual_seed(0))
    plan = sinkhorn(cost, epsilon=0.05, iters=200)
    assert torch.allclose(plan.sum(1), torch.ones(5, dtype=plan.dtype), atol=1e-6)
    assert torch.allclose(plan.sum(0), torch.full((8,), 5 / 8, dtype=plan.dtype), atol=1e-6)


def _log_domain_plan(cost: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """The plan by the log-domain iteration, written out (rows, then columns, each iteration)."""
    cost = cost.double()
    mid = (cost.max() + cost.min()) / 2
    log_q = -((cost - mid) / (cost.max() - mid + 1e-5)) / epsilon
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, 1, keepdim=True) - math.log(cost.shape[0])
        log_q = log_q - torch.logsumexp(log_q, 0, keepdim=True) - math.log(cost.shape[1])
    return log_q.exp() * cost.shape[0]


@pytest.mark.parametrize("epsilon", [0.05, 0.003, 0.0005])
def test_sinkhorn_matches_the_log_domain_iteration(epsilon):
    # 0.05 and LETTER's 0.003 take the scaling-vector path, 0.0005 (whose kernel would overflow
    # float64) the log domain; each gives the log-domain iteration's plan and assignment
    gen = torch.Generator().manual_seed(1)
    cost = torch.rand(300, 64, generator=gen) + torch.rand(300, 1, generator=gen)
    plan, want = sinkhorn(cost, epsilon, 50), _log_domain_plan(cost, epsilon, 50)
    assert torch.isfinite(plan).all()
    assert torch.allclose(plan, want, rtol=1e-9, atol=1e-12)
    assert torch.equal(plan.argmax(1), want.argmax(1))
    assert torch.allclose(plan.sum(0), torch.full((64,), 300 / 64, dtype=plan.dtype))


def test_sinkhorn_needs_a_positive_epsilon():
    with pytest.raises(UserError, match="sinkhorn_epsilon"):
        train_rqvae(_embeddings(), RQVAEConfig(**TINY, collisions="sinkhorn", sinkhorn_epsilon=0.0))
    with pytest.raises(UserError, match="sinkhorn_epsilon"):
        train_rqvae(_embeddings(), RQVAEConfig(**TINY, collisions="none", train_sinkhorn=True, sinkhorn_epsilon=-0.1))


def test_train_sinkhorn_balances_the_last_level():
    x = torch.from_numpy(_embeddings())
    torch.manual_seed(0)
    model = RQVAE(x.shape[1], RQVAEConfig(**TINY, train_sinkhorn=True))
    with torch.no_grad():  # every residual is nearest to last-level code 0
        model.codebooks[1].copy_(torch.tensor([[0.0] * 4, [50.0] * 4, [60.0] * 4, [70.0] * 4]))
        model.codebooks[1][1:] += torch.randn(3, 4)
    model.eval()
    assert set(model(x)["codes"][:, 1].tolist()) == {0}
    model.train()
    assert len(set(model(x)["codes"][:, 1].tolist())) == 4
    _, ids = train_rqvae(x.numpy(), RQVAEConfig(**{**TINY, "epochs": 2}, train_sinkhorn=True, collisions="none"), "cpu", seed=0)
    assert ids.codes.shape == (60, 2)


def test_kmeans_initialises_codebooks():
    from sklearn.cluster import KMeans

    x = torch.from_numpy(_embeddings())
    cfg = RQVAEConfig(**TINY)
    torch.manual_seed(0)
    model = RQVAE(x.shape[1], cfg)
    facts = kmeans_init(model, x, iters=20, seed=7)
    with torch.no_grad():
        z = model.encoder(x).double().numpy()
    expect = KMeans(n_clusters=4, n_init=1, max_iter=20, random_state=7).fit(z).cluster_centers_
    assert np.allclose(model.codebooks[0].detach().numpy(), expect, atol=1e-5)
    assert len(facts) == 2 and facts[0]["fit_clusters"] == 4
    # train_rqvae uses it: with lr 0 the codebooks stay at the k-means centres of the first level
    trained, ids = train_rqvae(x.numpy(), RQVAEConfig(**{**TINY, "lr": 0.0, "epochs": 1}), "cpu", seed=7)
    with torch.no_grad():
        z = trained.encoder(x).double().numpy()
    expect = KMeans(n_clusters=4, n_init=1, max_iter=20, random_state=7).fit(z).cluster_centers_
    assert np.allclose(trained.codebooks[0].detach().numpy(), expect, atol=1e-5)
    assert ids.info["kmeans_init"][0]["fit_clusters"] == 4


def test_fit_constrained_equals_the_library_and_restores_it():
    """The vectorized read-back changes the speed of k-means-constrained, never its result."""
    from k_means_constrained import KMeansConstrained
    from k_means_constrained import k_means_constrained_ as lib

    from methods.semid.constrained import _STEP, _fast_assignment, fit_constrained

    original = getattr(lib, _STEP)
    points = np.random.default_rng(3).normal(size=(120, 4)) * np.array([1.0, 1.0, 0.1, 3.0])
    options = dict(n_clusters=9, size_min=6, size_max=24, n_init=3, max_iter=10, random_state=5, n_jobs=1)
    with _fast_assignment() as patched:
        assert patched and getattr(lib, _STEP) is not original
    assert getattr(lib, _STEP) is original  # restored on leaving
    fast, plain = fit_constrained(points, **options), KMeansConstrained(**options).fit(points)
    assert getattr(lib, _STEP) is original
    assert np.array_equal(fast.labels_, plain.labels_)
    assert np.array_equal(fast.cluster_centers_, plain.cluster_centers_)
    assert fast.inertia_ == plain.inertia_ and fast.n_iter_ == plain.n_iter_
    assert 6 <= np.bincount(fast.labels_).min() and np.bincount(fast.labels_).max() <= 24


def test_constrained_kmeans_initialises_codebooks_with_bounded_clusters():
    """LETTER's initialisation: k-means-constrained, sizes in [min(n // 2K, 50), 4x that]."""
    from k_means_constrained import KMeansConstrained

    x = torch.from_numpy(_embeddings(n=80))
    cfg = RQVAEConfig(**{**TINY, "codebook_size": 8})
    torch.manual_seed(0)
    model = RQVAE(x.shape[1], cfg)
    facts = kmeans_init(model, x, iters=10, seed=7, method="constrained", n_init=3)
    with torch.no_grad():
        z = model.encoder(x).double().numpy()
    km = KMeansConstrained(n_clusters=8, size_min=5, size_max=20, n_init=3, max_iter=10, random_state=7).fit(z)
    assert np.allclose(model.codebooks[0].detach().numpy(), km.cluster_centers_, atol=1e-5)
    assert facts[0]["method"] == "constrained" and facts[0]["n_init"] == 3
    assert (facts[0]["size_min"], facts[0]["size_max"]) == (5, 20) and 5 <= facts[0]["smallest"] <= facts[0]["largest"] <= 20
    plain = kmeans_init(model, x, iters=10, seed=7)  # plain k-means on the same points: no size bounds
    assert plain[0]["method"] == "kmeans" and "size_min" not in plain[0]
    # train_rqvae takes it from the config; few items (n < 2K): the lower bound is 0
    _, ids = train_rqvae(_embeddings(n=6), RQVAEConfig(**{**TINY, "epochs": 1}, kmeans_init="constrained", kmeans_n_init=2), "cpu", seed=0)
    assert ids.info["kmeans_init"][0]["method"] == "constrained" and ids.info["kmeans_init"][0]["size_min"] == 0
    with pytest.raises(UserError, match="kmeans_init"):
        train_rqvae(_embeddings(), RQVAEConfig(**TINY, kmeans_init="random"))


def test_kmeans_with_fewer_items_than_codes():
    x = _embeddings(n=6)
    _, ids = train_rqvae(x, RQVAEConfig(**{**TINY, "codebook_size": 16, "epochs": 2}), "cpu", seed=0)
    assert ids.info["kmeans_init"][0]["fit_clusters"] <= 6 and ids.unique_fraction() == 1.0


def test_losses_are_means_over_dimensions_and_levels():
    """LETTER's, GRID's and cornac's reductions: MSE over the input dimensions, and the mean
    over levels of per-level MSEs over the latent dimensions (sums would be d or levels x larger)."""
    x = torch.from_numpy(_embeddings())
    torch.manual_seed(0)
    model = RQVAE(x.shape[1], RQVAEConfig(**TINY))
    out = model(x)
    x_hat = model.decoder(out["z_q"])
    assert out["recon"].item() == pytest.approx((x - x_hat).pow(2).mean().item(), rel=1e-5)
    assert out["recon"].item() < 0.5 * (x - x_hat).pow(2).sum(1).mean().item()  # not the sum over the 12 dims
    r0, e0 = out["residuals"][0], model.codebooks[0][out["codes"][:, 0]]
    r1, e1 = out["residuals"][1], model.codebooks[1][out["codes"][:, 1]]
    quant = 1.25 * ((r0 - e0).pow(2).mean() + (r1 - e1).pow(2).mean()) / 2  # codebook + 0.25 commitment, mean of levels
    assert out["quant"].item() == pytest.approx(quant.item(), rel=1e-5)


def test_extra_loss_hook():
    class Extra:
        def __init__(self):
            self.epochs, self.calls, self.seen = [], 0, set()

        def start_epoch(self, epoch, model):
            self.epochs.append(epoch)

        def __call__(self, step):
            self.calls += 1
            self.seen.update(step.index.tolist())
            assert step.z.shape == step.z_q.shape == (len(step.index), 4) and step.codes.shape == (len(step.index), 2)
            return 0.1 * step.z_q.pow(2).sum(1).mean()

    x = _embeddings()
    extra = Extra()
    _, ids = train_rqvae(x, RQVAEConfig(**{**TINY, "epochs": 3}, collisions="none"), "cpu", seed=0, extra_loss=extra)
    assert extra.epochs == [0, 1, 2] and extra.calls == 3 * 4 and extra.seen == set(range(60))
    assert ids.info["final_losses"]["extra"] > 0


def test_bad_option():
    with pytest.raises(UserError, match="collisions"):
        train_rqvae(_embeddings(), RQVAEConfig(**TINY, collisions="dedupe"))


# ---- external index (LETTER's released format) -------------------------------------------
def _p5_folder(tmp_path, index: dict) -> tuple:
    (tmp_path / "datamaps.json").write_text(json.dumps({"id2item": {"1": "A1", "2": "B2", "3": "C3"}}))
    path = tmp_path / "Tiny.letter_index.json"
    path.write_text(json.dumps(index))
    data = TrainData(None, 0, 3, {}, None, "tiny", np.array(["C3", "A1", "B2"]))  # our order differs from P5's
    return path, data


def test_external_index_maps_items(tmp_path):
    index = {"0": ["<a_1>", "<b_2>", "<c_0>"], "1": ["<a_3>", "<b_0>", "<c_0>"], "2": ["<a_1>", "<b_2>", "<c_0>"]}
    path, data = _p5_folder(tmp_path, index)
    ids = external_index(path, data)
    # LETTER item 0 = P5 item 1 = A1 = our item 1; LETTER 2 = P5 3 = C3 = our item 0
    assert ids.codes.tolist() == [[1, 2, 0], [1, 2, 0], [3, 0, 0]]
    assert ids.sizes == (256, 256, 256) and ids.source == "external:Tiny.letter_index.json"
    assert ids.info["largest_group"] == 2
    assert external_index(path, data, codebook_size=None).sizes == (4, 3, 1)


def test_external_index_missing_or_extra_item(tmp_path):
    path, data = _p5_folder(tmp_path, {"0": ["<a_1>", "<b_2>"], "1": ["<a_3>", "<b_0>"]})
    with pytest.raises(UserError, match=r"Tiny\.letter_index\.json.*1 items .* no ID, e\.g\. C3"):
        external_index(path, data)
    path, data = _p5_folder(tmp_path, {"0": ["<a_1>"], "1": ["<a_3>"], "2": ["<a_0>"], "3": ["<a_2>"]})
    with pytest.raises(UserError, match=r"Tiny\.letter_index\.json.*'3'"):
        external_index(path, data)
    path, data = _p5_folder(tmp_path, {"0": ["<b_1>"], "1": ["<a_3>"], "2": ["<a_0>"]})
    with pytest.raises(UserError, match="level 0"):
        external_index(path, data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_deterministic_and_resident():
    x = _embeddings()
    model, a = train_rqvae(x, RQVAEConfig(**TINY, collisions="sinkhorn"), "cuda", seed=1)
    _, b = train_rqvae(x, RQVAEConfig(**TINY, collisions="sinkhorn"), "cuda", seed=1)
    assert next(model.parameters()).device.type == "cuda"
    assert np.array_equal(a.codes, b.codes) and a.info["loss_curve"] == b.info["loss_curve"]
