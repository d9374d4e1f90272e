"""BLOGER (arXiv 2510.21242): bi-level optimization of the semantic-ID tokenizer and the recommender.

The tokenizer phi minimises L_rec(T_phi, R_theta*) + lambda L_token(T_phi), theta* minimising
L_rec(T_phi, R_theta): the IDs are trained for the recommender's own loss.

Tokenizer: the RQ-VAE of :mod:`methods.semid.rqvae` (4 levels x 256 codes, 32 dims), pre-trained
first exactly as TIGER's (``bloger-letter``: with LETTER's regularizers, :mod:`methods.letter`).
IDs have no counting level (the vocabulary must not change while the tokenizer trains):
colliding items are re-assigned on the last level by Sinkhorn (``rq_collisions = "sinkhorn"``)
and any left then take the nearest free last-level code of their prefix
(:func:`methods.semid.rqvae.unique_last_level`), so every ID is unique.

Recommender: TIGER's (:mod:`methods.semid.generative`).  Every code token it reads, in the
history and in the decoder input of the target, is embedded as E[hard] + (pE - sg(pE)), with p
the item's soft code probabilities at that level, softmax(-||r_l - e_l,c||^2)
(:meth:`RQVAE.code_probs`): the value is the plain lookup, the gradient reaches the tokenizer
through p.  (The released code writes (E[hard] - pE).detach() + pE, which sends the token
embeddings no gradient through the lookup; this follows the formula of the issue and the paper.)
Between tokenizer updates p does not change, so it is computed once per update for all items.

Every ``meta_every`` recommender steps (0 = once per epoch, as the released code, which takes
the epoch's last batch; here its last full batch), on that step's batch:

1. theta' = theta - eta grad_theta L_rec(theta, phi), the graph kept (second order),
   eta = ``virtual_lr`` (0 = the recommender's ``lr``, as the released code);
2. G_rec = d L_rec(theta'(phi), phi) / d phi, with a functional forward of theta'
   (``torch.func.functional_call``; attention through PyTorch's math kernel, the fused ones
   have no double backward);
3. G_token = d L_token / d phi, the tokenizer's own loss (reconstruction + quantization, plus
   LETTER's regularizers for ``bloger-letter``) on the batch's distinct items;
4. gradient surgery per parameter tensor (``surgery``): where <G_rec, G_token> < 0,
   G_rec <- G_rec - <G_rec, G_token> / ||G_token||^2 G_token ("tensor", the paper); "row"
   projects with the row-normalized G_token and a whole-tensor dot product as the released
   code does (the same for 1-D tensors only); "off" leaves G_rec alone;
5. AdamW (``tokenizer_lr`` 1e-4, ``tokenizer_weight_decay`` 1e-4) on lambda G_token + G_rec
   (``token_weight`` = lambda, 0.5);
6. the IDs, the trie and the soft probabilities are rebuilt from the updated tokenizer.

Each update is recorded in the ``training`` section (``bloger.updates``): the fraction of the
tokenizer's parameter tensors (those both gradients reach) whose gradients conflict, the
losses, how many items changed ID, first-level use and entropy.  The codebook utilization of
the pre-trained tokenizer's IDs is ``bloger.codebook_before``; the final IDs are an artifact
the harness measures (``codebook``).  A checkpoint holds the recommender, the tokenizer and
the IDs (:class:`BiLevelState`): early stopping restores all three.

Scale: L_token is the RQ-VAE loss exactly as :mod:`methods.semid.rqvae` reduces it; lambda
weighs it against L_rec as in the released code only where those reductions are means (the
released code averages the reconstruction error over the input dimensions).

Differences from the released code: IDs are made unique (it kept colliding items under one
ID); the once-per-epoch update takes the epoch's last full batch, not its last batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.codebook import utilization
from bench.config import zero_allowed
from bench.errors import UserError
from bench.semantic_ids import SemanticIDs
from methods.letter import LetterConfig, cf_item_embeddings, cpu_preset
from methods.semid.regularize import LetterRegularizer
from methods.semid.generative import CPU_RECOMMENDER, N_SPECIAL, TrainBatch
from methods.semid.rqvae import RQVAE, Step, collision_stats, resolve_collisions, train_rqvae, unique_last_level
from methods.tiger import TIGER, TIGERConfig

SURGERY = ("tensor", "row", "off")


@dataclass
class BLOGERConfig(TIGERConfig):
    # tokenizer: 4 x 256 codes of 32 dims, no counting level (a fixed vocabulary)
    rq_levels: int = 4
    rq_collisions: str = "sinkhorn"
    # recommender: the released settings (AdamW lr 5e-4, weight decay 1e-2, batch 256, constant lr)
    batch_size: int = 256
    lr_schedule: str = "constant"
    # the bi-level step
    meta_every: int = 0  # recommender steps between tokenizer updates; 0 = once per epoch
    token_weight: float = 0.5  # lambda, the weight of the tokenizer's own loss
    surgery: str = "tensor"  # tensor (paper) | row (released code) | off
    tokenizer_lr: float = zero_allowed(1e-4)
    tokenizer_weight_decay: float = 1e-4
    virtual_lr: float = 0.0  # eta of the lookahead step; 0 = lr

    def __post_init__(self):
        super().__post_init__()
        if self.surgery not in SURGERY:
            raise UserError(f"option surgery: expected one of {', '.join(SURGERY)}, got {self.surgery!r}")
        if self.rq_method != "rqvae":
            raise UserError("option rq_method: BLOGER trains its tokenizer with the recommender; expected 'rqvae'")
        if self.rq_collisions == "count":
            raise UserError("option rq_collisions: 'count' adds a level whose size changes as the tokenizer trains; "
                            "expected 'sinkhorn' or 'none' (leftover collisions take free last-level codes)")  # fmt: skip
        if self.meta_every < 0:
            raise UserError(f"option meta_every: expected 0 (once per epoch) or a number of steps, got {self.meta_every}")
        for name in ("token_weight", "tokenizer_lr", "tokenizer_weight_decay", "virtual_lr"):
            if getattr(self, name) < 0:
                raise UserError(f"option {name}: expected a number >= 0, got {getattr(self, name)}")


@dataclass
class BLOGERNoGSConfig(BLOGERConfig):
    surgery: str = "off"


@dataclass
class BLOGERLetterConfig(BLOGERConfig, LetterConfig):
    """BLOGER's settings (they come first) with LETTER's tokenizer options: ``alpha``, ``beta``,
    ``clusters``, ``cf_*`` and the last-level Sinkhorn of its training."""


# ``cpu`` preset (docs/protocol.md §5).  Measured on Scientific (2-epoch capped run at the earlier
# 4 x 16-head, 24-epoch settings, one thread, the process getting ~41% of a shared core): ~150 s of
# CPU per epoch (tiger alike), tokenizer pre-training ~370 s of CPU for 1,000 epochs, each tokenizer
# update 3-4 s, a validation at beam 10 ~20 s.
# The shared cpu recommender (generative.CPU_RECOMMENDER, the same as tiger's preset, so the two
# train alike) with TIGER's cosine schedule and tiger's 500 tokenizer pre-training epochs.
CPU_PRESET: dict[str, Any] = {**CPU_RECOMMENDER, "lr_schedule": "cosine", "rq_epochs": 500}


def project_conflict(g_rec: torch.Tensor, g_token: torch.Tensor, surgery: str) -> torch.Tensor:
    """``g_rec`` with its component along ``g_token`` removed ("tensor"), the released code's
    row-normalized version ("row"), or unchanged ("off"); used where the two conflict."""
    if surgery == "tensor":
        return g_rec - (g_rec * g_token).sum() / g_token.pow(2).sum() * g_token
    if surgery == "row":
        unit = F.normalize(g_token, p=2, dim=-1)
        return g_rec - (g_rec * unit).sum() * unit
    return g_rec


def combine_gradients(g_token: list[torch.Tensor | None], g_rec: list[torch.Tensor | None], weight: float,
                      surgery: str) -> tuple[list[torch.Tensor | None], dict[str, Any]]:  # fmt: skip
    """Per parameter tensor: ``weight`` g_token + g_rec, g_rec projected off g_token where their
    dot product is negative (:func:`project_conflict`).  Returns the gradients and the count of
    conflicting tensors among those both gradients reach."""
    out: list[torch.Tensor | None] = []
    shared = conflicting = 0
    for gt, gr in zip(g_token, g_rec):
        if gr is None or gt is None:
            out.append(gr if gt is None else weight * gt)
            continue
        shared += 1
        if float((gr * gt).sum()) < 0:
            conflicting += 1
            gr = project_conflict(gr, gt, surgery)
        out.append(weight * gt + gr)
    return out, {"conflicting": conflicting, "tensors": shared, "conflict_fraction": conflicting / max(1, shared)}


class BiLevelState(nn.Module):
    """What a BLOGER checkpoint holds: the recommender, the tokenizer, the IDs and how many
    tokenizer updates made them."""

    def __init__(self, recommender: nn.Module, tokenizer: RQVAE, codes: torch.Tensor):
        super().__init__()
        self.recommender, self.tokenizer = recommender, tokenizer
        self.register_buffer("codes", codes.clone())
        self.register_buffer("version", torch.zeros((), dtype=torch.long))


class BLOGER(TIGER):
    name = "bloger"
    description = "BLOGER: RQ-VAE IDs (4x256) trained with TIGER's recommender by a bi-level meta-gradient with gradient surgery"
    Config = BLOGERConfig
    presets = {"cpu": CPU_PRESET}

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.tokenizer: RQVAE | None = None
        self.regularizer = None
        self._live = False  # soft probabilities from the tokenizer (with its gradient) instead of the cache
        self.updates = 0

    # ---- the tokenizer ----------------------------------------------------------------------
    def make_regularizer(self, seed: int) -> tuple[Any, dict[str, Any]]:
        """An extra tokenizer loss (``extra_loss`` of :func:`train_rqvae`) and its facts; none here."""
        return None, {}

    def build_ids(self) -> SemanticIDs:
        emb = self.embeddings()
        seed = self.ctx.seed_for(self.name, "rqvae")
        self.regularizer, facts = self.make_regularizer(seed)
        rq = self.config.rqvae_config()
        # the pre-trained tokenizer: a resumed run takes it from its checkpoint (the weights it trained on to are the loop's)
        self.tokenizer, pre = self.ctx.stage("tokenizer", lambda: train_rqvae(emb, rq, self.device, seed, extra_loss=self.regularizer))
        self.tokenizer.eval()
        self.item_x = torch.from_numpy(np.asarray(emb, dtype=np.float32)).to(self.device)
        if self.regularizer is not None:
            facts["regularizers"] = self.regularizer.facts(rq.epochs)
        ids = self.tokenize()
        self.ctx.info["tokenizer"] = {"rqvae": {k: v for k, v in pre.info.items() if k != "loss_curve"}, **facts}
        self.ctx.info["bloger"] = {"codebook_before": utilization(ids), "updates": []}
        return ids

    def tokenizer_stage(self) -> SemanticIDs:
        """:meth:`build_ids` runs on resuming too (it sets up the tokenizer, its inputs and the
        regularizer); the pre-training inside it is the stage a resumed run does not redo."""
        return self.build_ids()

    def extra_state(self) -> dict[str, Any]:
        """Besides the recommender's loop (which holds :class:`BiLevelState`: recommender,
        tokenizer, codes): the tokenizer's optimizer, the update count, the current IDs and the
        regularizer (its clusters and generator)."""
        return {**super().extra_state(), "tokenizer_optimizer": self.tokenizer_opt.state_dict(), "updates": self.updates,
                "semantic_ids": self.semantic_ids, "regularizer": self.regularizer}  # fmt: skip

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.tokenizer_opt.load_state_dict(state["tokenizer_optimizer"])
        self.updates, self.regularizer = state["updates"], state["regularizer"]
        self.set_ids(state["semantic_ids"])
        self.refresh_probs()

    @torch.no_grad()
    def tokenize(self) -> SemanticIDs:
        """Every item's ID from the current tokenizer: nearest codes, collisions resolved, unique."""
        rq, tok = self.config.rqvae_config(), self.tokenizer
        codes, last = tok.encode(self.item_x)
        before = collision_stats(codes)
        codes, sizes, source, facts = resolve_collisions(codes, last, tok.codebooks[-1], rq)
        codes, moved = unique_last_level(codes, last, tok.codebooks[-1])
        info = {"semantic_levels": rq.levels, "before_collision_handling": before, **facts,
                "moved_to_free_codes": moved, "after_collision_handling": collision_stats(codes)}  # fmt: skip
        return SemanticIDs(codes, sizes, source + "+free", info)

    @torch.no_grad()
    def refresh_probs(self) -> None:
        """The soft code probabilities of every item under the current tokenizer and IDs."""
        codes = torch.from_numpy(self.semantic_ids.codes).to(self.device)
        n, chunk = len(codes), 4096
        self.probs = torch.cat([self.tokenizer.code_probs(self.item_x[s : s + chunk], codes[s : s + chunk]) for s in range(0, n, chunk)])

    def prepare(self) -> None:
        super().prepare()
        cfg = self.config
        self.state = BiLevelState(self.model, self.tokenizer, torch.from_numpy(self.semantic_ids.codes).to(self.device))
        self.tokenizer_opt = torch.optim.AdamW(self.tokenizer.parameters(), lr=cfg.tokenizer_lr, weight_decay=cfg.tokenizer_weight_decay)
        self.refresh_probs()
        self.ctx.efficiency["tokenizer_update_seconds"] = 0.0

    # ---- the recommender's input ------------------------------------------------------------
    def straight_through(self, soft: torch.Tensor) -> torch.Tensor:
        """pE - sg(pE): zero in value, the gradient of pE."""
        return soft - soft.detach()

    def input_embeddings(self, batch: TrainBatch, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        B, W = batch.history.shape
        levels, size = self.semantic_ids.levels, self.semantic_ids.sizes[0]
        items = torch.cat([batch.history.reshape(-1), batch.target]).clamp_min(0)
        uniq, inverse = torch.unique(items, return_inverse=True)
        if self._live:
            codes = self.item_tokens[uniq] - self.level_offsets
            with torch.autocast(self.device.type, enabled=False):  # squared distances lose too much in bf16
                probs = self.tokenizer.code_probs(self.item_x[uniq], codes)
        else:
            probs = self.probs[uniq]
        table = weight[N_SPECIAL : N_SPECIAL + levels * size].view(levels, size, -1)
        delta = self.straight_through(torch.einsum("ulk,lkd->uld", probs.to(table.dtype), table))[inverse]
        d = delta.shape[-1]
        hist = (delta[: B * W].view(B, W, levels, d) * (batch.history >= 0)[:, :, None, None]).reshape(B, W * levels, d)
        zero = hist.new_zeros(B, 1, d)
        parts = [hist, zero] if not self.config.user_tokens else [zero, hist, zero]
        tgt = delta[B * W :]
        return {"src_embeds": weight[batch.src] + torch.cat(parts, 1),
                "tgt_embeds": weight[batch.tgt_in] + torch.cat([zero, tgt[:, :-1]], 1)}  # fmt: skip

    # ---- the bi-level step ------------------------------------------------------------------
    def checkpoint_module(self) -> nn.Module:
        return self.state

    def after_step(self, step: int, batch: TrainBatch, loss: torch.Tensor) -> None:
        if self.config.meta_every:
            due = (step + 1) % self.config.meta_every == 0
        else:  # once per epoch, on its last full batch (a short last batch, e.g. 5 examples on Scientific, is too noisy)
            full = self.train_examples // self.config.batch_size
            due = step % self.steps_per_epoch == max(0, full - 1)
        if due:
            self.meta_step(step, batch)

    def rec_meta_gradient(self, batch: TrainBatch) -> tuple[list[torch.Tensor | None], dict[str, float]]:
        """G_rec: the gradient with respect to the tokenizer's parameters of the recommender's
        loss after a virtual SGD step of the recommender on ``batch`` (second order)."""
        cfg = self.config
        eta = cfg.virtual_lr or cfg.lr
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._live = True
        try:
            with sdpa_kernel(SDPBackend.MATH):
                inner = self.loss(self.train_logits(batch), batch.tgt)
                grads = torch.autograd.grad(inner, [p for _, p in named], create_graph=True, allow_unused=True)
                virtual = {n: p if g is None else p - eta * g for (n, p), g in zip(named, grads)}
                outer = self.loss(self.train_logits(batch, virtual), batch.tgt)
                g_rec = torch.autograd.grad(outer, list(self.tokenizer.parameters()), allow_unused=True)
        finally:
            self._live = False
        return list(g_rec), {"loss_rec_inner": float(inner.detach()), "loss_rec_virtual": float(outer.detach())}

    def token_loss(self, items: torch.Tensor) -> torch.Tensor:
        """L_token on ``items``: the RQ-VAE's loss (and the regularizers, if any)."""
        tok = self.tokenizer
        tok.train()
        try:
            x = self.item_x[items]
            out = tok(x)
            loss = out["recon"] + out["quant"]
            if self.regularizer is not None:
                loss = loss + self.regularizer(Step(self.updates, items, x, out["z"], out["z_q"], out["codes"], out["residuals"], tok))
        finally:
            tok.eval()
        return loss

    def meta_step(self, step: int, batch: TrainBatch) -> None:
        cfg = self.config
        self.ctx.synchronize()
        t0 = time.perf_counter()
        g_rec, facts = self.rec_meta_gradient(batch)
        items = torch.unique(torch.cat([batch.history[batch.history >= 0], batch.target]))
        loss_token = self.token_loss(items)
        params = list(self.tokenizer.parameters())
        g_token = torch.autograd.grad(loss_token, params, allow_unused=True)
        grads, conflict = combine_gradients(list(g_token), g_rec, cfg.token_weight, cfg.surgery)
        self.tokenizer_opt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g
        self.tokenizer_opt.step()
        self.tokenizer_opt.zero_grad(set_to_none=True)
        self.updates += 1
        if self.regularizer is not None and hasattr(self.regularizer, "start_epoch"):
            self.regularizer.start_epoch(cfg.rq_epochs + self.updates, self.tokenizer)  # re-cluster the moved codebooks
        changed = self.update_ids()
        self.ctx.synchronize()
        seconds = time.perf_counter() - t0
        self.ctx.efficiency["tokenizer_update_seconds"] += seconds
        first = utilization(self.semantic_ids)["per_level"][0]
        self.ctx.info["bloger"]["updates"].append({
            "update": self.updates, "step": step + 1, "epoch": step // self.steps_per_epoch + 1, **conflict,
            **{k: round(v, 5) for k, v in facts.items()}, "loss_token": round(float(loss_token.detach()), 5),
            "ids_changed": changed, "unique_fraction": self.semantic_ids.unique_fraction(),
            "first_level_used": first["used"], "first_level_entropy_bits": round(first["entropy_bits"], 4),
            "seconds": round(seconds, 3),
        })  # fmt: skip

    def update_ids(self) -> int:
        """Rebuild the IDs, the trie and the soft probabilities from the tokenizer; how many items changed ID."""
        old = self.semantic_ids.codes
        self.set_ids(self.tokenize())
        self.state.codes.copy_(torch.from_numpy(self.semantic_ids.codes))
        self.state.version.fill_(self.updates)
        self.refresh_probs()
        return int((old != self.semantic_ids.codes).any(1).sum())

    def after_selection(self) -> None:
        """The selected checkpoint's IDs (and trie and probabilities) with its tokenizer."""
        codes = self.state.codes.cpu().numpy()
        if not np.array_equal(codes, self.semantic_ids.codes):
            ids = self.semantic_ids
            info = {"semantic_levels": ids.info.get("semantic_levels", ids.levels), "after_collision_handling": collision_stats(codes)}
            self.set_ids(SemanticIDs(codes, ids.sizes, ids.source, info))
            self.refresh_probs()
        self.ctx.info["bloger"].update(tokenizer_updates=self.updates, selected_tokenizer_version=int(self.state.version))


class BLOGERNoGS(BLOGER):
    name = "bloger-no-gs"
    description = "BLOGER ablation: no gradient surgery (lambda G_token + G_rec as they are)"
    Config = BLOGERNoGSConfig
    presets = {"cpu": CPU_PRESET}


class BLOGERLetter(BLOGER):
    name = "bloger-letter"
    description = "BLOGER on LETTER's tokenizer (collaborative + diversity regularized RQ-VAE, also while it trains)"
    Config = BLOGERLetterConfig
    presets = {"cpu": cpu_preset(BLOGERLetterConfig, {**CPU_PRESET, "rq_epochs": 500})}  # letter-tiger's regularizer weights

    def make_regularizer(self, seed: int) -> tuple[Any, dict[str, Any]]:
        """LETTER's regularizers, as ``letter-tiger`` builds them (CF embeddings from a SASRec
        on the training sequences when alpha > 0); they stay in L_token while the tokenizer trains."""
        cfg, facts = self.config, {}
        if cfg.alpha <= 0 and cfg.beta <= 0:
            return None, facts
        cf = None
        if cfg.alpha > 0:
            cf, facts["cf_embeddings"] = cf_item_embeddings(self.data.train, self.data.n_items, cfg.cf_config(), self.ctx.child(self.name, "cf"))
        reg = LetterRegularizer(cfg.alpha, cfg.beta, cf, cfg.clusters, self.ctx.torch_generator(self.name, "diversity"), seed,
                                cfg.cluster_n_init, cfg.cluster_max_iter, cfg.recluster_every)  # fmt: skip
        return reg, facts
