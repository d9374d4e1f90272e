"""One run: (dataset, method, seed) -> trained method -> test ranks -> result record.

A run is plain data, a picklable :class:`RunSpec`; :func:`run_one` resolves every name in
it (dataset, method, preset, device), skips a run whose record is complete, claims the run
so that no other process trains it at the same time, and calls :func:`execute`.  The CLI's
loop, local worker processes and cluster workers (SLURM through submitit, Ray) all call
:func:`run_one`; :mod:`bench.grid` plans and fans out.

The record is built from declared sections: the harness writes its own (metrics,
protocol, efficiency, provenance, ...), the method adds its own through
:meth:`bench.method.Method.report`, and artifacts the harness measures the same way for
every method are recognised by type (:class:`bench.semantic_ids.SemanticIDs` -> codebook).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import codebook, provenance
from bench.checkpoint import Checkpointer, checkpoint_path, read_checkpoint
from bench.config import config_differences, resolve_config, to_dict
from bench.errors import UserError
from bench.evaluate import Evaluator
from bench.method import Context, DecodeRequest, Method, TrainData, seed_sequence
from bench.metrics import MAX_RANK, METRIC_KEYS, summarize, tiebreak_order
from bench.paths import default_cache_dir
from bench.results import Claim, claim_path, codebook_plot_path, is_complete, new_run_id, record_path, table_name, temp_name, write_record
from bench.semantic_ids import SemanticIDs
from bench.split import Split, sample_rows
from bench.value import SECTION as VALUE_SECTION
from bench.value import value_section

PROTOCOL = {
    "split": "leave-one-out (last item test, second-to-last validation)",
    "ranking": "full catalog",
    "tie_break": "seeded random order",
    "max_rank": MAX_RANK,
}
# Sections the harness writes; a method's report() may not reuse these names.
HARNESS_SECTIONS = ("dataset", "method", "seed", "run_id", "metrics", "valid_metrics", "test_metrics_history_masked", "test_metrics_variants", "protocol",
                    "efficiency", "config", "dataset_info", "provenance", "generation", "codebook", "codebook_plot", "value_metrics",
                    "per_user", "schema")  # fmt: skip


@dataclass
class RunConfig:
    """The harness's settings for a run (the same for every method of a grid)."""

    results_dir: Path = Path("results")
    device: str = "auto"
    select_metric: str = "ndcg@10"
    eval_batch_size: int = 1024
    mask_history: bool = False  # protocol variant: never rank a user's history items (all methods alike)
    preset: str = ""  # a method-declared preset (e.g. "cpu"): its records live in their own table
    tag: str = ""  # a labeled non-default setting: its records live in their own table
    overwrite: bool = False
    progress: bool = True  # progress bars (a terminal)
    log: bool = False  # one plain line per validation on stderr instead (batch jobs, nohup, CI logs)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method name -> option -> value
    data_dir: Path | None = None  # the local data directory, resolved (bench.paths.Paths); None = none
    # canonical data, downloads and text embeddings: resolved (bench.paths.Paths) by the command line; a
    # RunConfig made without one (a script, a test) gets the default once, here
    cache_dir: Path = field(default_factory=default_cache_dir)
    download: bool = True
    threads: int | None = None  # torch CPU threads in the process that trains (None = torch's default: all cores)
    precision: str = "auto"  # "auto" (bf16 where the device supports it natively), "fp32" or "bf16"
    eval_users: int = 0  # validate and test on a seeded sample of this many users, the same for every method (0 = all)
    claim_stale_after: float = 600.0  # seconds without a heartbeat after which another worker may take a run over
    checkpoint_every: float = 10.0  # minutes between training-state checkpoints (bench.checkpoint); 0 = none
    resume: str = "auto"  # a checkpoint left by an interrupted run: auto (use it if it matches the run), force, off

    @property
    def variant(self) -> str:
        users = f"users{self.eval_users}" if self.eval_users else ""
        return "+".join(v for v in ("mask-history" if self.mask_history else "", self.preset, users, self.tag) if v)


def run_label(dataset: str, method: str, seed: int, variant: str = "") -> str:
    """How progress bars and log lines name a run: ``[beauty@cpu tiger seed 0]``."""
    return f"[{table_name(dataset, variant)} {method} seed {seed}]"


@dataclass
class RunSpec:
    """One (dataset, method, seed) run with the grid's settings: plain, picklable data."""

    dataset: str
    method: str  # a registered method name
    seed: int
    settings: RunConfig = field(default_factory=RunConfig)

    @property
    def path(self) -> Path:
        return record_path(self.settings.results_dir, self.dataset, self.method, self.seed, self.settings.variant)

    @property
    def label(self) -> str:
        return run_label(self.dataset, self.method, self.seed, self.settings.variant)


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "done", "skipped" (record exists), "busy" (claimed by another live worker), "failed"
    path: Path
    seconds: float = 0.0
    message: str = ""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16): there bf16 matmuls
    are about twice as fast as fp32; elsewhere they are emulated and slower."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(name: str, device: torch.device) -> str:
    """``--precision`` for ``device``: ``auto`` is bf16 on a CUDA device with bf16 and on a CPU
    with native bf16, fp32 elsewhere.  Training forward passes run under bf16 autocast;
    logits and losses stay fp32 (``Context.autocast``)."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r}: expected one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, *names: str) -> int:
    return int(seed_sequence(seed, *names).generate_state(1, dtype=np.uint64)[0] % 2**62)


class PeakMemory:
    """Peak GPU memory (torch.cuda.max_memory_allocated) or peak RSS of this process."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # Linux: writing 5 resets the process's peak RSS (VmHWM)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def read(self) -> dict:
        if self.device.type == "cuda":
            return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(self.device)), "peak_memory_kind": "cuda max_memory_allocated"}
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return {"peak_memory_bytes": int(line.split()[1]) * 1024, "peak_memory_kind": "cpu peak RSS"}
        except OSError:
            pass
        import resource

        return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_memory_kind": "cpu peak RSS (process lifetime)"}

    def __exit__(self, *exc):
        return False


def train_data(split: Split, cfg: RunConfig, source_dir: Path | None = None) -> TrainData:
    d = split.dataset
    return TrainData(split.train, split.n_users, split.n_items, d.item_text, d.item_value, d.name, d.item_ids, cfg.data_dir,
                     cfg.cache_dir, source_dir)  # fmt: skip


def evaluated(split: Split, cfg: RunConfig) -> tuple[Split, np.ndarray | None]:
    """The split whose validation and test sets hold only the ``--eval-users`` sample (and the
    sampled users' rows), or the split itself and None when every user is evaluated."""
    if not cfg.eval_users or cfg.eval_users >= len(split.test.targets):
        return split, None
    rows = sample_rows(len(split.test.targets), cfg.eval_users, split.dataset.name)
    return replace(split, valid=split.valid.subset(rows), test=split.test.subset(rows)), rows


def build_method(method_cls: type[Method], split: Split, seed: int, cfg: RunConfig, device: torch.device,
                 source_dir: Path | None = None) -> tuple[Method, dict]:  # fmt: skip
    """Instantiate a method with its config (defaults, preset, overrides) and a context whose
    ``validate`` runs the harness's evaluator on the validation split (the ``--eval-users``
    sample where one is asked for)."""
    split, _ = evaluated(split, cfg)
    config = resolve_config(method_cls, cfg.preset, cfg.overrides.get(method_cls.name, {}))
    tiebreak = tiebreak_order(split.n_items, derive_seed(seed, split.dataset.name, "tiebreak"))
    holder: dict = {}

    def validate(request: DecodeRequest | None = None) -> dict[str, float]:
        valid = holder["valid"]  # its own request (phase "validation") unless the method names one
        out = valid.run() if request is None else valid.run(request=request)
        return summarize(out.ranks, out.list_depth, split.n_items)

    ctx = Context(device=device, seed=derive_seed(seed, split.dataset.name, method_cls.name), validate=validate,
                  select_metric=cfg.select_metric, progress=cfg.progress, log=cfg.log and not cfg.progress,
                  precision=resolve_precision(cfg.precision, device), label=run_label(split.dataset.name, method_cls.name, seed, cfg.variant))  # fmt: skip
    seed_everything(ctx.seed)
    method = method_cls(config, train_data(split, cfg, source_dir), ctx)
    holder["valid"] = Evaluator(split.valid, method, tiebreak, cfg.eval_batch_size, cfg.progress, "valid", cfg.mask_history,
                                DecodeRequest("validation"))  # fmt: skip
    return method, {"tiebreak": tiebreak, "config": config}


def execute(method_cls: type[Method], split: Split, seed: int, cfg: RunConfig, device: torch.device | None = None,
            source_dir: Path | None = None, run_id: str | None = None) -> Path:  # fmt: skip
    """Train, select on validation, evaluate on test once, write the record; returns its path.

    Always runs (the skip and claim logic is :func:`run_one`'s)."""
    path = record_path(cfg.results_dir, split.dataset.name, method_cls.name, seed, cfg.variant)
    if cfg.select_metric not in METRIC_KEYS:
        raise UserError(f"--select-metric {cfg.select_metric!r}: expected one of {', '.join(METRIC_KEYS)}")
    device = device if device is not None else resolve_device(cfg.device)
    run_id = run_id or new_run_id()
    started = dt.datetime.now(dt.timezone.utc)
    code = provenance.loaded_code_version()  # the code this process imported (the tree may change while it trains)
    packages = provenance.package_versions()
    with PeakMemory(device) as mem:
        method, parts = build_method(method_cls, split, seed, cfg, device, source_dir)
        ctx = method.ctx
        ckpt = checkpointer(method, parts["config"], split.dataset.fingerprint, code, packages, cfg, path)
        try:
            with ckpt or contextlib.nullcontext():
                ctx.synchronize()
                t0 = time.perf_counter()
                if ckpt is not None:
                    ckpt.fit_started = t0
                method.fit()
                ctx.synchronize()
                fit_seconds = time.perf_counter() - t0 + (ckpt.fit_before if ckpt is not None else 0.0)
                valid_metrics = ctx.validate()
                test_set, sampled = evaluated(split, cfg)
                test_eval = Evaluator(test_set.test, method, parts["tiebreak"], cfg.eval_batch_size, cfg.progress, "test", cfg.mask_history)
                test = test_eval.run()
        except KeyboardInterrupt:  # SIGINT, SIGTERM (bench.cli.Terminated): keep the last epoch boundary's state, then clean up
            if ckpt is not None:
                ckpt.interrupted()
            raise
        memory = mem.read()
    metrics = summarize(test.ranks, test.list_depth, split.n_items)
    masked_metrics = None
    if not cfg.mask_history and test_eval.masking_keeps_depth:
        # Supplementary, after the timed test pass: the same checkpoint with history items removed
        # from the ranking, for comparison with papers that evaluate that way (S3-Rec's code, RecBole's
        # general models). Selection never sees it; the headline metrics stay unmasked. Only where
        # masking keeps the ranking's depth (full-catalog scores): masking a ranked list shortens it.
        masked = test_eval.run(mask_history=True)
        masked_metrics = summarize(masked.ranks, None, split.n_items)
    variants = supplementary_passes(method, test_set, parts["tiebreak"], cfg)
    efficiency = {
        **method.parameter_counts(),
        "fit_seconds": fit_seconds,
        **ctx.efficiency,
        "test_seconds": test.seconds,
        "test_users": test.users,
        "test_users_per_second": test.users / test.seconds if test.seconds > 0 else None,
        "latency_ms_per_user": 1000 * test.seconds / max(1, test.users),
        "eval_batch_size": cfg.eval_batch_size,
        "threads": torch.get_num_threads(),
        "precision": ctx.precision,
        **memory,
    }
    hw = provenance.hardware(device)
    efficiency["device"] = hw["device_name"]
    record: dict[str, Any] = {
        "dataset": split.dataset.name,
        "method": method_cls.name,
        "seed": seed,
        "metrics": metrics,
        "valid_metrics": valid_metrics,
        **({"test_metrics_history_masked": masked_metrics} if masked_metrics is not None else {}),
        **({"test_metrics_variants": variants} if variants else {}),
        "protocol": {
            **PROTOCOL,
            "history_cap": method.history_cap,
            "history_masking": cfg.mask_history,
            "variant": cfg.variant,
            "preset": cfg.preset,
            "tag": cfg.tag,
            "select_metric": cfg.select_metric,
            "users_evaluated": test.users,
            "eval_users": cfg.eval_users or None,  # a seeded sample of test users (None = all of them)
            "output": method.active_output,
        },
        "efficiency": efficiency,
        "config": to_dict(parts["config"]),
        "dataset_info": split.dataset.summary(),
        "provenance": {
            **code,
            "data_fingerprint": split.dataset.fingerprint,
            "packages": packages,
            "hardware": hw,
            "command": provenance.command_line(),
            "started_at": started.isoformat(timespec="seconds"),
            # (epoch, host, time, torch threads of the segment it starts and of the one before) of each resumption (bench.checkpoint)
            "resumed": ckpt.resumed if ckpt is not None else [],
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    values = value_section(test_set, test.ranks, test.list_depth)  # value-weighted hit rate and NDCG (real prices, else simulated values)
    if values is not None:
        record[VALUE_SECTION] = values
    if test.list_depth is not None:  # ranked lists: how deep they went and what was dropped
        record["generation"] = {
            "short_list_users": test.short_lists,
            "list_depth": test.list_depth,
            "duplicate_rate": test.duplicates / max(1, test.list_entries),
        }
    for section, content in method.report().items():
        if section in HARNESS_SECTIONS:
            raise ValueError(f"{method_cls.name}.report(): section {section!r} is the harness's own")
        record[section] = content
    ids = next((a for a in method.artifacts() if isinstance(a, SemanticIDs)), None)
    if ids is not None:  # codebook utilization, measured the same way for every method with semantic IDs
        record["codebook"] = codebook.utilization(ids)
        png = codebook_plot_path(path)
        tmp = temp_name(png).with_suffix(".png")
        try:
            codebook.plot_first_level(record["codebook"], tmp, run_label(split.dataset.name, method_cls.name, seed, cfg.variant)[1:-1])
            os.replace(tmp, png)
        finally:
            tmp.unlink(missing_ok=True)
        record["codebook_plot"] = png.name
        if test.top1 is not None:  # how far the first recommended ID agrees with the target's, level by level
            record["generation"]["top1_prefix_accuracy"] = codebook.prefix_accuracy(ids, test.top1, test_set.test.targets)
    users = test_set.test.input.users if sampled is not None else None  # which users the ranks belong to
    write_record(path, record, test.ranks, split.dataset.fingerprint, run_id, users)
    if ckpt is not None:
        ckpt.delete()
    return path


def checkpointer(method: Method, config: Any, fingerprint: str, code: dict, packages: dict, cfg: RunConfig, path: Path) -> Checkpointer | None:
    """The run's training-state checkpoints beside its record (``seed<k>.ckpt``; None with
    ``--checkpoint-every 0``), resuming from one an interrupted run left where it matches this
    run (``--resume``), and installed as ``method.ctx.checkpoints``."""
    if cfg.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every {cfg.checkpoint_every}: expected minutes >= 0 (0 = no checkpoints)")
    if not cfg.checkpoint_every:
        return None
    ctx = method.ctx
    identity = {"config": to_dict(config), "code": code, "data_fingerprint": fingerprint, "packages": packages,
                "harness": {"method": method.name, "select_metric": cfg.select_metric, "precision": ctx.precision,
                            "device": ctx.device.type, "eval_users": cfg.eval_users, "mask_history": cfg.mask_history}}  # fmt: skip
    file = checkpoint_path(path)
    restored = read_checkpoint(file, identity, cfg.resume, ctx.label, log=lambda line: print(line, file=sys.stderr, flush=True))
    ckpt = Checkpointer(file, identity, 60.0 * cfg.checkpoint_every, ctx.label, restored)
    ckpt.method = method
    ctx.checkpoints = ckpt
    return ckpt


def supplementary_passes(method: Method, test_set: Split, tiebreak, cfg: RunConfig,
                         variants: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The method's supplementary test passes (:meth:`Method.test_variants`, or ``variants``),
    after the headline one: each on the same checkpoint, with a decode request (phase
    "supplementary") that carries its decode-time options; what the method measured during a
    pass (:meth:`Method.pass_report`) is kept beside its metrics as ``method_report``."""
    out = {}
    for label, changes in (method.test_variants() if variants is None else variants).items():
        request = DecodeRequest("supplementary", options=dict(changes))
        res = Evaluator(test_set.test, method, tiebreak, cfg.eval_batch_size, cfg.progress, f"test {label}", cfg.mask_history, request).run()
        facts = method.pass_report()
        values = value_section(test_set, res.ranks, res.list_depth)
        out[label] = {"options": changes, "metrics": summarize(res.ranks, res.list_depth, test_set.n_items),
                      **({"value_metrics": values["metrics"]} if values is not None else {}), "test_seconds": res.seconds,
                      **({"method_report": facts} if facts else {})}  # fmt: skip
    return out


def check_results_dir(results_dir: Path) -> None:
    """Fail before any training when the results directory cannot be created or written: it is
    really tried (the missing folders created, a probe file written and removed), and what the
    check created is removed again, so that nothing is left behind either way (a permission
    check alone passes on /proc or a read-only mount)."""
    results_dir = Path(results_dir)

    def fail(reason: str):
        return UserError(f"--results-dir {results_dir}: cannot be created or written ({reason})")

    if results_dir.exists() and not results_dir.is_dir():
        raise fail("it is not a directory")
    created = []  # the folders this check makes, deepest last
    folder = results_dir.absolute()
    while not folder.exists():
        created.insert(0, folder)
        folder = folder.parent
    if not folder.is_dir():
        raise fail(f"{folder} is not a directory")
    probe = temp_name(results_dir / ".write-check")
    try:
        for d in created:
            d.mkdir()
        probe.write_bytes(b"")
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads {threads}: expected a positive integer")
        torch.set_num_threads(threads)


def settings_conflict(spec: RunSpec, record: dict) -> list[str]:
    """How the settings of the existing ``record`` at ``spec.path`` differ from ``spec``'s: one
    short phrase per differing field (its resolved config, preset, tag, protocol, and precision
    where one was asked for); empty when the record is what this run would make. A record's
    identity is its settings, not only its path: a run never stands in for one made otherwise."""
    from methods import METHODS

    cfg = spec.settings
    config = resolve_config(METHODS.get(spec.method), cfg.preset, cfg.overrides.get(spec.method, {}))
    out = [f"{key}: {'unrecorded' if note == 'unrecorded' else recorded} in the record, {here} here"
           for key, recorded, here, note in config_differences(config, record.get("config", {}))]  # fmt: skip
    protocol = record.get("protocol", {})
    for key, here in (("preset", cfg.preset), ("tag", cfg.tag), ("history_masking", cfg.mask_history),
                      ("select_metric", cfg.select_metric), ("eval_users", cfg.eval_users or None)):  # fmt: skip
        if key in protocol and protocol[key] != here:
            out.append(f"{key}: {protocol[key]!r} in the record, {here!r} here")
    precision = record.get("efficiency", {}).get("precision")
    if cfg.precision != "auto" and precision and precision != cfg.precision:
        out.append(f"precision: {precision} in the record, {cfg.precision} here")
    return out


def conflict_message(spec: RunSpec, conflict: list[str]) -> str:
    return (f"{spec.label}: the existing record {spec.path} was made with other settings ({'; '.join(conflict)}); "
            "give --tag NAME to keep this run apart (its own table), or --overwrite to replace the record")


def existing_record(spec: RunSpec) -> str:
    """What stands at ``spec.path``: "missing", "same" (a complete record of these settings),
    "other" (a complete record made with other settings: :func:`settings_conflict`), or
    "corrupt" (files that cannot be read: redone)."""
    from bench.results import record_problem

    problem = record_problem(spec.path)
    if problem == "missing":
        return "missing"
    if problem is not None:
        return "corrupt"
    return "other" if settings_conflict(spec, json.loads(spec.path.read_text())) else "same"


def run_one(spec: RunSpec) -> RunOutcome:
    """Run ``spec`` unless its record is complete (or another live worker holds it).

    Every name is resolved here, in the process that trains: the method (and its preset),
    the dataset (from the canonical cache that :func:`bench.grid.prepare` filled), the device.
    """
    from bench.data.registry import load_dataset, locate
    from bench.split import leave_one_out
    from methods import METHODS

    cfg, path = spec.settings, spec.path

    def made_already() -> RunOutcome | None:
        if cfg.overwrite or not is_complete(path):
            return None
        conflict = settings_conflict(spec, json.loads(path.read_text()))
        return RunOutcome(spec, "failed", path, message=conflict_message(spec, conflict)) if conflict else RunOutcome(spec, "skipped", path)

    if (out := made_already()) is not None:
        return out
    claim = Claim(claim_path(path), cfg.claim_stale_after)
    if not claim.acquire():
        return RunOutcome(spec, "busy", path, message=f"claimed by {claim.owner()}")
    t0 = time.perf_counter()
    try:
        if (out := made_already()) is not None:  # finished by another worker between our check and our claim
            return out
        set_threads(cfg.threads)
        cls = METHODS.get(spec.method)
        device = resolve_device(cfg.device)
        dataset = load_dataset(spec.dataset, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir, download=cfg.download)
        where = locate(spec.dataset, cfg.data_dir, cache_dir=cfg.cache_dir)
        source_dir = Path(where[1]) if where is not None and where[0] == "local" else None
        if cfg.log or cfg.progress:
            print(f"{spec.label} training on {device} ({torch.get_num_threads()} thread(s))", file=sys.stderr, flush=True)
        execute(cls, leave_one_out(dataset), spec.seed, cfg, device, source_dir)
    finally:
        claim.release()
    return RunOutcome(spec, "done", path, time.perf_counter() - t0)
