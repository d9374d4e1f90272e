"""The run loop: (dataset, method, seed) -> trained method -> test ranks -> result record."""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import codebook, provenance
from bench.config import apply_overrides, to_dict
from bench.errors import UserError
from bench.evaluate import Evaluator
from bench.method import Context, Method, TrainData, seed_sequence
from bench.metrics import MAX_RANK, METRIC_KEYS, summarize, tiebreak_order
from bench.semantic_ids import SemanticIDs
from bench.results import codebook_plot_path, is_complete, record_path, write_record
from bench.split import Split

PROTOCOL = {
    "split": "leave-one-out (last item test, second-to-last validation)",
    "ranking": "full catalog",
    "tie_break": "seeded random order",
    "max_rank": MAX_RANK,
}


@dataclass
class RunConfig:
    results_dir: Path = Path("results")
    device: str = "auto"
    select_metric: str = "ndcg@10"
    eval_batch_size: int = 1024
    mask_history: bool = False  # protocol variant: never rank a user's history items (all methods alike)
    tag: str = ""  # a labeled non-default setting (e.g. "cpu-small"): its records live in their own table
    overwrite: bool = False
    progress: bool = True  # progress bars (a terminal)
    log: bool = False  # one plain line per validation on stderr instead (batch jobs, nohup, CI logs)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_dir: Path | None = None  # the local data directory, for methods that read files given beside the data

    @property
    def variant(self) -> str:
        return "+".join(v for v in ("mask-history" if self.mask_history else "", self.tag) if v)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


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


def build_method(method_cls: type[Method], split: Split, seed: int, cfg: RunConfig, device: torch.device) -> tuple[Method, dict]:
    """Instantiate a method with its config (defaults + overrides) and a context whose
    ``validate`` runs the harness's evaluator on the validation split."""
    config = apply_overrides(method_cls.Config(), cfg.overrides.get(method_cls.name, {}), method_cls.name)
    tiebreak = tiebreak_order(split.n_items, derive_seed(seed, split.dataset.name, "tiebreak"))
    holder: dict = {}

    def validate() -> dict[str, float]:
        out = holder["valid"].run()
        return summarize(out.ranks, out.list_depth, split.n_items)

    ctx = Context(device=device, seed=derive_seed(seed, split.dataset.name, method_cls.name), validate=validate,
                  select_metric=cfg.select_metric, progress=cfg.progress,
                  log=cfg.log and not cfg.progress)
    data = TrainData(split.train, split.n_users, split.n_items, split.dataset.item_text, split.dataset.item_value, split.dataset.name,
                     split.dataset.item_ids, cfg.data_dir)
    seed_everything(ctx.seed)
    method = method_cls(config, data, ctx)
    holder["valid"] = Evaluator(split.valid, method, tiebreak, cfg.eval_batch_size, cfg.progress, "valid", cfg.mask_history)
    return method, {"tiebreak": tiebreak, "config": config}


def run_one(method_cls: type[Method], split: Split, seed: int, cfg: RunConfig) -> Path:
    """Train, select on validation, evaluate on test once, write the record. Returns its path."""
    path = record_path(cfg.results_dir, split.dataset.name, method_cls.name, seed, cfg.variant)
    if is_complete(path) and not cfg.overwrite:
        return path
    if cfg.select_metric not in METRIC_KEYS:
        raise UserError(f"--select-metric {cfg.select_metric!r}: expected one of {', '.join(METRIC_KEYS)}")
    device = resolve_device(cfg.device)
    started = dt.datetime.now(dt.timezone.utc)
    with PeakMemory(device) as mem:
        method, parts = build_method(method_cls, split, seed, cfg, device)
        ctx = method.ctx
        ctx.synchronize()
        t0 = time.perf_counter()
        method.fit()
        ctx.synchronize()
        fit_seconds = time.perf_counter() - t0
        valid_metrics = ctx.validate()
        test_eval = Evaluator(split.test, method, parts["tiebreak"], cfg.eval_batch_size, cfg.progress, "test", cfg.mask_history)
        test = test_eval.run()
        memory = mem.read()
    metrics = summarize(test.ranks, test.list_depth, split.n_items)
    masked_metrics = None
    if not cfg.mask_history and method.output == "scores":
        # Supplementary, after the timed test pass: the same checkpoint with history items removed
        # from the ranking, for comparison with papers that evaluate that way (S3-Rec's code, RecBole's
        # general models). Selection never sees it; the headline metrics stay unmasked.
        masked = test_eval.run(mask_history=True)
        masked_metrics = summarize(masked.ranks, None, split.n_items)
    efficiency = {
        **method.parameter_counts(),
        "fit_seconds": fit_seconds,
        **ctx.efficiency,
        "test_seconds": test.seconds,
        "test_users": test.users,
        "test_users_per_second": test.users / test.seconds if test.seconds > 0 else None,
        "latency_ms_per_user": 1000 * test.seconds / max(1, test.users),
        "eval_batch_size": cfg.eval_batch_size,
        **memory,
    }
    hw = provenance.hardware(device)
    efficiency["device"] = hw["device_name"]
    record = {
        "dataset": split.dataset.name,
        "method": method_cls.name,
        "seed": seed,
        "metrics": metrics,
        "valid_metrics": valid_metrics,
        **({"test_metrics_history_masked": masked_metrics} if masked_metrics is not None else {}),
        "protocol": {
            **PROTOCOL,
            "history_cap": method.history_cap,
            "history_masking": cfg.mask_history,
            "variant": cfg.variant,
            "tag": cfg.tag,
            "select_metric": cfg.select_metric,
            "users_evaluated": test.users,
            "output": method.output,
        },
        "efficiency": efficiency,
        "config": to_dict(parts["config"]),
        "dataset_info": split.dataset.summary(),
        "provenance": {
            **provenance.git_info(),
            "data_fingerprint": split.dataset.fingerprint,
            "packages": provenance.package_versions(),
            "hardware": hw,
            "command": provenance.command_line(),
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    for section, content in method.report().items():
        if section in record:
            raise ValueError(f"{method_cls.name}.report(): section {section!r} is the harness's own")
        record[section] = content
    ids = next((a for a in method.artifacts() if isinstance(a, SemanticIDs)), None)
    if ids is not None:  # codebook utilization, measured the same way for every method with semantic IDs
        record["codebook"] = codebook.utilization(ids)
        png = codebook_plot_path(path)
        tmp = png.with_name(f".{png.name}.{os.getpid()}.tmp.png")
        codebook.plot_first_level(record["codebook"], tmp)
        os.replace(tmp, png)
        record["codebook_plot"] = png.name
    if method.output == "lists":
        record["generation"] = {
            "short_list_users": test.short_lists,
            "list_depth": test.list_depth,
            "duplicate_rate": test.duplicates / max(1, test.list_entries),
        }
    write_record(path, record, test.ranks, split.dataset.fingerprint)
    return path
