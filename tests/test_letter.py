"""LETTER's tokenizer regularizers and the letter-tiger / tiger-cr / tiger-dr / tiger-cr-dr configurations."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.config import apply_overrides
from bench.data.canonical import canonicalize
from bench.errors import UserError
from bench.runner import build_method, execute
from bench.split import Split, leave_one_out
from methods import METHODS
from methods.letter import LetterConfig
from methods.semid.regularize import ClusterPartners, LetterRegularizer, collaborative_loss, diversity_loss, equal_size_clusters
from methods.semid.rqvae import RQVAEConfig, train_rqvae
from tests.conftest import make_raw

pytestmark = pytest.mark.usefixtures("single_thread")
VARIANTS = ("letter-tiger", "letter-base", "tiger-cr", "tiger-dr", "tiger-cr-dr")


def test_collaborative_loss_prefers_each_item_its_own_cf_embedding() -> None:
    g = torch.Generator().manual_seed(0)
    cf = torch.randn(16, 8, generator=g)
    matched = collaborative_loss(cf.clone(), cf)
    shuffled = collaborative_loss(cf[torch.randperm(16, generator=g)], cf)
    assert matched + 5 < shuffled  # about 0.5 vs 10 here
    # exact value: cross-entropy of z_q @ cf.T towards the diagonal
    z = torch.randn(5, 8, generator=g)
    logits = z @ cf[:5].T
    assert collaborative_loss(z, cf[:5]) == pytest.approx(float((logits.logsumexp(1) - logits.diag()).mean()), rel=1e-5)
    # its gradient pulls z towards its own CF embedding
    z.requires_grad_(True)
    collaborative_loss(z, cf[:5]).backward()
    assert float(torch.cosine_similarity(-z.grad, cf[:5]).mean()) > 0


def test_diversity_loss_excludes_self_and_pulls_codeword_to_its_partner() -> None:
    g = torch.Generator().manual_seed(1)
    book = torch.randn(6, 4, generator=g)
    codes, partners = torch.tensor([0, 0, 3]), torch.tensor([1, 2, 5])
    sim = book[codes] @ book.T
    sim[torch.arange(3), codes] = -torch.inf
    expected = (sim.logsumexp(1) - sim[torch.arange(3), partners]).mean()
    assert diversity_loss(book, codes, partners) == pytest.approx(float(expected), rel=1e-5)
    with_self = book[codes] @ book.T  # the same cross-entropy with the self term kept differs
    assert abs(float((with_self.logsumexp(1) - with_self[torch.arange(3), partners]).mean()) - float(expected)) > 1e-3
    # gradient steps move codeword 0 towards its partner 1 (and away from the rest)
    book = torch.randn(6, 4, generator=g).requires_grad_(True)
    before = torch.cosine_similarity(book[0], book[1], 0).item()
    opt = torch.optim.SGD([book], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        diversity_loss(book, torch.tensor([0]), torch.tensor([1])).backward()
        opt.step()
    after = torch.cosine_similarity(book[0], book[1], 0).item()
    assert after > before + 0.1
    # no partner (-1) -> left out; none at all -> zero
    book = book.detach()
    assert diversity_loss(book, torch.tensor([0, 2]), torch.tensor([1, -1])) == pytest.approx(
        float(diversity_loss(book, torch.tensor([0]), torch.tensor([1]))), rel=1e-6)  # fmt: skip
    assert float(diversity_loss(book, torch.tensor([0]), torch.tensor([-1]))) == 0.0


def test_constrained_kmeans_gives_equal_size_clusters_of_near_points() -> None:
    rng = np.random.default_rng(0)
    labels = equal_size_clusters(rng.standard_normal((256, 8)), 10, seed=0)
    assert sorted(set(np.bincount(labels).tolist())) == [25, 26] and len(np.bincount(labels)) == 10
    # three separated blobs of 4 points: the clusters are the blobs
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.repeat(centres, 4, 0) + rng.normal(0, 0.1, (12, 2))
    labels = equal_size_clusters(points, 3, seed=0)
    assert all(len(set(labels[4 * b : 4 * b + 4].tolist())) == 1 for b in range(3)) and len(set(labels.tolist())) == 3
    with pytest.raises(UserError, match="K=5"):
        equal_size_clusters(points[:4], 5, seed=0)


def test_cluster_partners_are_other_members_of_the_same_cluster() -> None:
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 1, 3])  # code 8 is alone in cluster 3
    partners = ClusterPartners(labels)
    gen = torch.Generator().manual_seed(0)
    codes = torch.tensor([0, 1, 3, 8] * 200)
    drawn = partners.draw(codes, gen)
    for c in (0, 1, 3):
        got = set(drawn[codes == c].tolist())
        assert got == {int(o) for o in torch.nonzero(labels == labels[c]).flatten() if o != c}  # every other member, never itself
    assert set(drawn[codes == 8].tolist()) == {-1}


def test_regularizers_change_the_tokenizer_as_intended() -> None:
    """alpha > 0 aligns the quantized latents with the CF embeddings; beta > 0 re-clusters each
    level every epoch into equal groups. Same data and seed otherwise."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    cf = torch.from_numpy(rng.standard_normal((64, 8)).astype(np.float32))
    cfg = RQVAEConfig(latent_dim=8, hidden=(32,), levels=2, codebook_size=8, epochs=30, batch_size=32, log_every=10)

    def train(alpha: float, beta: float):
        reg = LetterRegularizer(alpha, beta, cf, clusters=2, gen=torch.Generator().manual_seed(0), seed=0)
        model, ids = train_rqvae(x, cfg, "cpu", seed=0, extra_loss=reg)
        with torch.no_grad():
            _, z_q, _ = model.quantize(model.encoder(torch.from_numpy(x)))
        return float(collaborative_loss(z_q, cf)), reg.facts(cfg.epochs), ids

    plain, _, plain_ids = train(0.0, 0.0)
    aligned, facts, _ = train(1.0, 0.0)
    assert aligned < plain - 0.1
    assert facts["final_terms"]["collaborative"] > 0 and facts["final_terms"]["diversity"] == 0.0 and facts["kmeans_runs"] == 0
    # batches of 32: the collaborative term's chance level is ln 32, and training takes it below
    assert facts["final_terms"]["collaborative_chance"] == pytest.approx(np.log(32), rel=1e-6)
    assert facts["final_terms"]["collaborative"] < facts["first_terms"]["collaborative"] and facts["final_terms"]["collaborative"] < np.log(32) - 0.1
    _, facts, ids = train(0.0, 1.0)
    assert facts["kmeans_runs"] == cfg.epochs and facts["cluster_sizes_last"] == [[4, 4], [4, 4]]
    assert facts["final_terms"]["diversity"] > 0
    assert not np.array_equal(ids.codes, plain_ids.codes)


def test_tokenizer_objective_is_on_letters_scale() -> None:
    """The loss train_rqvae minimises with LETTER's regularizers is LETTER's:
    MSE(x_hat, x) + mean over levels (MSE codebook + 0.25 MSE commitment) + alpha CF + beta diversity,
    every MSE a mean over dimensions (with sums, recon and quant here would be 16x and 8x larger).
    One full-batch epoch at lr 0, so the model after training is the one that made the loss."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 16)).astype(np.float32)
    cf = torch.from_numpy(rng.standard_normal((48, 8)).astype(np.float32))
    cfg = RQVAEConfig(latent_dim=8, hidden=(32,), levels=2, codebook_size=8, epochs=1, batch_size=0, lr=0.0, log_every=1)
    reg = LetterRegularizer(0.1, 1e-2, cf, clusters=2, gen=torch.Generator().manual_seed(0), seed=0)
    model, ids = train_rqvae(x, cfg, "cpu", seed=0, extra_loss=reg)
    terms = reg.facts(cfg.epochs)["final_terms"]
    with torch.no_grad():
        xt = torch.from_numpy(x)
        z = model.encoder(xt)
        codes, z_q, residuals = model.quantize(z)
        recon = torch.nn.functional.mse_loss(model.decoder(z_q), xt)
        quant = sum(1.25 * torch.nn.functional.mse_loss(r, book[c]) for r, book, c in zip(residuals, model.codebooks, codes.unbind(1))) / 2
        cr = collaborative_loss(z_q, cf)
    got = ids.info["final_losses"]
    assert got["recon"] == pytest.approx(float(recon), rel=1e-4) and got["quant"] == pytest.approx(float(quant), rel=1e-4)
    assert terms["collaborative"] == pytest.approx(float(cr), rel=1e-4) and terms["diversity"] > 0
    assert got["loss"] == pytest.approx(float(recon + quant + 0.1 * cr + 1e-2 * terms["diversity"]), rel=1e-4)


def _swap_targets(raw):
    """The same raw data with each user's last two items (validation and test targets) changed to
    other items the user has not seen."""
    seqs = {}
    for user, seq in raw.sequences.items():
        if len(seq) < 3:
            seqs[user] = list(seq)
            continue
        others = [i for i in sorted(raw.item_text) if i not in seq]
        seqs[user] = list(seq[:-2]) + others[:2]
    return dataclasses.replace(raw, sequences=seqs)


def test_cf_embeddings_read_training_interactions_only(run_cfg) -> None:
    raw = make_raw()
    a, b = leave_one_out(canonicalize("tiny", raw)), leave_one_out(canonicalize("tiny", _swap_targets(raw)))
    assert np.array_equal(a.train.items, b.train.items) and np.array_equal(a.train.offsets, b.train.offsets)
    assert not np.array_equal(a.test.targets, b.test.targets) and not np.array_equal(a.valid.targets, b.valid.targets)
    cfg = run_cfg()
    emb = {}
    for key, split in (("a", a), ("b", b)):
        method, _ = build_method(METHODS.get("letter-tiger"), split, 0, cfg, torch.device("cpu"))
        emb[key], facts = method.cf_embeddings()
    assert emb["a"].shape == (a.n_items, cfg.overrides["letter-tiger"]["rq_latent_dim"])
    assert torch.equal(emb["a"], emb["b"]) and len(facts["loss_curve"]) == cfg.overrides["letter-tiger"]["cf_epochs"]
    # a change in the training interactions does change them
    items = a.train.items.copy()
    items[0] = (items[0] + 1) % a.n_items
    c = dataclasses.replace(a, train=dataclasses.replace(a.train, items=items))
    method, _ = build_method(METHODS.get("letter-tiger"), c, 0, cfg, torch.device("cpu"))
    assert not torch.equal(method.cf_embeddings()[0], emb["a"])


def test_variants_differ_only_in_their_flags() -> None:
    base = LetterConfig()
    assert (base.rq_levels, base.rq_codebook_size, base.rq_collisions, base.rq_train_sinkhorn, base.clusters) == (4, 256, "sinkhorn", True, 10)
    expected = {"letter-tiger": (0.02, 1e-4, 1.0), "letter-base": (0.0, 0.0, 1.0), "tiger-cr": (0.02, 0.0, 1.0), "tiger-dr": (0.0, 1e-4, 1.0), "tiger-cr-dr": (0.02, 1e-4, 1.0)}
    for name, flags in expected.items():
        cls = METHODS.get(name)
        cfg = cls.Config()
        assert isinstance(cfg, LetterConfig) and (cfg.alpha, cfg.beta, cfg.tau) == flags
        differing = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)}
        assert differing <= {"alpha", "beta", "tau"}
        rq = cfg.rqvae_config()
        assert (rq.levels, rq.collisions, rq.train_sinkhorn, rq.sinkhorn_epsilon) == (4, "sinkhorn", True, 0.003)
        assert (rq.kmeans_init, rq.kmeans_n_init, rq.kmeans_iters) == ("constrained", 10, 10)  # LETTER's initialisation
    tiger = METHODS.get("tiger").Config().rqvae_config()  # TIGER keeps plain k-means
    assert (tiger.kmeans_init, tiger.kmeans_n_init, tiger.kmeans_iters) == ("kmeans", 1, 100)


def test_letter_alias_and_base_row() -> None:
    assert METHODS.canonical("letter") == "letter-tiger" and METHODS.get("letter") is METHODS.get("letter-tiger")
    assert METHODS.aliases()["letter"] == "letter-tiger" and "letter" not in METHODS.names()
    base = METHODS.get("letter-base")
    assert base.name == "letter-base" and "Table 2 row 0" in base.description


def test_base_row_trains_no_regularizer(tiny_split: Split, run_cfg) -> None:
    rec = json.loads(execute(METHODS.get("letter-base"), tiny_split, 0, run_cfg()).read_text())
    tok = rec["training"]["tokenizer"]
    assert "regularizers" not in tok and "cf_embeddings" not in tok  # alpha = beta = 0: no CF SASRec, no re-clustering
    assert tok["rqvae"]["collisions"] == "sinkhorn" and rec["codebook"]["semantic_levels"] == run_cfg().overrides["letter-base"]["rq_levels"]


def test_letter_config_checks_its_options() -> None:
    with pytest.raises(UserError, match="clusters"):
        apply_overrides(LetterConfig(), {"rq_codebook_size": "8", "clusters": "5"}, "letter-tiger")
    with pytest.raises(UserError, match="alpha"):
        apply_overrides(LetterConfig(), {"alpha": "-1"}, "letter-tiger")
    with pytest.raises(UserError, match="rq_kmeans_init"):
        apply_overrides(LetterConfig(), {"rq_kmeans_init": "random"}, "letter-tiger")
    with pytest.raises(UserError, match="cf_loss"):
        apply_overrides(LetterConfig(), {"cf_loss": "mse"}, "letter-tiger")
    cfg = apply_overrides(LetterConfig(), {"rq_latent_dim": "16", "cf_epochs": "3"}, "letter-tiger")
    assert cfg.cf_config().hidden == 16 and cfg.cf_config().epochs == 3  # CF embeddings have the latent's size


def test_letter_record_carries_regularizer_facts(tiny_split: Split, run_cfg) -> None:
    cfg = run_cfg()
    rec = json.loads(execute(METHODS.get("letter-tiger"), tiny_split, 0, cfg).read_text())
    tiny = cfg.overrides["letter-tiger"]
    assert {k: rec["config"][k] for k in ("alpha", "beta", "tau", "clusters")} == {"alpha": 0.02, "beta": 1e-4, "tau": 1.0, "clusters": 2}
    tok = rec["training"]["tokenizer"]
    assert tok["regularizers"]["kmeans_runs"] == tiny["rq_epochs"]
    assert tok["regularizers"]["cluster_sizes_last"] == [[2, 2]] * tiny["rq_levels"]
    assert [c["epoch"] for c in tok["regularizers"]["curve"]][-1] == tiny["rq_epochs"] and "collaborative_chance" in tok["regularizers"]["curve"][0]
    assert tok["cf_embeddings"]["epochs"] == tiny["cf_epochs"] and tok["rqvae"]["collisions"] == "sinkhorn"
    assert [f["method"] for f in tok["rqvae"]["kmeans_init"]] == ["constrained"] * tiny["rq_levels"]
    assert rec["codebook"]["semantic_levels"] == tiny["rq_levels"]


def test_batch_log_shows_tokenizer_progress_with_the_cf_term_and_its_chance(tiny_split: Split, run_cfg, capsys) -> None:
    cfg = run_cfg(log=True)
    execute(METHODS.get("letter-tiger"), tiny_split, 0, cfg)
    epochs = cfg.overrides["letter-tiger"]["rq_epochs"]
    lines = [line for line in capsys.readouterr().err.splitlines() if "rqvae epoch" in line]
    assert lines and f"rqvae epoch {epochs}/{epochs}" in lines[-1]
    assert "recon" in lines[-1] and "collaborative " in lines[-1] and "collaborative_chance" in lines[-1]


def test_cpu_presets_carry_the_chosen_weights_of_the_regularizers_each_configuration_uses() -> None:
    from methods import METHODS
    from methods.letter import CPU_WEIGHTS

    for name in ("letter", "letter-tiger", "tiger-cr", "tiger-dr", "tiger-cr-dr", "letter-base", "bloger-letter"):
        cls = METHODS.get(name)
        defaults, preset = cls.Config(), cls.presets["cpu"]
        for weight, chosen in CPU_WEIGHTS.items():
            expected = chosen if getattr(defaults, weight) > 0 else 0.0  # an ablation's switched-off term stays off
            assert preset.get(weight, getattr(defaults, weight)) == expected, (name, weight)
