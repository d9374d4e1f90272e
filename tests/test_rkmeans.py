"""RQ-KMeans semantic IDs (residual k-means, no trained quantizer) and tiger-rkmeans."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.config import apply_overrides, resolve_config
from bench.errors import UserError
from bench.split import Split
from methods import METHODS
from methods.semid.beam import PrefixTrie
from methods.semid.rkmeans import residual_kmeans
from methods.semid.rqvae import RQVAEConfig, train_rqvae
from methods.tiger import TIGERConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def _embeddings(n: int = 80, d: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, d)) * 3
    x = centres[rng.integers(5, size=n)] + rng.normal(size=(n, d)) * 0.4
    x[1] = x[0]  # exact duplicates: the same codes whatever the clustering
    x[7] = x[6]
    return x.astype(np.float32)


CFG = dict(method="rkmeans", levels=2, codebook_size=4, kmeans_iters=50)


def test_residual_kmeans_codes_are_the_nearest_centres_of_the_residuals() -> None:
    x = _embeddings().astype(np.float64)
    codes, last, books, facts = residual_kmeans(x, 3, 4, 50, 1, seed=0)
    r = x
    for level, book in enumerate(books):
        d = ((r[:, None, :] - book[None]) ** 2).sum(-1)
        assert np.array_equal(codes[:, level], d.argmin(1))
        if level == len(books) - 1:
            np.testing.assert_allclose(last, r)
        r = r - book[codes[:, level]]
    # each level's residual is smaller than the one before: the levels refine
    assert np.linalg.norm(r) < np.linalg.norm(x - books[0][codes[:, 0]]) < np.linalg.norm(x)
    assert [f["level"] for f in facts] == [0, 1, 2]


@pytest.mark.parametrize("collisions", ["count", "sinkhorn"])
def test_rkmeans_ids_unique_and_decodable_after_collision_handling(collisions: str) -> None:
    x = _embeddings()
    _, ids = train_rqvae(x, RQVAEConfig(**CFG, collisions=collisions), "cpu", seed=1)
    n = len(x)
    before = ids.info["before_collision_handling"]
    assert before["unique_ids"] < n  # 80 items in 16 two-level tuples must collide
    trie = PrefixTrie.build(ids)
    leaf = trie.leaf_of(__import__("torch").from_numpy(ids.codes)).numpy()
    assert (leaf >= 0).all()  # every ID decodes through the trie
    items_of_leaf = [trie.leaf_items[trie.leaf_ptr[l] : trie.leaf_ptr[l + 1]].tolist() for l in leaf]
    if collisions == "count":
        assert ids.source == "rkmeans+count" and ids.levels == 3 and ids.unique_fraction() == 1.0
        assert all(items == [i] for i, items in enumerate(items_of_leaf))  # one item per ID: each decodes to itself
        assert ids.info["after_collision_handling"]["collision_rate"] == 0.0
    else:  # Sinkhorn re-assigns the last level; exact duplicates (items 0/1, 6/7) may keep sharing an ID
        assert ids.source == "rkmeans+sinkhorn" and ids.levels == 2
        assert all(i in items for i, items in enumerate(items_of_leaf))
        after = ids.info["after_collision_handling"]
        assert after["unique_ids"] > before["unique_ids"]


def test_rkmeans_is_deterministic_for_a_seed() -> None:
    x = _embeddings()
    _, a = train_rqvae(x, RQVAEConfig(**CFG), "cpu", seed=3)
    _, b = train_rqvae(x, RQVAEConfig(**CFG), "cpu", seed=3)
    seeds = [train_rqvae(x, RQVAEConfig(**CFG, kmeans_n_init=1), "cpu", seed=s)[1].codes for s in range(4, 9)]
    assert np.array_equal(a.codes, b.codes) and a.info["config"] == b.info["config"]
    assert any(not np.array_equal(a.codes, c) for c in seeds)  # the seed reaches k-means++
    assert a.info["config"]["method"] == "rkmeans" and "epochs" not in a.info["config"]
    json.dumps(a.info)


def test_rkmeans_refuses_bad_input_and_extra_losses() -> None:
    with pytest.raises(UserError, match="rq method"):
        RQVAEConfig(method="kmeans").check()
    with pytest.raises(UserError, match="finite"):
        train_rqvae(np.full((4, 3), np.nan, np.float32), RQVAEConfig(**CFG))
    with pytest.raises(UserError, match="no extra tokenizer loss"):
        train_rqvae(_embeddings(), RQVAEConfig(**CFG), extra_loss=lambda step: 0.0)
    with pytest.raises(UserError, match="rq_method"):
        apply_overrides(TIGERConfig(), {"rq_method": "pq"}, "tiger")
    with pytest.raises(UserError, match="rq_method"):
        resolve_config(METHODS.get("bloger"), "", {"rq_method": "rkmeans"})


def test_tiger_rkmeans_through_the_harness(tiny_split: Split, run_cfg) -> None:
    from bench.runner import execute

    cfg = run_cfg()
    rec = json.loads(execute(METHODS.get("tiger-rkmeans"), tiny_split, 0, cfg).read_text())
    assert rec["config"]["rq_method"] == "rkmeans" and rec["codebook"]["source"] == "rkmeans+count"
    assert rec["codebook"]["collision_rate"] == 0.0 and rec["efficiency"]["tokenizer_seconds"] > 0
    assert "rkmeans" in rec["training"]["tokenizer"] and "loss_curve" not in rec["training"]["tokenizer"]["rkmeans"]
    tiger, rk = resolve_config(METHODS.get("tiger"), "cpu"), resolve_config(METHODS.get("tiger-rkmeans"), "cpu")
    same = [k for k in ("d_model", "layers", "heads", "d_ff", "batch_size", "lr", "epochs", "patience", "beam", "valid_beam")]
    assert all(getattr(tiger, k) == getattr(rk, k) for k in same) and rk.rq_method == "rkmeans"
