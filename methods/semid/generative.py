"""The seq2seq backbone of the semantic-ID recommenders: TIGER, LETTER, P5-CID, BLOGER, UniVA.

:class:`GenerativeMethod` sits on the backbone-agnostic base
(:class:`methods.semid.base.SemanticIDMethod`: the tokenizer stage, the trie, the shared
training loop and schedule, the decode phase and its statistics).  A subclass implements only
:meth:`~methods.semid.base.SemanticIDMethod.build_ids` (its tokenizer); this backbone adds the
:class:`Seq2Seq` recommender, its training examples and loss, and the constrained beam search.

Vocabulary: ``0`` pad, ``1`` decoder start, ``2`` end of the encoder input, then every code
of every level (``3 + SemanticIDs.tokens()``), then ``user_tokens`` user-hash tokens.

Training examples: every position t >= 1 of every training sequence is a target, its
history the up to ``max_len`` items before it (oldest first); the encoder reads
``[user token] + SID tokens of the history, flattened + [end]``; the decoder is trained with
teacher forcing to emit the target's SID tokens (cross-entropy over the vocabulary of
logits / ``tau``; tau = 1 is plain cross-entropy, LETTER's ranking-guided loss uses tau < 1).

Optimization (the base's loop) follows LETTER's released TIGER training (Hugging Face Trainer): AdamW,
learning rate 5e-4, weight decay 0.01, 1% linear warm-up then cosine decay over the
configured epochs, gradient clipping at norm 1.0, effective batch 1024 (256 per device x 2
devices x 2 accumulation steps), up to 200 epochs.  TIGER's paper instead used Adagrad,
learning rate 0.01 for 10k steps then inverse square-root decay, batch 256
(``lr_schedule = "rsqrt"`` gives that decay shape with AdamW).

Hooks for methods whose tokenizer trains with the recommender (BLOGER): :meth:`GenerativeMethod.set_ids`
installs new IDs mid-training (token table, trie; the vocabulary must keep its size);
:meth:`~GenerativeMethod.input_embeddings` replaces the looked-up input embeddings of a batch
(e.g. to let the loss reach the tokenizer); :meth:`~GenerativeMethod.train_logits` runs the
recommender on a batch, optionally with substituted parameters (a functional call, for
lookahead steps); :meth:`~GenerativeMethod.after_step` runs after every optimizer step;
the base's ``checkpoint_module`` is what early stopping keeps and restores (default the
recommender), and its ``after_selection`` runs once the best state is back.  With none of
them overridden, training is TIGER's.

Beams: ``beam`` (default 100, so Hit@100 is real) is used for the final validation and the
test pass; while training, the per-epoch validation that drives early stopping uses the
smaller ``valid_beam`` (default 20) for speed: the selection metric (NDCG@10) needs only
the top 10, so beam 20 is enough to rank checkpoints, but the validation curve's
Recall@100 is not comparable with the final one.

Exact ranking: with ``decode = "exact"`` the method outputs scores instead of lists: every
item's ID log-likelihood given the history (:mod:`methods.semid.exact`), so the harness ranks
the whole catalogue (ties by its seeded order).  ``exact_pass`` asks for it as a supplementary
test pass (``test_variants``: ``exact``) after the beam's headline pass; that pass also
measures how much of the exact ranking the headline beam found (:meth:`GenerativeMethod.pass_report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from bench.batching import last_item_windows, length_grouped_batches, shuffled_batches
from bench.errors import UserError
from bench.method import EvalBatch
from bench.semantic_ids import SemanticIDs
from methods.semid.base import SCHEDULES, SemanticIDMethod, SemanticIDTraining, TrainingPlan
from methods.semid.beam import BeamResult, beam_search
from methods.semid.exact import DEPTH, BeamRecall, beam_bound, exact_item_scores, leaf_of_items
from methods.semid.seq2seq import Seq2Seq, Seq2SeqConfig

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3
DECODES = ("beam", "exact")
__all__ = ["SCHEDULES"]  # re-exported: the schedules of the shared loop (methods.semid.base)


@dataclass
class GenerativeConfig(SemanticIDTraining):
    # recommender (TIGER's sizes, docs/protocol.md §4)
    d_model: int = 128
    layers: int = 4  # encoder layers = decoder layers
    heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    rel_buckets: int = 32
    rel_max_distance: int = 128
    tie_output: bool = True
    user_tokens: int = 0  # TIGER's paper: user id hashed into 2000 tokens prepended to the input; 0 = off
    max_len: int = 20  # history items read (training and evaluation)
    # training: SemanticIDTraining's options (LETTER's released TIGER settings; patience 10
    # validations every 2 epochs, LETTER: 20 epochs), plus
    tau: float = 1.0  # temperature of the generation loss (LETTER's ranking-guided loss: tau < 1)
    group_by_length: bool = True  # batches of similar history length (less padding); False = plain shuffled batches
    # decoding (beam, valid_beam: SemanticIDTraining's)
    decode: str = field(default="beam", metadata={"before": "beam"})  # beam (ranked lists) | exact (every item's ID likelihood: scores)
    # a supplementary test pass with decode = "exact" (methods/semid/exact.py), beside the beam's headline
    exact_pass: bool = field(default=False, metadata={"before": False, "supplementary": True})

    def __post_init__(self):
        super().__post_init__()
        if self.decode not in DECODES:
            raise UserError(f"option decode: expected one of {', '.join(DECODES)}, got {self.decode!r}")
        for name in ("max_len", "layers", "heads", "d_model", "d_kv", "d_ff"):
            if getattr(self, name) < 1:
                raise UserError(f"option {name}: expected a positive integer, got {getattr(self, name)}")
        if self.tau <= 0:
            raise UserError(f"option tau: expected a positive number, got {self.tau}")
        if self.user_tokens < 0:
            raise UserError(f"option user_tokens: expected 0 (off) or a positive number of hash buckets, got {self.user_tokens}")

    def model_config(self) -> Seq2SeqConfig:
        return Seq2SeqConfig(self.d_model, self.layers, self.heads, self.d_kv, self.d_ff, self.dropout,
                             self.rel_buckets, self.rel_max_distance, self.tie_output)


# The recommender part of every generative method's ``cpu`` preset (docs/protocol.md,
# "Presets"): a half-width, two-layer seq2seq (2 heads x 32), batch 256, validation every 2
# epochs at beam 10 (NDCG@10 needs only the top 10), early stopping after 3 validations
# without improvement, the final validation and test at beam 100 (so Hit@100 is measured, as
# the harness reports it for every method). Each method's file adds its tokenizer's settings.
# The epoch limit (100) is a safety net, not the stopping rule. Measured on Scientific (33,541
# training examples), one thread of this machine's AMD EPYC with the other core busy: 19-20 s
# per TIGER epoch, ~8 s per validation at beam 10, ~100 s for the test pass at beam 100
# (8,317 users); TIGER's three seeds stopped at epochs 84, 60 and 50 (26-43 minutes a run).
CPU_RECOMMENDER: dict[str, object] = {
    "d_model": 64, "layers": 2, "heads": 2, "d_kv": 32, "d_ff": 256, "batch_size": 256, "lr": 1e-3,
    "epochs": 100, "eval_every": 2, "patience": 3, "valid_beam": 10, "beam": 100, "exact_pass": True,
}  # fmt: skip


def hash_users(users: torch.Tensor, buckets: int) -> torch.Tensor:
    """A fixed multiplicative hash of user indices into ``buckets`` (Knuth's constant)."""
    return (users.long() * 2654435761) % (2**32) % buckets


def seq2seq_step(model: Seq2Seq, src: torch.Tensor, level_offsets: torch.Tensor, sizes: tuple[int, ...], cache: bool = True,
                 bf16: bool = False):  # fmt: skip
    """Encode ``src`` once and return the beam search's step function: (depth, codes (B, K,
    depth), parent (B, K)) -> (B, K, sizes[depth]) log-probabilities of the next level's
    codes, normalized over the whole vocabulary (as a masked ``generate`` would).

    ``cache``: feed the decoder only the newest token and keep the self-attention keys and
    values of the earlier ones (reordered by ``parent`` each step); without it the decoder
    re-reads the whole prefix [start, codes...] every step (same result; measured on CPU
    at Beauty's size, the cache makes the decoder steps 1.5x faster at beam 100 and 2x
    at beam 20: scripts/bench_beam.py).

    ``bf16``: encode and decode under bf16 autocast (the vocabulary logits stay float32);
    the caller's :attr:`GenerativeMethod.decode_bf16` says when."""
    B, dev = len(src), src.device
    autocast = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.autocast(**autocast):
        memory, keep = model.encode(src)
        cross = model.cross_kv(memory)
    state = {"past": None}

    def step(depth: int, codes: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
        K = codes.shape[1]
        start = torch.full((B, K, 1), BOS, dtype=torch.long, device=dev)
        with torch.autocast(**autocast):
            if not cache:
                h = model.decode(torch.cat([start, codes + level_offsets[:depth]], -1), keep, cross)[:, :, -1]
            else:
                if depth == 0:
                    past, new = model.empty_past(B * K, dev, memory.dtype), start
                else:
                    rows = (torch.arange(B, device=dev).unsqueeze(1) * state["k"] + parent).reshape(-1)
                    past = [(k[rows], v[rows]) for k, v in state["past"]]
                    new = codes[:, :, -1:] + level_offsets[depth - 1]
                h, state["past"] = model.decode(new, keep, cross, past)
                state["k"] = K
                h = h[:, :, -1]
        logp = torch.log_softmax(model.logits(h), -1)
        lo = int(level_offsets[depth])
        return logp[..., lo : lo + sizes[depth]]

    return step


@dataclass
class TrainBatch:
    """One training batch: the examples' items and the tokens the recommender reads."""

    users: torch.Tensor  # (B,) user rows
    history: torch.Tensor  # (B, W) item indices, right-aligned, -1 = none (all-padding columns dropped)
    target: torch.Tensor  # (B,) target items
    src: torch.Tensor  # (B, S) encoder tokens (:meth:`GenerativeMethod.encoder_input`)
    tgt: torch.Tensor  # (B, levels) target tokens (the labels)
    tgt_in: torch.Tensor  # (B, levels) decoder input: [start] + the target's tokens but the last


class GenerativeMethod(SemanticIDMethod):
    """The seq2seq backbone on the shared base (:class:`methods.semid.base.SemanticIDMethod`):
    subclasses set ``name``/``description``/``Config`` and implement ``build_ids``."""

    Config = GenerativeConfig

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.beam_recall = BeamRecall(data.n_users)  # how much of the exact ranking the headline beam found

    # ---- set-up ---------------------------------------------------------------------------
    def set_ids(self, ids: SemanticIDs) -> None:
        """Install ``ids``: the trie (the base's), the token table and the exact pass's leaf map."""
        super().set_ids(ids)
        dev = self.device
        self.item_tokens = torch.from_numpy(ids.tokens() + N_SPECIAL).to(dev)  # (n_items, levels)
        self.level_offsets = torch.from_numpy(ids.offsets + N_SPECIAL).to(dev)
        self.user_offset = N_SPECIAL + ids.vocab_size
        self.leaf_of_item = leaf_of_items(self.trie)

    def build_model(self) -> Seq2Seq:
        model = self.make_model(self.user_offset + self.config.user_tokens).to(self.device)
        self.ctx.info["vocab_size"] = model.vocab_size
        return model

    def make_model(self, vocab_size: int) -> Seq2Seq:
        """The recommender (hook: a subclass may return a Seq2Seq with extra heads)."""
        return Seq2Seq(self.config.model_config(), vocab_size, PAD)

    def encoder_input(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B, H) right-aligned item history (-1 = none) -> (B, [1 +] H * levels + 1) tokens."""
        B = len(history)
        tok = self.item_tokens[history.clamp_min(0)]
        tok = torch.where((history >= 0).unsqueeze(-1), tok, PAD).reshape(B, -1)
        parts = [tok, torch.full((B, 1), EOS, dtype=torch.long, device=tok.device)]
        if self.config.user_tokens:
            parts.insert(0, (self.user_offset + hash_users(users, self.config.user_tokens)).unsqueeze(1))
        return torch.cat(parts, 1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Generation loss over (B, levels, vocab) logits; subclasses may add terms."""
        return F.cross_entropy(logits.flatten(0, 1) / self.config.tau, target.reshape(-1))

    # ---- training hooks (a tokenizer trained with the recommender overrides these) ---------
    @property
    def autocast(self) -> dict[str, Any]:
        """The run's training autocast (``--precision``; docs/protocol.md §6), as the context defines
        it (:meth:`bench.method.Context.autocast_settings`)."""
        return self.ctx.autocast_settings()

    @property
    def decode_bf16(self) -> bool:
        """Whether beam search runs under bf16 autocast: the context's decoding precision (bf16 on
        CUDA when the run's precision is bf16, float32 on a CPU)."""
        return self.ctx.autocast_settings(decoding=True)["enabled"]

    def train_batch(self, users: torch.Tensor, history: torch.Tensor, target: torch.Tensor) -> TrainBatch:
        """The batch of examples (users, (B, max_len) histories, targets) with its tokens."""
        width = int((history >= 0).sum(1).max())  # drop columns that are padding in every row
        history = history[:, history.shape[1] - width :]
        tgt = self.item_tokens[target]
        tgt_in = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], 1)
        return TrainBatch(users, history, target, self.encoder_input(users, history), tgt, tgt_in)

    def input_embeddings(self, batch: TrainBatch, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keyword arguments ``src_embeds``/``tgt_embeds`` of :meth:`Seq2Seq.forward` for ``batch``,
        given the token embedding table ``weight`` in use; {} = look the tokens up (TIGER)."""
        return {}

    def train_logits(self, batch: TrainBatch, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, levels, vocab) teacher-forced logits of ``batch``, under the stack's autocast;
        ``params`` (name -> tensor) replaces the model's parameters (``torch.func.functional_call``)."""
        weight = self.model.embed.weight if params is None else params.get("embed.weight", self.model.embed.weight)
        with torch.autocast(**self.autocast):
            extra = self.input_embeddings(batch, weight)
            if params is None:
                return self.model(batch.src, batch.tgt_in, **extra)
            return torch.func.functional_call(self.model, params, (batch.src, batch.tgt_in), extra)

    def after_step(self, step: int, batch: TrainBatch, loss: torch.Tensor) -> None:
        """Called after optimizer step ``step`` (0-based, counted over all epochs) on ``batch``."""

    # ---- training -------------------------------------------------------------------------
    def training_plan(self) -> TrainingPlan:
        """Every position t >= 1 of every training sequence, its history the ``max_len`` items
        before it; batches of similar history length (or shuffled)."""
        cfg, dev = self.config, self.device
        history, target, rows = last_item_windows(self.data.train, cfg.max_len)
        history, target, users = (torch.from_numpy(a).to(dev) for a in (history, target, rows))
        gen = self.ctx.torch_generator(self.name, "train")
        self.train_examples = len(target)
        self.ctx.info.update(train_examples=len(target),
                             batching="length-grouped (mega-batches of 50 batches)" if cfg.group_by_length else "shuffled")  # fmt: skip
        lengths = (history >= 0).sum(1)
        state = {"batch": None}

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            state["batch"] = batch = self.train_batch(users[idx], history[idx], target[idx])
            return self.loss(self.train_logits(batch).float(), batch.tgt)

        def batches():
            if cfg.group_by_length:  # histories of 1..max_len items: pad each batch to its own longest
                return length_grouped_batches(lengths, cfg.batch_size, gen)
            return shuffled_batches(len(target), cfg.batch_size, gen, dev)

        return TrainingPlan(loss_fn, batches, len(target), after_step=lambda step, loss: self.after_step(step, state["batch"], loss))

    # ---- recommendation -------------------------------------------------------------------
    @property
    def active_output(self) -> str:
        """Ranked lists from the beam, or full-catalogue scores under ``decode = "exact"``."""
        return "scores" if self.decode_config.decode == "exact" else "lists"

    def test_variants(self) -> dict[str, dict[str, Any]]:
        return {"exact": {"decode": "exact"}} if self.config.exact_pass and self.config.decode != "exact" else {}

    def search(self, batch: EvalBatch, src: torch.Tensor, beam: int, k: int) -> BeamResult:
        """The constrained beam search for one batch (hook: a subclass may change the step's
        scores or restrict the items per request)."""
        step = seq2seq_step(self.model, src, self.level_offsets, self.semantic_ids.sizes, bf16=self.decode_bf16)
        return beam_search(step, self.trie, len(src), beam, k, self.device)

    def decode(self, batch: EvalBatch, beam: int, k: int) -> BeamResult:
        res = self.search(batch, self.encoder_input(batch.users, batch.history), beam, k)
        self.beam_recall.remember(batch, res.items, beam, beam_bound(res.scores))
        return res

    @torch.no_grad()
    def score(self, batch: EvalBatch) -> torch.Tensor:
        """(B, n_items) log-likelihood of every item's full ID given the history (``decode = "exact"``),
        exact for every item within each user's top :data:`methods.semid.exact.DEPTH` (the harness's
        ranking depth); branch and bound cuts the rest to -inf.  The bound is the worst score of
        this history's headline beam when that had at least DEPTH IDs (the pass after the headline
        costs no beam), else of a beam of DEPTH run here."""
        src = self.encoder_input(batch.users, batch.history)
        bound = self.beam_recall.bound_for(batch)
        missing = torch.isinf(bound)
        if bool(missing.any()):
            sub = EvalBatch(batch.users[missing], batch.history[missing], batch.lengths[missing])
            bound[missing] = beam_bound(self.search(sub, src[missing], DEPTH, DEPTH).scores)

        def make_step(rows: torch.Tensor):
            return seq2seq_step(self.model, rows, self.level_offsets, self.semantic_ids.sizes, bf16=self.decode_bf16)

        scores = exact_item_scores(make_step, src, self.trie, self.leaf_of_item, bound)
        self.beam_recall.compare(batch, scores)
        return scores

    def pass_report(self) -> dict[str, Any]:
        """After an exact pass: how much of it the headline beam found (:class:`BeamRecall`)."""
        return self.beam_recall.report()
