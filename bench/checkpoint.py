"""Training-state checkpoints: runs that outlive an interruption (docs/protocol.md §7).

While a method trains, :class:`Checkpointer` keeps the whole training state as of the last
epoch boundary in memory, and writes it beside the run's claim as ``seed<k>.ckpt``
(atomically: a temporary name, then a rename) every ``--checkpoint-every`` minutes and at
once when the run is interrupted (SIGTERM, SIGINT, a Slurm time limit).  The file is deleted
when the record lands.  A re-run of the same command resumes from it (``--resume``).

What a checkpoint holds, all taken at one epoch boundary, so the state is consistent:

* every training loop's :class:`bench.training.Selection` state (epoch, best snapshot,
  validation curve, patience counter, loss curve), in the order the loops ran: a method with
  two stages (UniVA's supervised then RL loop) resumes in the stage it was in;
* the state of the objects the running loop declared (``Selection(..., state=...)``: its
  module, optimizer, learning-rate schedule; :func:`bench.training.train` declares them);
* every generator derived from the run's context (``ctx.torch_generator``/``ctx.numpy_rng``)
  and the global torch, CUDA, numpy and Python generators;
* ``ctx.info`` and ``ctx.efficiency`` (the record's training facts so far);
* the results of stages a resumed run does not redo (``ctx.stage``: a tokenizer, the IDs);
* the method's own extra state (:meth:`bench.method.Method.extra_state`);
* what identifies the run: config, code version, data fingerprint, package versions and the
  harness's settings; a checkpoint that differs in any of them is not used (one line says
  why) unless ``--resume force``.

A loop that declares no state (``Selection(..., state=None)``: a method with its own loop
whose optimizer the harness does not know) takes no checkpoints, so it is never resumed
from a partial state.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.results import _atomic

FORMAT = 1
RESUME_MODES = ("auto", "force", "off")
_ACTIVE: list["Checkpointer"] = []  # the checkpointer of the run this process is training (Slurm's requeue writes it)


def checkpoint_path(record: Path) -> Path:
    """``seed<k>.ckpt`` beside ``seed<k>.json`` and its claim."""
    return record.with_name(record.name.replace(".json", ".ckpt"))


def copy_state(value: Any) -> Any:
    """A copy of ``value`` that later training cannot change: tensors detached and copied to the
    CPU (a checkpoint costs no GPU memory), containers copied, anything else deep-copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: copy_state(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(copy_state(v) for v in value)
    return copy.deepcopy(value)


def state_of(obj: Any) -> Any:
    """The state of a declared training object: a generator's state, or ``state_dict()``."""
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state
    return copy_state(obj.state_dict())


def load_state(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = state
    else:
        obj.load_state_dict(state)


def global_rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def identity_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why a checkpoint with identity ``saved`` may not resume a run with identity ``current``
    (one phrase), or None when they agree."""

    def diff(a: Any, b: Any) -> str:
        if isinstance(a, dict) and isinstance(b, dict):
            keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
            shown = ", ".join(f"{k} {a.get(k, '(none)')!r} in it, {b.get(k, '(none)')!r} here" for k in keys[:3])
            return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        return f"{a!r} in it, {b!r} here"

    for key, what in (("config", "its config differs"), ("harness", "the run's settings differ"),
                      ("code", "it was written by another code version"), ("data_fingerprint", "its data fingerprint differs"),
                      ("packages", "its package versions differ")):  # fmt: skip
        if saved.get(key) != current.get(key):
            return f"{what} ({diff(saved.get(key), current.get(key))})"
    return None


def read_checkpoint(path: Path, identity: dict[str, Any], mode: str, label: str, log: Callable[[str], None]) -> dict | None:
    """The checkpoint at ``path`` if the run may resume from it (``mode``: auto, force, off),
    else None, with one line on ``log`` saying why it is not used."""
    if mode not in RESUME_MODES:
        from bench.errors import UserError

        raise UserError(f"--resume {mode!r}: expected one of {', '.join(RESUME_MODES)}")
    if mode == "off" or not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise ValueError(f"format {saved.get('format') if isinstance(saved, dict) else '?'}, expected {FORMAT}")
    except Exception as exc:  # noqa: BLE001 -- an unreadable checkpoint is not used, whatever the cause
        log(f"{label} not resuming from {path}: it cannot be read ({type(exc).__name__}: {exc}); starting over")
        return None
    why = identity_difference(saved["identity"], identity)
    if why is not None:
        if mode != "force":
            log(f"{label} not resuming from {path}: {why}; starting over (--resume force uses it anyway)")
            return None
        log(f"{label} resuming from {path} although {why} (--resume force)")
    return saved


class Checkpointer:
    """The checkpoints of one run (see the module's docstring).

    ``restored``: the checkpoint this run resumes from (:func:`read_checkpoint`), or None.
    ``every``: seconds between writes (the in-memory snapshot is taken at every epoch
    boundary; a write happens at the first boundary ``every`` seconds after the last one)."""

    def __init__(self, path: Path, identity: dict[str, Any], every: float, label: str = "", restored: dict | None = None,
                 log: Callable[[str], None] | None = None):  # fmt: skip
        self.path, self.identity, self.every, self.label = Path(path), identity, every, label
        self.restored = restored
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.method = None  # set by the harness once the method exists
        self.stages: dict[str, Any] = dict(restored["stages"]) if restored else {}
        self.resumed: list[dict[str, Any]] = list(restored["resumed"]) if restored else []
        self.fit_before = float(restored["fit_seconds"]) if restored else 0.0  # training seconds of earlier segments
        self.fit_started: float | None = None
        self.loops: list[Any] = []  # the Selections of this fit, in the order they started
        self.finished: list[dict[str, Any]] = []  # the final state of each loop that ended
        self.last: dict[str, Any] | None = None  # the latest epoch-boundary state
        self.unwritten = False
        self.on_disk: tuple[int, int] | None = (restored["epoch"], restored["stage"]) if restored else None  # (epoch, stage) in the file
        self.last_write = time.monotonic()
        if restored:
            self.resumed.append({"epoch": restored["epoch"], "stage": restored["stage"], "host": socket.gethostname(), "time": _now(),
                                 "threads": torch.get_num_threads(), "threads_before": restored.get("threads")})  # fmt: skip
            self.log(f"{label} resuming from epoch {restored['epoch']}" + (f" of training stage {restored['stage']}" if restored["stage"] > 1 else "")
                     + f" (saved {restored['saved_at']} on {restored['host']})")  # fmt: skip

    # ---- hooks for the context, the method and the training loop -----------------------
    def stage(self, name: str, make: Callable[[], Any]) -> Any:
        """``make()``'s result, kept for the checkpoints; a resumed run gets the saved result."""
        if self.restored is not None and name in self.restored["stages"]:
            return self.restored["stages"][name]
        value = make()
        self.stages[name] = copy_state(value)
        return value

    def loop_started(self, loop) -> None:
        """A :class:`bench.training.Selection` starts iterating.  On resume, a loop that had ended
        gets its final state back (it runs no epoch); the loop that was running gets its state
        and the whole training state of the checkpoint back, and goes on from there."""
        index = len(self.loops)
        self.loops.append(loop)
        saved = self.restored["loops"] if self.restored is not None else []
        if index >= len(saved):
            return
        loop.load_state_dict(saved[index])
        if index < len(saved) - 1:
            self.finished.append(saved[index])
            return
        r = self.restored
        for name, state in r["training_state"].items():
            if name in loop.state:
                load_state(loop.state[name], state)
        ctx = self.method.ctx
        for name, state in r["generators"].items():
            if name in ctx.generators:
                load_state(ctx.generators[name], state)
        set_global_rng_state(r["rng"])
        for target, source in ((ctx.info, r["info"]), (ctx.efficiency, r["efficiency"])):
            target.clear()
            target.update(source)
        self.method.load_extra_state(r["extra"])
        self.restored = None  # everything is back; later loops start afresh

    def epoch_end(self, loop) -> None:
        """An epoch of ``loop`` ended (validated, maybe early-stopped): keep the training state
        in memory, and write it when ``every`` seconds have passed since the last write."""
        if loop.state is None:  # a loop whose training state is not declared: no checkpoint may stand for it
            self.last, self.unwritten = None, False
            return
        index = self.loops.index(loop)
        while len(self.finished) < index:  # loops that ended before this one: their final state, once
            self.finished.append(self.loops[len(self.finished)].state_dict())
        ctx = self.method.ctx
        snapshot = {
            "format": FORMAT, "identity": self.identity, "label": self.label, "saved_at": _now(), "host": socket.gethostname(),
            "epoch": loop.epoch, "stage": index + 1, "resumed": list(self.resumed), "fit_seconds": self.fit_seconds(),
            "threads": torch.get_num_threads(),  # of the segment writing it: a resumed one may run with another count
            "stages": self.stages, "loops": [*self.finished[:index], loop.state_dict()],
            "training_state": {name: state_of(obj) for name, obj in loop.state.items()},
            "generators": {name: state_of(g) for name, g in ctx.generators.items()},
            "rng": global_rng_state(), "info": copy_state(ctx.info), "efficiency": copy_state(ctx.efficiency),
            "extra": copy_state(self.method.extra_state()),
        }  # fmt: skip
        self.last, self.unwritten = snapshot, True  # one assignment: an interruption sees the old state or the new
        if time.monotonic() - self.last_write >= self.every:
            try:
                self.write()
            except OSError as exc:  # a full or failing disk costs the checkpoint, not the run
                self.log(f"{self.label} checkpoint not written ({exc}); training goes on")
                self.last_write = time.monotonic()

    def fit_seconds(self) -> float:
        """Training seconds so far: earlier segments' (up to their checkpoint) and this one's."""
        return self.fit_before + (time.perf_counter() - self.fit_started if self.fit_started is not None else 0.0)

    # ---- the file ----------------------------------------------------------------------
    def write(self) -> bool:
        """Write the latest epoch-boundary state (atomically); False when there is none."""
        if self.last is None:
            return False
        buffer = io.BytesIO()
        torch.save(self.last, buffer)
        _atomic(self.path, lambda f: f.write(buffer.getbuffer()))
        self.last_write, self.unwritten = time.monotonic(), False
        self.on_disk = (self.last["epoch"], self.last["stage"])
        return True

    def interrupted(self) -> None:
        """The run is being stopped: write what was not written yet, and say where it is."""
        if self.unwritten:
            self.write()
        if self.on_disk is not None:
            epoch, stage = self.on_disk
            self.log(f"{self.label} checkpoint at epoch {epoch}" + (f" of training stage {stage}" if stage > 1 else "")
                     + f" kept in {self.path}; re-run the same command to resume")  # fmt: skip

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)

    # ---- the run this process trains (for Slurm's requeue, which interrupts from a signal handler) ----
    def __enter__(self):
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return False


def save_active() -> list[Path]:
    """Write the checkpoint of every run this process is training, now (from a signal handler:
    the state written is the last epoch boundary's, so it is consistent whatever the training
    was doing).  Returns the files written."""
    written = []
    for ckpt in list(_ACTIVE):
        if ckpt.write():
            written.append(ckpt.path)
    return written
