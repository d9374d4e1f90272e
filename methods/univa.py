"""UniVA-style value-aware generative recommendation (after Zhang et al., arXiv 2605.05803).

UniVA aligns a generative recommender with commercial value as well as user interest; it
was built on industrial advertising data and has no public code, so this is a faithful
re-implementation on public data, labelled "UniVA-style".  Item values come from
:mod:`bench.value` (log1p of a real price, or the declared simulated eCPM stand-in), the
same values the harness's value metrics use.  Four parts:

1. **Commercial SID**: the shared RQ-VAE's semantic levels (no collision handling there),
   then a *value level*: the item's equal-frequency value bin within its top-level
   category (items without a value get an extra "no value" code), then a counting suffix
   (TIGER's) when items still collide, so every ID is unique and decodes to one item.
2. **Value head**: the shared seq2seq plus a linear head on the decoder state: at the
   prefix p, for each next code c, the predicted value of the item the user will take
   below p + c (regressed on the true target's normalized value at every level, teacher
   forced), trained jointly with the next-token loss (``value_weight``).
3. **eCPM-aware RL** after supervised training (UniVA does not name its algorithm; we use
   a GRPO-style group baseline): per training example, sample ``rl_group`` IDs from the
   policy restricted to valid IDs; reward = 1[sampled item = the example's true next item]
   x (1 + alpha v_norm); advantage = (reward - group mean) / (group std + 1e-6); one
   on-policy update per batch (probability ratio 1, so no clipping) with a KL penalty to
   the frozen supervised model (k3 estimator, ``rl_kl``).  Training examples only: the
   rewards never see a validation or test target.  The RL stage has its own validation
   curve and keeps the supervised checkpoint unless a validation beats it.
4. **Value-guided beam search**: beams are ranked by log p(prefix) + beta V(prefix) through
   the shared trie beam search (the step returns log p + beta (V(child) - V(parent)), which
   telescopes), with an optional per-request constraint (``constraint = "valued"``: only
   items with a value may be shown; default off).

v_norm = v / mean v over the items with a value (0 for an item without one).  The value
head regresses ``log v_norm`` by default (``value_scale = "log"``; an item without a value
counts as the smallest known value), so that log p + beta V ranks by p x v^beta: beta = 1
is expected value (pCTR x bid, eCPM ranking), beta = 0 relevance alone.  On the linear
scale (``"linear"``, v_norm itself) one high-value item adds tens of nats to log p; measured
on Scientific (simulated values, preset cpu, seed 0): beta = 1 cut Recall@10 from .054
(beta 0) to .017 and beta = 2 to .001.
Ablations: ``univa-no-rl``, ``univa-no-value-head`` (no head, so no value guidance),
``univa-beta0`` (head trained, beam unguided).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.batching import last_item_windows
from bench.config import zero_allowed
from bench.errors import UserError
from bench.method import DecodeRequest, EvalBatch
from bench.semantic_ids import SemanticIDs
from bench.training import train
from bench.value import ItemValues, train_values
from methods.semid.beam import BeamResult, beam_search
from methods.semid.generative import BOS, CPU_RECOMMENDER, seq2seq_step
from methods.semid.rqvae import collision_stats, count_level, train_rqvae
from methods.semid.seq2seq import Seq2Seq
from methods.tiger import TIGER, TIGERConfig

CONSTRAINTS = ("none", "valued")


@dataclass
class UniVAConfig(TIGERConfig):
    rq_collisions: str = "none"  # collisions are resolved after the value level (suffix)
    # commercial SID
    value_bins: int = 8  # equal-frequency value bins within each top-level category
    # value head
    value_head: bool = True
    value_weight: float = 1.0  # weight of the value regression in the supervised loss
    value_scale: str = "log"  # what the head regresses: log (log v_norm) | linear (v_norm)
    # value-guided beam search: log p + beta * V(prefix)
    beta: float = 1.0
    # the supervised stage selects its checkpoint on the unguided decode (beta 0): guided by a value
    # head that keeps improving, validation NDCG falls while the generator still learns (measured:
    # on Scientific at beta 1 it peaked at epoch 4 of a TIGER-sized model that goes on to epoch ~60).
    # The RL stage, and the record's validation metrics, use ``beta``.
    select_unguided: bool = True
    constraint: str = "none"  # per-request item constraint: none | valued (items with a value only)
    # supplementary test passes of the selected model at these beta (record: test_metrics_variants),
    # for the HR@100-ValueHR@100 trade-off; the headline and selection use ``beta`` only
    beta_sweep: tuple[float, ...] = ()
    # eCPM-aware RL (GRPO-style), after the supervised stage; 0 epochs = off
    rl_epochs: int = zero_allowed(10)
    rl_patience: int = 3
    rl_group: int = 8  # IDs sampled per training example
    rl_batch_size: int = 64  # training examples per update
    rl_examples: int = zero_allowed(4096)  # training examples per RL epoch (a seeded random subset; 0 = all)
    rl_lr: float = 5e-5
    rl_kl: float = 0.05
    alpha: float = 1.0  # reward weight of the target's value

    def __post_init__(self):
        super().__post_init__()
        if self.rq_collisions != "none":
            raise UserError("option rq_collisions: univa resolves collisions after its value level; expected 'none'")
        if self.exact_pass or self.decode != "beam":
            raise UserError("options exact_pass / decode: univa decodes with its value-guided (and constrained) beam; "
                            "an exact likelihood ranking would ignore both (expected exact_pass false, decode 'beam')")  # fmt: skip
        if self.value_bins < 1:
            raise UserError(f"option value_bins: expected a positive integer, got {self.value_bins}")
        if self.value_scale not in ("log", "linear"):
            raise UserError(f"option value_scale: expected 'log' or 'linear', got {self.value_scale!r}")
        if self.constraint not in CONSTRAINTS:
            raise UserError(f"option constraint: expected one of {', '.join(CONSTRAINTS)}, got {self.constraint!r}")
        for name in ("rl_epochs", "rl_examples"):
            if getattr(self, name) < 0:
                raise UserError(f"option {name}: expected >= 0, got {getattr(self, name)}")
        for name in ("rl_patience", "rl_group", "rl_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"option {name}: expected a positive integer, got {getattr(self, name)}")
        if self.rl_group < 2 and self.rl_epochs:
            raise UserError("option rl_group: a group baseline needs at least 2 samples per example")
        for name in ("value_weight", "rl_lr", "rl_kl", "alpha"):
            if getattr(self, name) < 0:
                raise UserError(f"option {name}: expected >= 0, got {getattr(self, name)}")


def value_bins(values: ItemValues, bins: int) -> tuple[np.ndarray, int]:
    """Each item's equal-frequency value bin within its top-level category (items without a
    category form one group): bin = floor(bins * #{smaller values in the group} / group size),
    so tied values share a bin.  Items without a value get code ``bins``.  Returns (codes,
    number of codes)."""
    n = len(values.values)
    codes = np.full(n, bins, dtype=np.int64)
    known = values.known
    for group in np.unique(values.category):
        members = np.flatnonzero((values.category == group) & known)
        if len(members) == 0:
            continue
        v = values.values[members]
        smaller = np.searchsorted(np.sort(v), v, side="left")
        codes[members] = np.minimum(bins - 1, smaller * bins // len(members))
    return codes, bins + int((~known).any())


class ValueSeq2Seq(Seq2Seq):
    """The shared seq2seq with a value head: ``values(h)`` (..., vocab) is the predicted value
    below each next token.  :meth:`logits` keeps the decoder states it was given in
    ``last_hidden`` so the value head reads the same states (training and beam steps)."""

    def __init__(self, cfg, vocab_size: int, pad_id: int = 0):
        super().__init__(cfg, vocab_size, pad_id)
        self.value = nn.Linear(cfg.d_model, vocab_size)
        nn.init.normal_(self.value.weight, std=cfg.d_model**-0.5 * 0.1)
        nn.init.zeros_(self.value.bias)
        self.last_hidden: torch.Tensor | None = None

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        self.last_hidden = h
        return super().logits(h)

    def values(self, h: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):
            return self.value(h.float())


class UniVA(TIGER):
    name = "univa"
    description = "UniVA-style: value-level semantic IDs, value head, GRPO-style eCPM-aware RL, value-guided beam search"
    Config = UniVAConfig
    # cpu: the generative methods' shared recommender preset (the same sizes as tiger's, so the two compare
    # like for like) plus a cheaper tokenizer and 2 RL epochs of 2,048 examples x 8 samples.  Measured on
    # Scientific with one thread of this machine (load about 5): 218 s per RL epoch, RQ-VAE 300 epochs 226 s.
    # beta_sweep: three more test passes (about 100 s each at beam 100) for the beta trade-off.
    presets = {
        "cpu": {**CPU_RECOMMENDER, "exact_pass": False, "rq_epochs": 300, "rq_batch_size": 1024,
                "rl_epochs": 2, "rl_patience": 2, "rl_examples": 2048, "rl_group": 8, "rl_batch_size": 64,
                "beta_sweep": (0.0, 0.5, 1.0, 2.0)},
    }  # fmt: skip

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.values = train_values(data)
        known = self.values.known
        mean = float(self.values.values[known].mean()) if known.any() else 1.0
        norm = np.where(known, self.values.values / mean, 0.0)
        self.value_norm = torch.from_numpy(norm).float().to(self.device)  # the RL reward's weight (linear: eCPM-like)
        if config.value_scale == "log":  # what the head regresses and the beam adds (x beta)
            floor = float(norm[known & (norm > 0)].min()) if (known & (norm > 0)).any() else 1.0
            target = np.log(np.where(known & (norm > 0), norm, floor))
        else:
            target = norm
        self.value_target = torch.from_numpy(target).float().to(self.device)

    # ---- commercial SID ------------------------------------------------------------------
    def build_ids(self) -> SemanticIDs:
        emb = self.embeddings()
        seed = self.ctx.seed_for(self.name, "rqvae")
        rq = dataclasses.replace(self.config.rqvae_config(), collisions="none")
        _, sem = train_rqvae(emb, rq, self.device, seed)
        bins, n_bins = value_bins(self.values, self.config.value_bins)
        codes = np.concatenate([sem.codes, bins[:, None]], 1)
        sizes = list(sem.sizes) + [n_bins]
        before = collision_stats(codes)
        source = "rqvae+value"
        if before["largest_group"] > 1:
            suffix = count_level(codes)
            codes = np.concatenate([codes, suffix[:, None]], 1)
            sizes.append(int(suffix.max()) + 1)
            source += "+count"
        info = {"semantic_levels": rq.levels + 1, "value_level": rq.levels, "value_codes": n_bins,
                "value_source": self.values.source, "before_suffix": before, "after_suffix": collision_stats(codes)}  # fmt: skip
        self.ctx.info["tokenizer"] = {"rqvae": {k: v for k, v in sem.info.items() if k != "loss_curve"}, "commercial_sid": info}
        return SemanticIDs(codes, tuple(sizes), source, info)

    def make_model(self, vocab_size: int) -> Seq2Seq:
        if not self.config.value_head:
            return super().make_model(vocab_size)
        return ValueSeq2Seq(self.config.model_config(), vocab_size)

    def prepare(self) -> None:
        super().prepare()
        self.leaf_item = self.trie.leaf_items[self.trie.leaf_ptr[:-1]]  # unique IDs: one item per leaf

    def items_of(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., levels) codes -> item (-1 for a tuple that is no ID)."""
        leaf = self.trie.leaf_of(codes)
        return torch.where(leaf >= 0, self.leaf_item[leaf.clamp_min(0)], -1)

    # ---- supervised loss: generation + value regression ----------------------------------
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = super().loss(logits, target)
        if not self.config.value_head:
            return ce
        items = self.items_of(target - self.level_offsets)
        want = self.value_target[items.clamp_min(0)]
        pred = self.model.values(self.model.last_hidden).gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, levels)
        return ce + self.config.value_weight * F.mse_loss(pred, want.unsqueeze(1).expand_as(pred))

    # ---- training: supervised, then RL (two stages of the shared loop) --------------------
    def unguided_selection(self) -> bool:
        """Whether the supervised stage selects on the unguided decode (beta 0, see ``select_unguided``)."""
        cfg = self.config
        return cfg.select_unguided and cfg.value_head and cfg.beta != 0

    def selection_request(self) -> DecodeRequest:
        """The supervised stage's validations decode at beta 0 when it selects unguided; the RL
        stage's (and the record's) at ``beta``."""
        request = super().selection_request()
        if self.stage == "supervised" and self.unguided_selection():
            return dataclasses.replace(request, options={"beta": 0.0})
        return request

    def fit(self) -> None:
        self.stage = "supervised"
        super().fit()
        info = self.ctx.info
        supervised = info["stages"]["supervised"]
        supervised["selected_at_beta"] = 0.0 if self.unguided_selection() else self.config.beta
        if self.config.rl_epochs > 0:
            self.stage = "rl"
            baseline = supervised["best_valid"]
            if self.unguided_selection():  # the supervised checkpoint, decoded as the RL stage's epochs will be (beta)
                baseline = self.valid_at_rl_beam()
                supervised["valid_at_beta"] = {"beta": self.config.beta, self.ctx.select_metric: baseline}
            self.rl_stage(baseline)

    def valid_at_rl_beam(self) -> float:
        self.eval()
        return self.ctx.validate(self.selection_request())[self.ctx.select_metric]

    def rl_examples(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(history, target, user) of every training example: the training sequences only."""
        history, target, rows = last_item_windows(self.data.train, self.config.max_len)
        return tuple(torch.from_numpy(a).to(self.device) for a in (history, target, rows))

    def reward(self, sampled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, G) sampled items, (B,) true next items -> (B, G) hit x (1 + alpha v_norm)."""
        weight = 1.0 + self.config.alpha * self.value_norm[target]
        return (sampled == target.unsqueeze(1)).float() * weight.unsqueeze(1)

    @torch.no_grad()
    def sample_ids(self, src: torch.Tensor, group: int, gen: torch.Generator) -> torch.Tensor:
        """(B, group, levels) codes sampled level by level from the policy restricted to valid IDs."""
        B, dev = len(src), self.device
        step = seq2seq_step(self.model, src, self.level_offsets, self.semantic_ids.sizes, bf16=self.decode_bf16)
        codes = torch.zeros(B, group, 0, dtype=torch.long, device=dev)
        node = torch.zeros(B, group, dtype=torch.long, device=dev)
        parent = torch.arange(group, device=dev).expand(B, group)
        for d, table in enumerate(self.trie.transitions):
            logp = step(d, codes, parent).float()
            child = table[node].long()
            logp = logp.masked_fill(child < 0, -torch.inf)
            code = torch.multinomial(torch.softmax(logp.reshape(B * group, -1), -1), 1, generator=gen).reshape(B, group)
            node = child.gather(2, code.unsqueeze(-1)).squeeze(-1)
            codes = torch.cat([codes, code.unsqueeze(-1)], -1)
        return codes

    def sequence_logp(self, model: Seq2Seq, src: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(N, levels) per-level log-probabilities of ``codes`` under ``model``, each level
        normalized over the codes valid after the prefix (the policy the RL samples from)."""
        tokens = codes + self.level_offsets
        tgt_in = torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], 1)
        logits = model(src, tgt_in)
        node = torch.zeros(len(codes), dtype=torch.long, device=codes.device)
        out = []
        for d, (table, size) in enumerate(zip(self.trie.transitions, self.semantic_ids.sizes)):
            lo = int(self.level_offsets[d])
            child = table[node].long()
            level = logits[:, d, lo : lo + size].masked_fill(child < 0, -torch.inf)
            out.append(torch.log_softmax(level, -1).gather(1, codes[:, d : d + 1]).squeeze(1))
            node = child.gather(1, codes[:, d : d + 1]).squeeze(1)
        return torch.stack(out, 1)

    def rl_stage(self, supervised_best: float) -> None:
        """The RL stage on the shared loop (``stage = "rl"``): it starts from the supervised
        checkpoint (``incumbent``: kept unless an RL epoch beats it on validation)."""
        cfg, dev = self.config, self.device
        history, target, users = self.rl_examples()
        if isinstance(self.model, ValueSeq2Seq):
            self.model.last_hidden = None  # a non-leaf tensor cannot be deep-copied
        reference = copy.deepcopy(self.model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.rl_lr, weight_decay=0.0)
        gen = self.ctx.torch_generator(self.name, "rl")
        cpu_gen = torch.Generator().manual_seed(self.ctx.seed_for(self.name, "rl-subset", high=2**62))
        n = len(target)
        per_epoch = n if cfg.rl_examples == 0 else min(n, cfg.rl_examples)
        sums = torch.zeros(4, device=dev)  # loss, reward, sample hit rate, KL, summed over the epoch's examples

        def batches():
            sums.zero_()
            return torch.randperm(n, generator=cpu_gen)[:per_epoch].to(dev).split(cfg.rl_batch_size)

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            hist = history[idx]
            width = int((hist >= 0).sum(1).max())
            src = self.encoder_input(users[idx], hist[:, hist.shape[1] - width :])
            codes = self.sample_ids(src, cfg.rl_group, gen)  # (B, G, L)
            r = self.reward(self.items_of(codes), target[idx])
            adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)
            flat_src = src.repeat_interleave(cfg.rl_group, 0)
            flat = codes.reshape(-1, codes.shape[-1])
            logp = self.sequence_logp(self.model, flat_src, flat)
            with torch.no_grad():
                ref = self.sequence_logp(reference, flat_src, flat)
            log_ratio = ref - logp
            kl = (log_ratio.exp() - log_ratio - 1).sum(1)
            loss = -(adv.reshape(-1) * logp.sum(1)).mean() + cfg.rl_kl * kl.mean()
            sums.add_(torch.stack([loss.detach(), r.mean(), (r > 0).float().mean(), kl.detach().mean()]) * len(idx))
            return loss

        def epoch_stats() -> dict[str, float]:
            return dict(zip(("loss", "reward", "sample_hit_rate", "kl"), (round(x, 6) for x in (sums / per_epoch).tolist())))

        try:  # no dropout (train_mode False): sampling and the gradient see the same policy
            train(self.ctx, self.model, opt, loss_fn, batches, cfg.rl_epochs, cfg.rl_patience, 1, grad_clip=cfg.grad_clip,
                  request=self.selection_request(), stage="rl", incumbent=supervised_best, state={"subset_generator": cpu_gen},
                  epoch_stats=epoch_stats, train_mode=False)  # fmt: skip
        finally:
            self.reset_generation_stats()
        rl = self.ctx.info["stages"]["rl"]
        rl.update({
            "algorithm": "GRPO-style group baseline: advantage = (r - mean_group) / (std_group + 1e-6), one on-policy update "
                         "per batch (ratio 1, no clipping), KL to the frozen supervised model (k3 estimator)",
            "reward": "1[sampled item == true next training item] * (1 + alpha * v_norm(target))",
            "kept": "rl" if rl["best_epoch"] > 0 else "supervised (RL never beat it on validation)",
            "examples_per_epoch": per_epoch, "train_examples": n,
        })  # fmt: skip

    # ---- value-guided, optionally constrained beam search --------------------------------
    def request_mask(self, batch: EvalBatch) -> torch.Tensor | None:
        """(B, n_items) items each request may show, or None (constraint off)."""
        if self.decode_config.constraint == "none":
            return None
        return torch.from_numpy(self.values.known).to(self.device).unsqueeze(0).expand(len(batch.users), -1)

    def search(self, batch: EvalBatch, src: torch.Tensor, beam: int, k: int) -> BeamResult:
        step = seq2seq_step(self.model, src, self.level_offsets, self.semantic_ids.sizes, bf16=self.decode_bf16)
        if self.config.value_head and self.decode_config.beta != 0:
            step = self.value_guided(step)
        return beam_search(step, self.trie, len(src), beam, k, self.device, item_mask=self.request_mask(batch))

    def value_guided(self, step):
        """Wrap a beam step so that the summed scores are log p(prefix) + beta V(prefix)."""
        beta, state = self.decode_config.beta, {}

        def guided(depth: int, codes: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
            logp = step(depth, codes, parent)
            size = logp.shape[-1]
            lo = int(self.level_offsets[depth])
            v = self.model.values(self.model.last_hidden)[..., lo : lo + size]  # (B, K, size): V(prefix + c)
            if depth == 0:
                v_parent = torch.zeros(v.shape[:2], device=v.device)
            else:
                prev = state["v"]
                v_parent = prev.gather(1, parent.unsqueeze(-1).expand(-1, -1, prev.shape[-1])).gather(2, codes[:, :, -1:]).squeeze(-1)
            state["v"] = v
            return logp.float() + beta * (v - v_parent.unsqueeze(-1))

        return guided

    def test_variants(self) -> dict[str, dict[str, float]]:
        if not self.config.value_head:
            return {}
        return {f"beta={b:g}": {"beta": b} for b in self.config.beta_sweep if b != self.config.beta}

    def report(self) -> dict:
        out = super().report()
        out["training"]["value_model"] = {"value_source": self.values.source, "beta": self.config.beta,
                                          "value_head": self.config.value_head, "constraint": self.config.constraint,
                                          "normalization": "v / mean(v) over items with a value",
                                          "head_target": "log v_norm (smallest known value for items without one)"
                                          if self.config.value_scale == "log" else "v_norm"}  # fmt: skip
        return out


def _without(preset: dict, *keys: str) -> dict:
    return {k: v for k, v in preset.items() if k not in keys}


@dataclass
class NoRLConfig(UniVAConfig):
    rl_epochs: int = 0


class UniVANoRL(UniVA):
    name = "univa-no-rl"
    description = "UniVA-style ablation: no RL stage (supervised only)"
    Config = NoRLConfig
    presets = {"cpu": _without(UniVA.presets["cpu"], "rl_epochs", "rl_patience", "rl_examples", "rl_group", "rl_batch_size", "beta_sweep")}


@dataclass
class NoValueHeadConfig(UniVAConfig):
    value_head: bool = False


class UniVANoValueHead(UniVA):
    name = "univa-no-value-head"
    description = "UniVA-style ablation: no value head (hence no value-guided beam)"
    Config = NoValueHeadConfig
    presets = {"cpu": _without(UniVA.presets["cpu"], "beta_sweep")}


@dataclass
class Beta0Config(UniVAConfig):
    beta: float = 0.0


class UniVABeta0(UniVA):
    name = "univa-beta0"
    description = "UniVA-style ablation: value head trained, beam search unguided (beta = 0)"
    Config = Beta0Config
    presets = {"cpu": _without(UniVA.presets["cpu"], "beta_sweep")}
