"""A grid of runs: plan it, prepare each dataset once, then fan out.

Every engine calls the same :func:`bench.runner.run_one` on a picklable
:class:`bench.runner.RunSpec`:

* ``run_local(specs, jobs=1)``: one after another in this process;
* ``run_local(specs, jobs=N, gpus=...)``: N at once, each run in a fresh process of its own
  (threads per job = cores / jobs; with ``gpus``, each job gets one GPU through
  ``CUDA_VISIBLE_DEVICES`` from a queue of free slots), longest expected runs first;
* ``run_submitit(specs, ...)``: a SLURM job array through submitit (``cluster="local"``
  runs the same array on this machine, which the tests use);
* ``run_ray(specs, ...)``: tasks on a Ray cluster.

Before any run starts, :func:`prepare` parses each dataset into the canonical cache and
lets every method make its per-dataset work (text embeddings), under a claim on the cache,
so that two workers (or two invocations) never make them at once.  Claims on each run
(:class:`bench.results.Claim`) keep a shared results directory safe.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, replace
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any, Iterable

from bench.errors import UserError
from bench.results import Claim, claim_path, table_name
from bench.runner import RunConfig, RunOutcome, RunSpec, run_one


def build_specs(datasets: Iterable[str], methods: Iterable[str], seeds: Iterable[int], settings: RunConfig) -> list[RunSpec]:
    return [RunSpec(d, m, s, settings_for(d, settings)) for d in datasets for m in methods for s in seeds]


def settings_for(dataset: str, settings: RunConfig) -> RunConfig:
    """The grid's settings as they apply to ``dataset``: an ``--eval-users`` sample at least as
    large as the dataset's users is every user, so those runs are not labelled a sample."""
    from bench.data.registry import DATASETS

    counts = getattr(DATASETS.get(dataset), "counts", None)
    if settings.eval_users and counts is not None and settings.eval_users >= counts.users:
        return replace(settings, eval_users=0)
    return settings


# ---- the plan -------------------------------------------------------------------------------
CURATED_RESULTS = Path(__file__).resolve().parent.parent / "results"  # the committed records of a checkout
LONG_PLAN_HOURS = 4.0  # a plan longer than this (per job) says how to make it shorter


@dataclass
class Estimate:
    seconds: float | None  # expected wall time (fit + test), None when nothing measured comes close
    basis: str  # which records, e.g. "3 earlier record(s) on this CPU model, same settings"
    other_settings: bool = False  # drawn from records of another variant (e.g. a reduced preset)


def _train_interactions(dataset: str) -> int | None:
    """Training interactions of a registered dataset (all but each user's last two), from the
    registry's counts: what a run's time scales with, known without loading the data."""
    from bench.data.registry import DATASETS

    spec = DATASETS.get(dataset)
    counts = getattr(spec, "counts", None)
    return counts.interactions - 2 * counts.users if counts else None


_MEASURED: dict[tuple[str, ...], list[dict]] = {}  # per process: the records a plan reads, by results dirs


def _measured(roots: tuple[Path, ...]) -> list[dict]:
    """The timing of every readable record under ``roots`` (the run's results dir, then the
    curated ``results/``; a record found in both counts once, by run id), read once per process."""
    key = tuple(str(Path(r).resolve()) for r in roots)
    if key in _MEASURED:
        return _MEASURED[key]
    rows, seen = [], set()
    for root in roots:
        for path in sorted(Path(root).glob("*/*/seed*.json")):
            try:
                rec = json.loads(path.read_text())
                e, protocol = rec["efficiency"], rec.get("protocol", {})
                seconds = float(e["fit_seconds"]) + float(e.get("test_seconds") or 0.0)
                info = rec.get("dataset_info", {})
                interactions = int(info["interactions"]) - 2 * int(info["users"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if rec.get("run_id") in seen:
                continue
            seen.add(rec.get("run_id"))
            prov = rec.get("provenance", {})
            rows.append({"dataset": rec["dataset"], "method": rec["method"], "variant": protocol.get("variant", ""),
                         "config": rec.get("config") if isinstance(rec.get("config"), dict) else {},
                         "seconds": seconds, "interactions": interactions, "cpu": prov.get("hardware", {}).get("cpu", "?"),
                         "started_at": prov.get("started_at"), "finished_at": prov.get("finished_at"), "path": str(path)})  # fmt: skip
    _MEASURED[key] = rows
    return rows


def estimate(spec: RunSpec) -> Estimate:
    """Expected wall time of ``spec`` from earlier records of the same method, read from its
    results directory and the curated ``results/``, preferring records made on this machine's
    CPU model:

    1. the same dataset and variant: their mean;
    2. else the same variant on the nearest measured dataset (by training interactions), scaled
       by the ratio of training interactions ("scaled from scientific");
    3. else another variant of the method (e.g. ``@cpu`` records for a run at the defaults), the
       same way, marked as drawn from other settings: a reduced preset's time is a lower bound
       for the defaults, and the defaults' an upper bound for a preset.

    A record of the same variant whose resolved config differs from this run's (a preset changed
    since it was made) counts as other settings too.
    """
    from bench.config import resolve_config
    from bench.provenance import cpu_name
    from methods import METHODS

    roots = tuple(dict.fromkeys(p for p in (Path(spec.settings.results_dir), CURATED_RESULTS) if p.is_dir()))
    cfg = spec.settings
    config = resolve_config(METHODS.get(spec.method), cfg.preset, cfg.overrides.get(spec.method, {}))
    return estimate_from(_measured(roots), spec.method, spec.dataset, cfg.variant, cpu_name(), config)


def estimate_from(measured: list[dict], method: str, dataset: str, variant: str, here: str, config: Any = None) -> Estimate:
    """:func:`estimate` from the given timing rows (:func:`_measured`'s) for a run of ``method``
    on ``dataset`` in ``variant``, on a machine whose CPU model is ``here``; with ``config`` (the
    run's resolved config), a row of the same variant made with another config is other settings
    (a row without a config section is taken at its variant's word)."""
    from bench.config import config_differences

    rows = [r for r in measured if r["method"] == method]
    target = _train_interactions(dataset)

    def same_settings(r: dict) -> bool:
        return r["variant"] == variant and (config is None or not r.get("config") or not config_differences(config, r["config"]))

    for same_variant in (True, False):  # the same settings on any machine before other settings on this one
        pool = [r for r in rows if same_settings(r) == same_variant]
        if not pool:
            continue
        if any(r["cpu"] == here for r in pool):
            pool, machine = [r for r in pool if r["cpu"] == here], "this CPU model"
        else:
            machine = "other machines"
        if not same_variant:
            variants = ", ".join(sorted({"this variant with another config" if r["variant"] == variant
                                         else f"@{r['variant']}" if r["variant"] else "defaults" for r in pool}))  # fmt: skip
        what = "same settings" if same_variant else f"from {variants}: other settings"
        same = [r for r in pool if r["dataset"] == dataset]
        if same:
            seconds = statistics.fmean(r["seconds"] for r in same)
            return Estimate(seconds, f"{len(same)} earlier record(s) on {machine}, {what}", not same_variant)
        if target is None:
            continue
        by_dataset: dict[str, list[dict]] = defaultdict(list)
        for r in pool:
            by_dataset[r["dataset"]].append(r)
        nearest = min(by_dataset, key=lambda d: (abs(math.log(by_dataset[d][0]["interactions"] / target)), d))
        group = by_dataset[nearest]
        seconds = statistics.fmean(r["seconds"] * target / r["interactions"] for r in group)
        return Estimate(seconds, f"scaled from {nearest} by training interactions ({len(group)} record(s) on {machine}, {what})",
                        not same_variant)  # fmt: skip
    return Estimate(None, "no earlier record of this method")


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}min"
    return f"{s / 3600:.1f}h"


def conflicts(specs: list[RunSpec]) -> list[RunSpec]:
    """The runs whose record exists but was made with other settings (see :func:`check_conflicts`)."""
    from bench.runner import existing_record

    return [s for s in specs if not s.settings.overwrite and existing_record(s) == "other"]


def kept_records(specs: list[RunSpec], log=print) -> list[RunSpec]:
    """For a board: a cell whose record was made with other settings (e.g. before an option's
    default changed) is neither re-run nor passed over in silence: one line per (table, method)
    names the differing settings, and the cell is left out of the run (``--overwrite`` redoes
    it). Returns the other specs."""
    from bench.runner import settings_conflict

    kept = conflicts(specs)
    groups: dict[tuple[str, str], list[RunSpec]] = defaultdict(list)
    for spec in kept:
        groups[(table_name(spec.dataset, spec.settings.variant), spec.method)].append(spec)
    for (table, method), group in sorted(groups.items()):
        why = "; ".join(settings_conflict(group[0], json.loads(group[0].path.read_text())))
        log(f"keep {table} {method} seed(s) {','.join(str(s.seed) for s in group)}: recorded with other settings ({why}); "
            "not re-run (--overwrite redoes them)")
    ids = {id(s) for s in kept}
    return [s for s in specs if id(s) not in ids]


def check_conflicts(specs: list[RunSpec]) -> None:
    """Stop before any work when a run's record exists but was made with other settings (its
    config, preset, tag, protocol or precision): one line naming the differing fields, and the
    two ways on (``--tag``, ``--overwrite``)."""
    from bench.runner import conflict_message, settings_conflict

    clashes = conflicts(specs)
    if clashes:
        first = clashes[0]
        more = f" (and {len(clashes) - 1} more run(s) alike: {', '.join(s.label for s in clashes[1:4])}{', ...' if len(clashes) > 4 else ''})"
        raise UserError(conflict_message(first, settings_conflict(first, json.loads(first.path.read_text())))
                        + (more if len(clashes) > 1 else ""))  # fmt: skip


def plan_text(specs: list[RunSpec], datasets_status: dict[str, str], jobs: int = 1) -> tuple[str, list[RunSpec]]:
    """The plan printed before any work, and the pending runs, longest expected first.

    A record that exists but cannot be read is named and redone; one made with other settings
    is an error (:func:`check_conflicts`, which the caller runs first)."""
    from bench.results import record_problem

    pending, skipped, busy, corrupt = [], [], [], []
    for spec in specs:
        path = spec.path
        problem = record_problem(path)
        if problem is None and not spec.settings.overwrite:
            skipped.append(spec)
            continue
        if problem not in (None, "missing"):
            corrupt.append((spec, problem))
        if claim_path(path).exists() and not Claim(claim_path(path), spec.settings.claim_stale_after).stale():
            busy.append(spec)
        else:
            pending.append(spec)
    estimates = {id(s): estimate(s) for s in pending}
    # longest expected first; runs with no estimate first of all (they may be the longest)
    pending.sort(key=lambda s: -(estimates[id(s)].seconds if estimates[id(s)].seconds is not None else float("inf")))
    settings = specs[0].settings if specs else RunConfig()
    lines = [f"plan: {len(specs)} run(s): {len(pending)} to run, {len(skipped)} exist and will be skipped"
             + (f", {len(busy)} being run by another worker" if busy else "")
             + f"; results under {settings.results_dir}/" + (f" (variant {settings.variant})" if settings.variant else "")]  # fmt: skip
    for name, status in datasets_status.items():
        lines.append(f"  dataset {name}: {status}")
    for spec, problem in corrupt:
        lines.append(f"  {spec.label}: the record at {spec.path} cannot be read ({problem}); it will be redone")
    groups: dict[tuple[str, str], list[RunSpec]] = defaultdict(list)
    for spec in pending:
        groups[(table_name(spec.dataset, spec.settings.variant), spec.method)].append(spec)
    total, unknown, borrowed = 0.0, 0, 0
    for (dataset, method), group in sorted(groups.items()):
        est = estimates[id(group[0])]
        seeds = ",".join(str(s.seed) for s in sorted(group, key=lambda s: s.seed))
        lines.append(f"  {dataset} {method} seed(s) {seeds}: about {_fmt_seconds(est.seconds)} each ({est.basis})")
        if est.seconds is None:
            unknown += len(group)
        else:
            total += est.seconds * len(group)
            borrowed += len(group) if est.other_settings else 0
    if pending:
        lines.append(f"  expected: {_fmt_seconds(total)} of run time in all" + (f", plus {unknown} run(s) with no estimate" if unknown else "")
                     + (f" ({borrowed} of the estimates drawn from records made with other settings)" if borrowed else "")
                     + (" (sequential; divide by --jobs when running in parallel)" if jobs == 1 else f", about {_fmt_seconds(total / jobs)} with --jobs {jobs}"))  # fmt: skip
        if total / jobs > LONG_PLAN_HOURS * 3600:
            reduced = "" if settings.preset else "a reduced model (--preset cpu, see `bench list`), "
            lines.append(f"  that is more than {LONG_PLAN_HOURS:.0f} hours on this machine: {reduced}more runs at once (--jobs N), "
                         "or a cluster (--executor slurm) make it shorter; runs checkpoint and resume (re-run the command)")  # fmt: skip
    return "\n".join(lines), pending


def dataset_status(name: str, settings: RunConfig) -> str:
    """Where a dataset comes from and whether its canonical cache exists (no parsing)."""
    from bench.data.registry import canonical_cache, locate

    where = locate(name, settings.data_dir, cache_dir=settings.cache_dir)
    source = f"{where[0]} ({where[1]})" if where else "download"
    cached = canonical_cache(name, settings.data_dir, cache_dir=settings.cache_dir) if where else None
    return f"source {source}, canonical cache " + ("ready" if cached is not None else "to be built")


# ---- prepare once ---------------------------------------------------------------------------
def prepare(specs: list[RunSpec], optional: bool = False, log=print) -> list[RunSpec]:
    """For each dataset with pending runs: build the canonical cache, then let each method do
    its per-dataset work (``Method.prepare_dataset``: text embeddings), once, under a claim on the
    cache so that concurrent invocations wait for each other instead of doing it twice.

    Returns the specs whose dataset is ready; with ``optional`` (``--datasets all``) a dataset
    that cannot be had is skipped with a message, otherwise that is an error."""
    from bench.config import resolve_config
    from bench.data.registry import DatasetUnavailable, load_dataset
    from bench.runner import resolve_device, train_data
    from bench.split import leave_one_out
    from methods import METHODS

    by_dataset: dict[str, list[RunSpec]] = defaultdict(list)
    for spec in specs:
        by_dataset[spec.dataset].append(spec)
    ready: list[RunSpec] = []
    for name, group in by_dataset.items():
        settings = group[0].settings
        claim = Claim(settings.cache_dir / "locks" / f"{name}.prepare.claim", stale_after=settings.claim_stale_after)
        waited = False
        while not claim.acquire():
            if not waited:
                log(f"  dataset {name}: another process is preparing it; waiting")
                waited = True
            time.sleep(1.0)
        try:
            t0 = time.perf_counter()
            try:
                dataset = load_dataset(name, data_dir=settings.data_dir, cache_dir=settings.cache_dir, download=settings.download)
            except DatasetUnavailable as exc:
                if not optional:
                    raise
                log(f"  skip {name}: {exc}")
                continue
            split = leave_one_out(dataset)
            facts = []
            device = resolve_device(settings.device)
            # each method under each preset of this dataset's runs (a board's runs differ in preset)
            for spec in {(s.method, s.settings.preset): s for s in group}.values():
                cls = METHODS.get(spec.method)
                config = resolve_config(cls, spec.settings.preset, spec.settings.overrides.get(cls.name, {}))
                out = cls.prepare_dataset(train_data(split, settings), config, device)
                if out:
                    facts.append(f"{cls.name}: " + ", ".join(f"{k} {v}" for k, v in out.items()))
            log(f"  dataset {name}: prepared in {time.perf_counter() - t0:.1f}s ({dataset.n_users:,} users, {dataset.n_items:,} items)"
                + ("; " + "; ".join(facts) if facts else ""))  # fmt: skip
            ready.extend(group)
        finally:
            claim.release()
    ready_ids = {id(s) for s in ready}
    return [s for s in specs if id(s) in ready_ids]


# ---- local engines --------------------------------------------------------------------------
def guarded_run(spec: RunSpec) -> RunOutcome:
    """:func:`run_one`, with a failure confined to its run: a user error is its one line, any
    other exception is printed with its traceback (a bug to report) and the grid goes on.
    Ctrl-C and SIGTERM still stop everything (KeyboardInterrupt passes through)."""
    try:
        return run_one(spec)
    except UserError as exc:
        return RunOutcome(spec, "failed", spec.path, message=f"error: {exc}")
    except Exception as exc:  # noqa: BLE001 -- reported, and the grid goes on with its other runs
        traceback.print_exc()
        return RunOutcome(spec, "failed", spec.path, message=f"{type(exc).__name__}: {exc}")


def ignore_signal(signum, frame) -> None:
    """A Python handler that does nothing. Used instead of SIG_IGN once a stop has begun: a signal
    already pending when the handler changes would otherwise be reported by Python as
    "OSError: Signal N ignored due to race condition" (an unraisable-exception traceback)."""


def _child(spec: RunSpec, gpu: str | None, conn) -> None:
    """Entry point of a worker process: one run, its outcome sent back through ``conn``."""
    import signal

    def interrupt_once(signum, frame):
        # Ctrl-C or SIGTERM reaches a worker twice (the terminal or Slurm signals the whole
        # group, then the parent interrupts its workers): the second must not cut short the
        # first's clean-up, which removes the claim and the temporary files.
        signal.signal(signal.SIGINT, ignore_signal)
        signal.signal(signal.SIGTERM, ignore_signal)
        raise KeyboardInterrupt

    # A grid launched with Ctrl-C ignored (`nohup bench run ... &`) ignores it in its workers too,
    # as its parent does; SIGTERM stops both, and is what the parent sends to stop its workers.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, interrupt_once)
    signal.signal(signal.SIGTERM, interrupt_once)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        out = guarded_run(spec)
        conn.send((out.status, out.seconds, out.message))
    except KeyboardInterrupt:
        try:
            conn.send(("failed", 0.0, "interrupted"))
        except OSError:  # the parent has stopped listening
            pass
    finally:
        conn.close()


def threads_per_job(jobs: int) -> int | None:
    """Cores / jobs when running several jobs; None (torch's default: all cores) for one."""
    if jobs <= 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


def run_local(specs: list[RunSpec], jobs: int = 1, gpus: list[str] | None = None, report=None) -> list[RunOutcome]:
    """Run ``specs`` here: in this process when ``jobs == 1`` and no GPUs are listed, else in
    up to ``jobs`` worker processes at once (one fresh process per run).  Ctrl-C stops every
    worker promptly; a worker that dies (``kill -9``) fails only its own run, whose claim
    becomes stale at once, so re-running the command completes the grid."""
    report = report or (lambda outcome: None)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: expected a positive integer")
    if gpus:
        jobs = min(jobs, len(gpus)) if jobs > 1 else len(gpus)
    outcomes: list[RunOutcome] = []
    if jobs == 1 and not gpus:
        for spec in specs:
            out = guarded_run(spec)
            report(out)
            outcomes.append(out)
        return outcomes
    ctx = mp.get_context("spawn")
    free = list(gpus) if gpus else [None] * jobs
    queue = list(specs)
    running: dict[Any, tuple[Any, RunSpec, Any, str | None, float]] = {}  # sentinel -> (process, spec, conn, gpu, start)
    try:
        while queue or running:
            while queue and free:
                spec, gpu = queue.pop(0), free.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(spec, gpu, child), name=f"bench {spec.label}")
                proc.start()
                child.close()
                running[proc.sentinel] = (proc, spec, parent, gpu, time.perf_counter())
            for sentinel in wait_for(list(running)):
                proc, spec, conn, gpu, start = running.pop(sentinel)
                proc.join()
                try:
                    status, seconds, message = conn.recv() if conn.poll() else ("failed", 0.0, f"worker exited with code {proc.exitcode}")
                except EOFError:
                    status, seconds, message = "failed", 0.0, f"worker exited with code {proc.exitcode}"
                conn.close()
                out = RunOutcome(spec, status, spec.path, seconds or time.perf_counter() - start, message)
                report(out)
                outcomes.append(out)
                free.append(gpu)
    except KeyboardInterrupt:
        _stop_workers([r[0] for r in running.values()])
        raise
    return outcomes


def _stop_workers(procs: list, grace: float = 5.0) -> None:
    """Stop workers with SIGTERM (they remove their claims and temporary files), then kill
    stragglers."""
    import signal

    for p in procs:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


# ---- cluster engines ------------------------------------------------------------------------
@dataclass
class SlurmOptions:
    partition: str = ""
    time_min: int = 24 * 60
    gpus: int = 0  # GPUs per job
    cpus: int = 4  # CPUs per job (and torch threads)
    mem_gb: int = 32
    max_parallel: int = 0  # jobs of the array running at once (0 = no limit)
    folder: str = ".submitit"  # submitit's logs and pickles
    extra: dict[str, Any] | None = None  # further submitit parameters (e.g. slurm_account)

    @classmethod
    def fields(cls) -> set[str]:
        return set(cls.__dataclass_fields__)


class RunTask:
    """What a SLURM array task calls: :func:`bench.runner.run_one`, checkpointable in submitit's
    sense.  When the job reaches its time limit or is pre-empted, submitit calls
    :meth:`checkpoint` from its signal handler (SIGUSR2, by default 90 s before the limit): the
    run's training state as of its last epoch boundary is written (``seed<k>.ckpt``), and the
    task is requeued with the same spec, which resumes from it.  Submitit then exits the
    process, which releases the run's claim on the way out."""

    def __call__(self, spec: RunSpec) -> RunOutcome:
        return run_one(spec)

    def checkpoint(self, spec: RunSpec):
        import submitit

        from bench.checkpoint import save_active

        for path in save_active():
            print(f"{spec.label} time limit or pre-emption: checkpoint written to {path}; requeued", file=sys.stderr, flush=True)
        return submitit.helpers.DelayedSubmission(RunTask(), spec)


def run_submitit(specs: list[RunSpec], options: SlurmOptions, cluster: str = "slurm", wait: bool = True, log=print) -> list[RunOutcome]:
    """Submit ``specs`` as one job array through submitit; each array task calls ``run_one``.
    ``cluster="local"`` runs the array on this machine (submitit's LocalExecutor)."""
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install 'genrec-bench[cluster]' (or pip install submitit)") from None
    specs = [replace(s, settings=replace(s.settings, threads=options.cpus, progress=False, log=True)) for s in specs]
    executor = submitit.AutoExecutor(folder=options.folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": options.time_min, "cpus_per_task": options.cpus, "mem_gb": options.mem_gb,
                              "name": "bench"}  # fmt: skip
    if options.gpus:
        params["gpus_per_node"] = options.gpus
    if cluster == "slurm":
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.max_parallel:
            params["slurm_array_parallelism"] = options.max_parallel
    params.update(options.extra or {})
    executor.update_parameters(**params)
    jobs = executor.map_array(RunTask(), specs)  # a time limit or pre-emption checkpoints and requeues (RunTask.checkpoint)
    log(f"submitted {len(jobs)} job(s) to {cluster}" + (f": array {jobs[0].job_id.split('_')[0]}" if jobs else "")
        + f"; logs under {options.folder}/")  # fmt: skip
    if not wait:
        return []
    outcomes = []
    for spec, job in zip(specs, jobs):
        try:
            outcomes.append(job.result())
        except Exception as exc:  # noqa: BLE001 -- one failed array task does not lose the others
            outcomes.append(RunOutcome(spec, "failed", spec.path, message=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}"))
    return outcomes


def run_ray(specs: list[RunSpec], address: str = "", gpus_per_task: float = 0, cpus_per_task: int = 1, log=print) -> list[RunOutcome]:
    """Run ``specs`` as Ray tasks (``address`` of an existing cluster, or a local one)."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs ray: pip install 'ray[default]'") from None
    specs = [replace(s, settings=replace(s.settings, threads=cpus_per_task, progress=False, log=True)) for s in specs]
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or None, num_cpus=None if address else max(cpus_per_task, os.cpu_count() or 1),
                 include_dashboard=False, log_to_driver=True)  # fmt: skip
    try:
        task = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(run_one)
        refs = [task.remote(s) for s in specs]
        log(f"submitted {len(refs)} task(s) to ray" + (f" at {address}" if address else " (local)"))
        outcomes = []
        for spec, ref in zip(specs, refs):
            try:
                outcomes.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001
                outcomes.append(RunOutcome(spec, "failed", spec.path, message=f"{type(exc).__name__}: {exc}"))
        return outcomes
    finally:
        if started_here:
            ray.shutdown()


def print_outcome(out: RunOutcome, file=None) -> None:
    file = file or sys.stdout
    if out.status == "done":
        rec = json.loads(out.path.read_text())
        m, e = rec["metrics"], rec["efficiency"]
        print(f"{out.spec.label} " + "  ".join(f"{k} " + ("missing" if m[k] is None else f"{m[k]:.4f}") for k in ("recall@10", "ndcg@10", "hit@100"))
              + f"  fit {e['fit_seconds']:.1f}s  test {e['test_seconds']:.2f}s  ({e['device']})", file=file, flush=True)  # fmt: skip
    elif out.status == "skipped":
        print(f"{out.spec.label} exists, skipped ({out.path}; --overwrite to redo)", file=file, flush=True)
    elif out.status == "busy":
        print(f"{out.spec.label} being run by another worker, skipped ({out.message})", file=file, flush=True)
    else:
        print(f"{out.spec.label} FAILED: {out.message}", file=file, flush=True)
