"""The one training loop every gradient-trained method uses, and early stopping with
checkpoint selection on validation.

A method configures the loop with what is its own: the optimizer, a ``loss(idx)`` function
of a batch of example indices, and the epoch's batches (shuffled, or length-grouped); the
loop does the rest the same way for everyone: mixed precision (``ctx.autocast()``: bf16
where the run's precision says so, fp32 otherwise), micro-batch gradient accumulation, the
optimizer step with optional gradient clipping and scheduler, the loss curve, validation
and selection.  Speed work and fixes land here once.

Stages (docs/protocol.md §7, "Training stages"): a method that trains in more than one
stage (UniVA: supervised, then RL) runs one loop per stage, each with its own optimizer and
:class:`Selection`, named by ``stage``; a later stage may start from the state the previous
one selected (``incumbent``: that state's validation value, so the stage keeps it unless a
validation beats it).  Every stage's curves land under the record's one key for them,
``training.stages.<name>``: validation curve, best value and epoch, epochs run, mean epoch
seconds, loss curve, per-epoch statistics and the stage it started from.  The first stage
is also the record's headline training facts (``training.valid_curve``,
``efficiency.epochs_run``, ...); a later stage's efficiency keys carry its name as a prefix
(``rl_epochs_run``), and ``efficiency.train_epochs_seconds_total`` sums every stage.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from bench.errors import UserError
from bench.method import Context, DecodeRequest


class Selection:
    """Validate every ``eval_every`` epochs, keep the best state, stop after ``patience``
    validations without improvement, and restore the best state at the end.

    Records epoch timings and the validation curve in ``ctx.info``.

    ``state``: the training objects of the loop besides ``module`` (optimizer, learning-rate
    schedule, a generator of the method's own: anything with ``state_dict()`` or a generator),
    by name.  With it, the run's checkpoints (``ctx.checkpoints``, :mod:`bench.checkpoint`) hold
    the loop at every epoch boundary and a resumed run goes on from there; ``None`` (a loop
    whose training state is not declared) takes no checkpoints.

    ``stage``: the stage's name (see the module's docstring); ``incumbent``: the validation value
    of ``module``'s state as the loop starts (the previous stage's selection), kept as the best
    state (epoch 0) until a validation beats it; None = no incumbent (the first validation wins).
    """

    def __init__(self, ctx: Context, module: torch.nn.Module, epochs: int, patience: int, eval_every: int = 1,
                 state: dict[str, Any] | None = None, request: DecodeRequest | None = None, stage: str = "train",
                 incumbent: float | None = None):  # fmt: skip
        self.ctx, self.module, self.stage = ctx, module, stage
        self.request = request  # the decode request of each validation (e.g. a smaller beam while training), None = the harness's
        self.epochs, self.patience, self.eval_every = epochs, patience, max(1, eval_every)
        self.state = None if state is None else {"module": module, **state}
        self.best_value = -math.inf
        self.best_epoch = 0
        self.best_state = None
        self.bad = 0
        self.epoch = 0  # the last epoch that ended
        self.done = False  # stopped early or ran every epoch
        self.epoch_seconds: list[float] = []
        self.curve: list[tuple[int, float]] = []
        self.losses: list[float] = []  # the mean training loss of each epoch, for loops that report one (train())
        self.stats: list[dict[str, float]] = []  # per-epoch statistics of the stage's own (train(epoch_stats=...))
        stages = ctx.info.setdefault("stages", {})
        self.first = not stages or next(iter(stages)) == stage  # the run's first stage: the record's headline training facts
        self.starts_from = None if self.first else list(stages)[-1]
        if incumbent is not None:  # epoch 0: the state the loop starts from
            self.best_value, self.best_state = incumbent, {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._t0 = 0.0
        self.bar = tqdm(total=epochs, desc=f"{ctx.label} train".strip(), disable=not ctx.progress or None, leave=False)

    def __iter__(self):
        ckpt = self.ctx.checkpoints
        if ckpt is not None:
            ckpt.loop_started(self)  # a resumed run: this loop's saved state (and, for the loop that ran, the whole training state)
            self.bar.update(self.epoch)
        for epoch in range(self.epoch + 1, self.epochs + 1):
            if self.done:
                break
            self.ctx.synchronize()
            self._t0 = time.perf_counter()
            yield epoch
            stop = self._after(epoch)
            self.epoch, self.done = epoch, stop or epoch == self.epochs
            if ckpt is not None:
                ckpt.epoch_end(self)
            if stop:
                break
        self.finish()

    _STATE = ("epoch", "done", "best_value", "best_epoch", "best_state", "bad", "epoch_seconds", "curve", "losses", "stats")

    def state_dict(self) -> dict[str, Any]:
        """The loop's own state (the best snapshot is never changed in place, so it is shared)."""
        return {k: (list(getattr(self, k)) if isinstance(getattr(self, k), list) else getattr(self, k)) for k in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self._STATE:
            setattr(self, k, list(state[k]) if isinstance(state[k], list) else state[k])

    def _after(self, epoch: int) -> bool:
        self.ctx.synchronize()
        self.epoch_seconds.append(time.perf_counter() - self._t0)
        self.bar.update(1)
        if epoch % self.eval_every and epoch != self.epochs:
            return False
        was_training = self.module.training
        self.module.eval()
        value = (self.ctx.validate() if self.request is None else self.ctx.validate(self.request))[self.ctx.select_metric]
        if value is None:
            raise UserError(f"selection metric {self.ctx.select_metric} is missing on validation: the method's ranked lists "
                            f"are shorter than its cutoff (raise the validation beam or choose another --select-metric)")
        self.module.train(was_training)
        self.curve.append((epoch, round(value, 6)))
        self.bar.set_postfix({self.ctx.select_metric: f"{value:.4f}", "best": f"{max(value, self.best_value):.4f}"})
        if self.ctx.log:
            best, at = (value, epoch) if value > self.best_value else (self.best_value, self.best_epoch)
            print(f"{self.ctx.label or ' '} epoch {epoch}/{self.epochs}: valid {self.ctx.select_metric} {value:.4f} (best {best:.4f} at {at}), "
                  f"{sum(self.epoch_seconds) / len(self.epoch_seconds):.1f} s/epoch", file=sys.stderr, flush=True)
        if value > self.best_value:
            self.best_value, self.best_epoch, self.bad = value, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def finish(self) -> None:
        self.bar.close()
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)
        self.module.eval()
        facts = {"epochs_run": len(self.epoch_seconds), "best_epoch": self.best_epoch,
                 "epoch_seconds_mean": sum(self.epoch_seconds) / max(1, len(self.epoch_seconds)),
                 "train_epochs_seconds_total": sum(self.epoch_seconds)}  # fmt: skip
        info, eff = self.ctx.info, self.ctx.efficiency
        info["stages"][self.stage] = {"valid_curve": self.curve, "best_valid": self.best_value, **facts,
                                      "train_loss_curve": self.losses, "epoch_stats": self.stats, "starts_from": self.starts_from}  # fmt: skip
        if self.first:
            eff.update(facts)
            info.update(valid_curve=self.curve, best_valid=self.best_value)
        else:
            eff.update({f"{self.stage}_{k}": v for k, v in facts.items()})
            eff["train_epochs_seconds_total"] = sum(s["train_epochs_seconds_total"] for s in info["stages"].values())
            info["best_valid"] = self.best_value  # the selected state's value: this stage's, or the incumbent it kept


def adam(params, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam (L2 ``weight_decay`` added to the gradient, as ``torch.optim.Adam``), with PyTorch's
    fused kernel where every parameter is a floating tensor on a CPU or CUDA device: the same
    update, one pass over each parameter instead of a chain of element-wise ops.  On one core
    at Caser's Beauty size (3.3M parameters) a step took 5.4 ms fused against 28.8 ms."""
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


LossFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def run_epoch(ctx: Context, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
              batches: Iterable[torch.Tensor], grad_clip: float = 0.0, scheduler=None,
              after_step: Callable[[torch.Tensor], None] | None = None, micro_batch: int = 0,
              weight: Callable[[torch.Tensor], float] | None = None, train_mode: bool = True) -> float:  # fmt: skip
    """One pass: for each batch, the loss under ``ctx.autocast()`` (``None`` skips the batch),
    backward, optional clipping of ``model``'s gradients, the optimizer and scheduler steps,
    then ``after_step(loss)``.  Returns the mean batch loss; the losses are summed on the
    device, so the pass synchronizes once, at its end.

    ``micro_batch`` > 0: a batch larger than that is run as consecutive micro-batches of that
    many examples, their gradients accumulated before the one optimizer step: the update of
    the whole batch, in a fraction of the memory.  ``loss_fn`` returns the mean over its
    examples (or over whatever ``weight`` counts: e.g. the response tokens of a language model's
    examples), so micro-batch ``m`` of batch ``b`` enters with the factor ``weight(m) / weight(b)``
    (default ``weight``: the number of examples).  ``train_mode=False`` trains with the model
    in eval mode (no dropout: e.g. an RL stage whose samples and gradient must see the same policy)."""
    model.train(train_mode)
    total = torch.zeros((), device=ctx.device)
    n = 0
    for idx in batches:
        if micro_batch <= 0 or len(idx) <= micro_batch:
            with ctx.autocast():
                loss = loss_fn(idx)
            if loss is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        else:
            size = weight or len
            whole = float(size(idx))
            loss, parts = torch.zeros((), device=ctx.device), 0
            optimizer.zero_grad(set_to_none=True)
            for part in idx.split(micro_batch):
                with ctx.autocast():
                    part_loss = loss_fn(part)
                if part_loss is None:
                    continue
                share = float(size(part)) / whole
                (part_loss * share).backward()
                loss, parts = loss + part_loss.detach().float() * share, parts + 1
            if not parts:
                continue
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(loss.detach())
        total += loss.detach().float()
        n += 1
    return float(total) / max(1, n)


def train(ctx: Context, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
          batches: Callable[[], Iterable[torch.Tensor]], epochs: int, patience: int, eval_every: int = 1,
          grad_clip: float = 0.0, scheduler=None, after_step: Callable[[torch.Tensor], None] | None = None,
          select: torch.nn.Module | None = None, request: DecodeRequest | None = None, micro_batch: int = 0,
          weight: Callable[[torch.Tensor], float] | None = None, stage: str = "train", incumbent: float | None = None,
          state: dict[str, Any] | None = None, epoch_stats: Callable[[], dict[str, float]] | None = None,
          train_mode: bool = True) -> list[float]:  # fmt: skip
    """Train under :class:`Selection`: ``batches()`` gives each epoch's index batches.
    ``select`` is what early stopping keeps and restores (default ``model``; e.g. a module
    holding a tokenizer trained alongside, or only the trainable tensors of a model that is
    mostly frozen).  The mean loss of every epoch goes to ``ctx.info["train_loss_curve"]`` (the
    first stage's) and the stage's entry, and is returned.

    ``micro_batch``, ``weight``, ``train_mode``: see :func:`run_epoch`.  ``stage``, ``incumbent``:
    see :class:`Selection`.  ``state``: training objects of the method's own besides the
    optimizer and schedule (a generator, ...) that checkpoints hold.  ``epoch_stats()``, when
    given, is called after each epoch's pass; its dict joins the stage's ``epoch_stats``."""
    select = select if select is not None else model
    state = {"optimizer": optimizer, **({"scheduler": scheduler} if scheduler is not None else {}), **(state or {})}
    held = {id(p) for p in select.parameters()}
    if not all(id(p) in held for p in model.parameters() if p.requires_grad):
        state["model"] = model  # what trains is not all in ``select``: the checkpoint holds the model too
    selection = Selection(ctx, select, epochs, patience, eval_every, state=state, request=request, stage=stage, incumbent=incumbent)
    for _ in selection:
        loss = run_epoch(ctx, model, optimizer, loss_fn, batches(), grad_clip, scheduler, after_step, micro_batch, weight, train_mode)
        selection.losses.append(round(loss, 5))
        if epoch_stats is not None:
            selection.stats.append(epoch_stats())
        if selection.first:
            ctx.info["train_loss_curve"] = selection.losses
    if selection.first:
        ctx.info["train_loss_curve"] = selection.losses  # also for a loop a resumed run found ended (it runs no epoch)
    return selection.losses
