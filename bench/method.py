"""The uniform interface every method implements.

A method is trained with :meth:`Method.fit` on the training interactions and then asked
for either full-catalog scores (``output = "scores"``) or ranked item lists
(``output = "lists"``) for batches of users.  It never sees validation or test targets:
for early stopping it calls ``ctx.validate()``, which the harness answers with its own
metrics on the validation split.  See ``methods/pop.py`` for the smallest example.
"""

from __future__ import annotations

import abc
import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from bench.split import Sequences


@dataclass(frozen=True)
class TrainData:
    train: Sequences  # row u = training interactions of user u, oldest first
    n_users: int
    n_items: int
    item_text: dict[str, list[str]]  # field -> per-item text
    item_value: np.ndarray | None
    dataset: str
    item_ids: np.ndarray | None = None  # original item id strings (ASIN, ...), index = item; for mapping external indices, never a feature
    data_dir: Path | None = None  # the local data directory (resolved by the command line: bench.paths), None when there is none
    cache_dir: Path | None = None  # the cache directory (resolved: bench.paths); None only for data made outside a run
    source_dir: Path | None = None  # the dataset's own local folder (files given beside the data), None when not local


DECODE_PHASES = ("validation", "test", "supplementary")


@dataclass(frozen=True)
class DecodeRequest:
    """What the harness asks of one evaluation pass, handed to the method for that pass (as
    lm-evaluation-harness hands its model request objects): the phase, the beam where the
    caller names one (None: the method's own for the phase, ``beam``), and decode-time options
    that differ from the method's config for this pass (a supplementary pass's
    :meth:`Method.test_variants` entry, e.g. UniVA's ``{"beta": 0.5}`` or ``{"decode": "exact"}``).
    Methods read it as :attr:`Method.request` and :attr:`Method.decode_config`; they never set it."""

    phase: str = "test"
    beam: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.phase not in DECODE_PHASES:
            raise ValueError(f"decode request phase {self.phase!r}: expected one of {', '.join(DECODE_PHASES)}")

    def beam_or(self, default: int) -> int:
        """The beam this request names, else ``default`` (the method's own)."""
        return self.beam if self.beam is not None else default


@dataclass
class EvalBatch:
    users: torch.Tensor  # (B,) long, on the method's device
    history: torch.Tensor  # (B, L) long, right-aligned (most recent last), -1 = padding
    lengths: torch.Tensor  # (B,) long, number of real items in each row of ``history``


@dataclass
class Context:
    """What the harness hands a method: device, seeds, validation, progress and records."""

    device: torch.device  # resolved once (bench.runner.resolve_device); methods read it here or as Method.device
    seed: int
    # harness metrics on the validation split, current state; an optional DecodeRequest (phase
    # "validation") names the beam or options of that pass (e.g. a smaller beam while training)
    validate: Callable[..., dict[str, float]]
    select_metric: str = "ndcg@10"
    progress: bool = False
    log: bool = False  # print one plain line per validation to stderr (when there are no progress bars)
    label: str = ""  # names the run in progress bars and log lines, e.g. "[beauty tiger seed 0]"
    precision: str = "fp32"  # "fp32" or "bf16" (resolved by the harness from --precision): the training matmuls' type
    info: dict[str, Any] = field(default_factory=dict)  # training facts: the record's "training" section
    efficiency: dict[str, Any] = field(default_factory=dict)  # timings and counts: merged into the record's "efficiency"
    checkpoints: Any = None  # the run's bench.checkpoint.Checkpointer (None: no checkpoints, e.g. a model trained outside a run)
    generators: dict[str, Any] = field(default_factory=dict)  # every generator handed out below, by name: saved in checkpoints

    def numpy_rng(self, *names: str) -> np.random.Generator:
        """A generator seeded from (run seed, names), independent across names."""
        return self._keep("numpy", names, np.random.default_rng(seed_sequence(self.seed, *names)))

    def seed_for(self, *names: str, high: int = 2**31) -> int:
        """An integer seed in [0, high) from (run seed, names), independent across names: the first
        draw of :meth:`numpy_rng`'s generator for ``names`` (that generator is not kept)."""
        return int(np.random.default_rng(seed_sequence(self.seed, *names)).integers(high))

    def torch_generator(self, *names: str) -> torch.Generator:
        seed = self.seed_for(*names, high=2**62)
        return self._keep("torch", names, torch.Generator(device=self.device).manual_seed(seed))

    def _keep(self, kind: str, names: tuple[str, ...], generator):
        key = f"{kind}:{'/'.join(names)}"
        n = sum(k == key or k.startswith(key + "#") for k in self.generators)
        self.generators[f"{key}#{n + 1}" if n else key] = generator
        return generator

    def stage(self, name: str, make: Callable[[], Any]) -> Any:
        """``make()``: a stage of training that a resumed run does not redo (a tokenizer and its
        IDs).  Its result is kept in the run's checkpoints; resuming, the saved result is returned
        and ``make`` is not called, so ``make`` should change nothing else that the run reads
        later (or the method restores that in :meth:`Method.load_extra_state`)."""
        return make() if self.checkpoints is None else self.checkpoints.stage(name, make)

    def autocast_settings(self, decoding: bool = False) -> dict[str, Any]:
        """``torch.autocast``'s arguments under the run's precision: bf16 for training forward
        passes when the precision is bf16; for decoding (beam search, exact scoring) only on
        CUDA, as on a CPU every record so far was decoded in fp32 (bf16 decoding there is a
        measured speed lead that awaits its own parity check)."""
        enabled = self.precision == "bf16" and (not decoding or self.device.type == "cuda")
        return dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def autocast(self):
        """bf16 autocast for the training forward pass when the run's precision is bf16 (a no-op
        context otherwise).  Losses and logits that feed them are taken in fp32 (``.float()``)."""
        return torch.autocast(**self.autocast_settings())

    def child(self, *names: str) -> Context:
        """The context of a sub-training inside this run (e.g. LETTER's CF SASRec): the run's
        device and precision, its own seed (:meth:`seed_for` of ``names``), its own generators and
        facts, no progress, no checkpoints, and no validation (a sub-training does not select)."""

        def no_validation() -> dict[str, float]:
            raise RuntimeError(f"{self.label} {'/'.join(names)}: a sub-training has no validation")

        return Context(device=self.device, seed=self.seed_for(*names), validate=no_validation, select_metric=self.select_metric,
                       label=f"{self.label} {'/'.join(names)}".strip(), precision=self.precision)  # fmt: skip

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def seed_sequence(seed: int, *names: str) -> np.random.SeedSequence:
    """Independent, reproducible seed material for (seed, names): stable across runs and machines."""
    return np.random.SeedSequence([seed, *[zlib.crc32(n.encode()) for n in names]])


class Method(abc.ABC):
    """Base class. Subclasses set ``name``, ``Config`` and ``output`` and implement ``fit``
    plus ``score`` (for ``output = "scores"``) or ``recommend`` (for ``output = "lists"``)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line for `python -m bench list`
    Config: ClassVar[type] = object
    output: ClassVar[str] = "scores"
    # Named settings declared beside the config defaults, applied with ``--preset NAME`` before
    # any ``--set``/``--config`` override: ``{"cpu": {"d_model": 64, "beam": 20}}``.  Every method
    # declares ``cpu``: one seed on Scientific trains to early stopping within about 45 minutes on
    # one core (docs/protocol.md, "Presets").  Records of a preset are kept apart (``<dataset>@<preset>``).
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    footnote: ClassVar[str] = ""  # a caveat the leaderboard prints under every table holding this method
    # What the method reads beyond interactions (names of ``bench.data.registry.INPUTS``, e.g. "item_text"):
    # a dataset whose copy lacks one is a declared gap for the method, skipped in plans and on boards.
    needs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def missing_inputs(cls, provides) -> list[str]:
        """The inputs the method needs that a dataset offering ``provides`` lacks (empty: it can run)."""
        return [n for n in cls.needs if n not in provides]

    # The decode request of the evaluation pass running now (bench.evaluate.Evaluator hands it to
    # the method for the pass, and restores the previous one after it); between passes, a test
    # pass at the config's own settings.
    request: DecodeRequest = DecodeRequest()

    def __init__(self, config: Any, data: TrainData, ctx: Context):
        self.config = config
        self.data = data
        self.ctx = ctx
        self.device = ctx.device

    @property
    def decode_config(self) -> Any:
        """The config as the current pass decodes: ``config`` with the request's options applied."""
        return dataclasses.replace(self.config, **self.request.options) if self.request.options else self.config

    @property
    def history_cap(self) -> int | None:
        """How many of the most recent history items the method reads (``None`` = all)."""
        return getattr(self.config, "max_len", None)

    @classmethod
    def prepare_dataset(cls, data: TrainData, config: Any, device: torch.device) -> dict[str, Any] | None:
        """Work that depends only on the dataset and the config, done once per dataset before
        runs fan out, and cached on disk so that no two workers ever make it (e.g. item text
        embeddings).  Returns facts for the run plan, or None when there is nothing to do."""
        return None

    @abc.abstractmethod
    def fit(self) -> None:
        """Train on ``self.data``; select the checkpoint with ``ctx.validate()``."""

    def score(self, batch: EvalBatch) -> torch.Tensor:
        """(B, n_items) scores; higher is better."""
        raise NotImplementedError(f"{self.name} produces ranked lists, not scores")

    def recommend(self, batch: EvalBatch, k: int) -> torch.Tensor:
        """(B, >=k) item ids, best first, -1 for "no item"."""
        raise NotImplementedError(f"{self.name} produces scores, not ranked lists")

    # ---- what the method adds to its record ----------------------------------------------------
    def report(self) -> dict[str, dict[str, Any]]:
        """The method's own sections of the result record, ``{section: {...}}``.  The default is
        the training facts gathered in ``ctx.info`` as ``"training"``; a method may add
        sections of its own.  A section may not reuse a name the harness writes (metrics,
        protocol, efficiency, provenance, ...)."""
        return {"training": dict(self.ctx.info)}

    def test_variants(self) -> dict[str, dict[str, Any]]:
        """Supplementary test passes of the selected checkpoint with decode-time options changed,
        ``{label: {option: value}}`` (e.g. a value-guided beam at several weights).  The harness
        runs each after the headline test pass and records its metrics under
        ``test_metrics_variants``; selection and the headline never see them.  Default: none."""
        return {}

    @property
    def active_output(self) -> str:
        """What the method returns under its current config, "scores" or "lists": ``output`` by
        default; a method with a decode-time option that switches it (a generative method's exact
        ranking, scores over the catalogue instead of the beam's lists) says so here.  The
        harness asks this at every pass."""
        return self.output

    def pass_report(self) -> dict[str, Any]:
        """Facts the method measured during the supplementary pass just run (e.g. how much of an
        exact ranking the headline beam found), recorded beside that pass's metrics; {} = none."""
        return {}

    # ---- training state a checkpoint holds beyond the shared loop's --------------------------
    def extra_state(self) -> dict[str, Any]:
        """The method's own training state that a checkpoint must hold besides what the shared
        loop saves (the modules, optimizers and schedules given to ``Selection``, every generator
        from ``ctx``, the global generators, ``ctx.info``/``ctx.efficiency`` and Selection's own
        state): counters, a second optimizer, IDs that change while training.  Taken at every
        epoch boundary; default: nothing."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned, on resuming: called once the method has set
        itself up as usual and the loop's modules, optimizers and generators are restored."""

    def artifacts(self) -> list[Any]:
        """Objects the harness measures the same way for every method, recognised by type:
        a :class:`bench.semantic_ids.SemanticIDs` gets the ``codebook`` section."""
        return []

    def modules(self) -> list[torch.nn.Module]:
        """The torch modules whose parameters count as the model (for the record)."""
        return [v for v in vars(self).values() if isinstance(v, torch.nn.Module)]

    def parameter_counts(self) -> dict[str, int]:
        params = {id(p): p for m in self.modules() for p in m.parameters()}.values()
        return {
            "params_total": int(sum(p.numel() for p in params)),
            "params_trainable": int(sum(p.numel() for p in params if p.requires_grad)),
        }

    def eval(self) -> None:
        for m in self.modules():
            m.eval()
