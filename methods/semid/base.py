"""The backbone-agnostic base of the semantic-ID recommenders (docs/protocol.md §4).

:class:`SemanticIDMethod` holds what every semantic-ID method does the same way whatever its
backbone: the tokenizer stage (timed, and kept in checkpoints), the IDs and their prefix
trie, the one training loop (:func:`bench.training.train`: AdamW, warm-up then cosine or
inverse-square-root decay, gradient clipping, micro-batch accumulation, checkpoint selection
on validation at ``valid_beam``), the decode phase with its generation statistics, what
selection snapshots, and the record's ``semantic_ids``/``codebook`` sections.

A backbone supplies four things:

* :meth:`~SemanticIDMethod.build_model`: the model, once the IDs are installed;
* :meth:`~SemanticIDMethod.training_plan`: the examples of an epoch as index batches and the
  loss of a batch (a :class:`TrainingPlan`);
* :meth:`~SemanticIDMethod.decode`: the constrained beam search for a batch of users;
* and, when it installs more than the trie, :meth:`~SemanticIDMethod.set_ids`.

Two backbones sit on it: the T5-style seq2seq of TIGER's family, P5-CID, BLOGER and UniVA
(:class:`methods.semid.generative.GenerativeMethod`), and a causal language model with LoRA
(:class:`methods.lcrec.LCRec`).  A method on a backbone writes only its tokenizer
(:meth:`~SemanticIDMethod.build_ids`) and what is its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from bench.errors import UserError
from bench.method import DecodeRequest, EvalBatch, Method
from bench.semantic_ids import SemanticIDs
from bench.training import LossFn, train
from methods.semid.beam import BeamResult, PrefixTrie

SCHEDULES = ("cosine", "constant", "rsqrt")


@dataclass
class SemanticIDTraining:
    """The training and decoding options every semantic-ID backbone shares (defaults: LETTER's
    released TIGER settings; a backbone's config may declare other defaults)."""

    lr: float = 5e-4
    weight_decay: float = 0.01
    lr_schedule: str = field(default="cosine", metadata={"before": "cosine"})  # cosine | constant | rsqrt (1/sqrt(step) after warm-up)
    warmup_ratio: float = 0.01  # of all steps (epochs x steps per epoch)
    grad_clip: float = 1.0  # max gradient norm, 0 = off
    batch_size: int = 1024  # examples per optimizer step
    micro_batch_size: int = field(default=0, metadata={"before": 0, "min": 0})  # examples per forward pass (gradient accumulation, same update); 0 = the whole batch
    epochs: int = 200
    patience: int = 10  # validations without improvement
    eval_every: int = 2
    beam: int = 100  # final validation and test
    valid_beam: int = 20  # validations during training (early stopping)

    def __post_init__(self):
        if self.lr_schedule not in SCHEDULES:
            raise UserError(f"option lr_schedule: expected one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        for name in ("beam", "valid_beam", "batch_size"):  # (bench.config.check_range checks every count given on the command line)
            if getattr(self, name) < 1:
                raise UserError(f"option {name}: expected a positive integer, got {getattr(self, name)}")


@dataclass
class TrainingPlan:
    """What a backbone hands the shared loop: the loss of a batch of example indices (the mean
    over what ``weight`` counts), each epoch's index batches, and the examples per epoch."""

    loss: LossFn
    batches: Callable[[], Iterable[torch.Tensor]]
    examples: int  # per epoch (sizes the learning-rate schedule)
    weight: Callable[[torch.Tensor], float] | None = None  # what a micro-batch's loss averages over (None: its examples)
    after_step: Callable[[int, torch.Tensor], None] | None = None  # (step, loss) after every optimizer step


class SemanticIDMethod(Method):
    """Base class: a backbone implements ``build_model``, ``training_plan`` and ``decode``; a
    method implements ``build_ids``."""

    output = "lists"
    GENERATION_COUNTS = ("users", "slots", "generated", "invalid", "duplicates")

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.semantic_ids: SemanticIDs | None = None
        self.model: nn.Module | None = None
        self.stage = "supervised"  # the training stage running (bench.training's stages; UniVA adds "rl")
        self.steps = 0  # optimizer steps over all epochs (in checkpoints)
        self.reset_generation_stats()

    # ---- the tokenizer step, the one thing a method provides ---------------------------------
    def build_ids(self) -> SemanticIDs:
        raise NotImplementedError

    def tokenizer_stage(self) -> SemanticIDs:
        """:meth:`build_ids` as a stage of training (``ctx.stage``): a resumed run takes the IDs its
        checkpoint holds instead of training the tokenizer again.  A method whose tokenizer is
        more than its IDs (BLOGER's, which trains on) overrides this."""
        return self.ctx.stage("semantic_ids", self.build_ids)

    # ---- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build the IDs (timed), install them, and build the model."""
        self.ctx.synchronize()
        t0 = time.perf_counter()
        ids = self.tokenizer_stage()
        self.ctx.synchronize()
        self.ctx.efficiency["tokenizer_seconds"] = time.perf_counter() - t0
        self.set_ids(ids)
        self.model = self.build_model()
        self.ctx.info["semantic_ids"] = {
            "source": ids.source, "sizes": list(ids.sizes), "levels": ids.levels,
            "unique_fraction": ids.unique_fraction(), "prefixes_per_depth": self.trie.prefixes_per_depth(),
        }  # fmt: skip

    def set_ids(self, ids: SemanticIDs) -> None:
        """Install ``ids`` and their trie.  Once the model exists (a tokenizer that changes during
        training), the level sizes must stay as they are: the vocabulary is fixed."""
        if ids.n_items != self.data.n_items:
            raise ValueError(f"{self.name}: IDs for {ids.n_items} items, the data has {self.data.n_items}")
        if self.model is not None and ids.sizes != self.semantic_ids.sizes:
            raise ValueError(f"{self.name}: new IDs have level sizes {ids.sizes}, the model's vocabulary was built for {self.semantic_ids.sizes}")
        self.semantic_ids = ids
        self.trie = PrefixTrie.build(ids, self.device)

    def build_model(self) -> nn.Module:
        """The backbone's model, on the device, once the IDs are installed."""
        raise NotImplementedError

    # ---- training ----------------------------------------------------------------------------
    def training_plan(self) -> TrainingPlan:
        """The backbone's examples, batches and loss (called once the model exists)."""
        raise NotImplementedError

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; as the Hugging Face Trainer, no weight decay on
        vectors (norms, biases) and on relative position bias tables."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.dim() > 1 and "bias.table" not in n]
        no_decay = [p for _, p in named if not any(p is q for q in decay)]
        groups = [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr)

    def lr_factor(self, step: int, total: int) -> float:
        """The learning rate's factor at optimizer step ``step`` of ``total``: linear warm-up over
        ``warmup_ratio`` of the steps (from 1/warm-up at the first step), then ``lr_schedule``."""
        cfg = self.config
        warm = max(1, int(round(cfg.warmup_ratio * total)))
        if step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "constant":
            return 1.0
        if cfg.lr_schedule == "rsqrt":
            return math.sqrt(warm / (step + 1))
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def checkpoint_module(self) -> nn.Module:
        """What early stopping keeps and restores: the model (a method whose tokenizer trains too
        returns a module holding both; a mostly frozen model, only its trainable tensors)."""
        return self.model

    def selection_request(self) -> DecodeRequest:
        """The decode request of the validations that select the checkpoint: at ``valid_beam``."""
        return DecodeRequest("validation", beam=self.config.valid_beam)

    def after_selection(self) -> None:
        """Called once the selected checkpoint is restored, before the final evaluation."""

    def fit(self) -> None:
        self.prepare()
        cfg = self.config
        plan = self.training_plan()
        opt = self.optimizer()
        self.steps_per_epoch = max(1, math.ceil(plan.examples / cfg.batch_size))
        total = cfg.epochs * self.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self.lr_factor(s, total))
        self.ctx.info["lr_steps_planned"] = total

        def after_step(loss: torch.Tensor) -> None:
            if plan.after_step is not None:
                plan.after_step(self.steps, loss)
            self.steps += 1

        try:
            train(self.ctx, self.model, opt, plan.loss, plan.batches, cfg.epochs, cfg.patience, cfg.eval_every, grad_clip=cfg.grad_clip,
                  scheduler=sched, after_step=after_step, select=self.checkpoint_module(), request=self.selection_request(),
                  micro_batch=cfg.micro_batch_size, weight=plan.weight, stage=self.stage)  # fmt: skip
            self.after_selection()
        finally:
            self.reset_generation_stats()  # count generations of the final validation and test only

    def extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]

    def artifacts(self) -> list:
        return [self.semantic_ids] if self.semantic_ids is not None else []

    # ---- recommendation ----------------------------------------------------------------------
    def decode(self, batch: EvalBatch, beam: int, k: int) -> BeamResult:
        """The backbone's constrained beam search for ``batch`` at ``beam``, the top ``k`` items."""
        raise NotImplementedError

    @torch.no_grad()
    def recommend(self, batch: EvalBatch, k: int) -> torch.Tensor:
        beam = self.request.beam_or(self.decode_config.beam)
        res = self.decode(batch, beam, k)
        self.count_generations(res, len(batch.users), beam)
        return res.items

    def reset_generation_stats(self) -> None:
        self._gen = dict.fromkeys(self.GENERATION_COUNTS, 0)

    def count_generations(self, res: BeamResult, users: int, beam: int) -> None:
        """Add a decode's counts to the record's ``generation_stats`` (the final validation's and
        the test's: :meth:`fit` resets them after training)."""
        g = self._gen
        g["users"] += users
        g["slots"] += users * beam
        g["generated"] += res.generated
        g["invalid"] += res.invalid
        g["duplicates"] += res.duplicates
        self.ctx.info["generation_stats"] = {
            "beam": beam, "valid_beam": self.config.valid_beam, "users": g["users"],
            "invalid_rate": g["invalid"] / max(1, g["generated"]),
            "duplicate_rate": g["duplicates"] / max(1, g["generated"]),
            "empty_beam_rate": 1.0 - g["generated"] / max(1, g["slots"]),  # beam slots left without a valid ID
        }  # fmt: skip
