"""Command line: ``python -m bench {run,list,leaderboard,compare}``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bench.errors import UserError

QUICK_METHODS = "pop,mf,sasrec,sasrec-ce"
QUICK_DATASETS = "ml-100k"
# `python -m bench run` without --methods/--datasets: the quick suite, with training
# budgets capped so that it finishes in a few minutes on a laptop CPU.  The caps are the
# lowest-priority config layer (a --config file or --set still wins) and, like every
# option, are stored in each record's config.  Explicit runs use the methods' defaults.
QUICK_PROFILE = {
    "mf": {"epochs": 60},
    "sasrec": {"epochs": 30},
    "sasrec-ce": {"epochs": 20},
}
# The quick suite's records are labelled: they live in their own table (<dataset>@quick), so that
# its capped runs never mix with, or are reused for, runs at the methods' defaults.
QUICK_TAG = "quick"


def _tag(value: str) -> str:
    if value == "mask-history":
        raise UserError("--tag 'mask-history' is reserved for the protocol variant: use --mask-history")
    if value and not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value):
        raise UserError(f"--tag {value!r}: expected lower-case letters, digits, '.', '_' or '-' (e.g. cpu-small)")
    return value


def _split_names(value: str, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise UserError(f"--{what}: expected a comma-separated list, got {value!r}")
    return list(dict.fromkeys(names))


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in _split_names(value, "seeds")]
    except ValueError:
        raise UserError(f"--seeds {value!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if any(s < 0 for s in seeds):
        raise UserError(f"--seeds {value!r}: expected integers >= 0, e.g. 0,1,2")
    return seeds


def _gpus(value: str | None) -> list[str] | None:
    if not value:
        return None
    gpus = _split_names(value, "gpus")
    if not all(re.fullmatch(r"\d+", g) for g in gpus):
        raise UserError(f"--gpus {value!r}: expected comma-separated GPU indices, e.g. 0,1")
    return gpus


def _check_device(name: str) -> None:
    """Validate --device here (its syntax, and that CUDA exists where it is asked for); the
    process that trains resolves it, once (a worker may see another CUDA_VISIBLE_DEVICES)."""
    from bench.runner import resolve_device

    if name != "auto":
        resolve_device(name)


def cmd_run(args) -> int:
    from bench import grid
    from bench.config import apply_overrides, load_config_file, merge_overrides, parse_set_options, resolve_config
    from bench.data.registry import dataset_names, get_spec, locate
    from bench.errors import did_you_mean
    from bench.metrics import METRIC_KEYS
    from bench.paths import Paths
    from bench.runner import RunConfig, check_results_dir
    from methods import METHODS

    # ---- validate everything before anything runs or is written ----------------------
    board = _board_for_run(args)
    quick = board is None and args.methods is None and args.datasets is None
    if quick:
        args.methods, args.datasets = QUICK_METHODS, QUICK_DATASETS
    args.methods = args.methods or QUICK_METHODS
    args.datasets = args.datasets or QUICK_DATASETS
    method_names = list(dict.fromkeys(METHODS.canonical(n) for n in _split_names(args.methods, "methods")))
    seeds = _seeds(args.seeds or "0")
    _check_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: expected a positive integer")
    if args.eval_users < 0:
        raise UserError(f"--eval-users {args.eval_users}: expected a positive number of users (0 = all)")
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: expected a positive integer")
    if args.eval_batch_size < 1:
        raise UserError(f"--eval-batch-size {args.eval_batch_size}: expected a positive integer")
    if args.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every {args.checkpoint_every:g}: expected minutes >= 0 (0 = no checkpoints)")
    gpus = _gpus(args.gpus)
    if args.select_metric not in METRIC_KEYS:
        raise UserError(f"--select-metric {args.select_metric!r}: expected one of {', '.join(METRIC_KEYS)}")
    file_config = load_config_file(args.config) if args.config else {}
    slurm_section = file_config.pop("slurm", {})  # executor settings, not a method's options
    overrides = merge_overrides(QUICK_PROFILE if quick else {}, file_config, parse_set_options(args.set or []))
    overrides = {METHODS.canonical(k) if k in METHODS else k: v for k, v in overrides.items()}
    for section in overrides:  # every section, also of methods not run now: a typo is an error
        if section not in METHODS:
            raise did_you_mean(section, METHODS.names(), "method in --set/--config section")
        apply_overrides(METHODS.get(section).Config(), overrides[section], section)
    _tag(args.tag)
    if quick and not args.tag:
        args.tag = QUICK_TAG
    presets = [(c.method, c.group.preset) for c in board.cells()] if board else [(name, args.preset) for name in method_names]
    for name, preset in dict.fromkeys(presets):  # the preset exists for every method asked for, and resolves with the overrides
        resolve_config(METHODS.get(name), preset, overrides.get(name, {}))
    # the run's directories, resolved once from the options and the environment
    paths = Paths.resolve(args.results_dir or (board.results_dir if board else "runs"), args.data_dir, args.cache_dir)
    if board:
        dataset_list, optional = list(dict.fromkeys(c.dataset for c in board.cells())), True
    elif args.datasets == "all":
        dataset_list, optional = dataset_names(), True
    else:
        dataset_list, optional = _split_names(args.datasets, "datasets"), False
        for name in dataset_list:
            get_spec(name)
    datasets = []
    for name in dataset_list:
        if optional and locate(name, paths.data_dir, cache_dir=paths.cache_dir) is None and (args.no_download or not _downloadable(name)):
            print(f"skip {name}: no local copy (give --data-dir)" + (" and downloads are off" if args.no_download else ""), file=sys.stderr)
            continue
        datasets.append(name)
    if not datasets:
        raise UserError("no dataset can be had; give --data-dir DIR (or BENCH_DATA_DIR) holding the dataset folders")
    pairs = [(c.dataset, c.method) for c in board.cells()] if board else [(d, m) for d in datasets for m in method_names]
    gaps = _gaps([(d, m) for d, m in dict.fromkeys(pairs) if d in datasets], paths)
    if gaps and not optional:
        (d, m), reason = next(iter(gaps.items()))
        raise UserError(f"{m} cannot run on {d}: it {reason}; leave one of them out (--datasets all skips such pairs)")
    for (d, m), reason in gaps.items():
        print(f"skip {d} {m}: {reason}", file=sys.stderr)
    if not args.dry_run:
        check_results_dir(paths.results_dir)
    tty = sys.stderr.isatty() and args.jobs == 1 and not gpus and args.executor == "local"
    settings = RunConfig(
        results_dir=paths.results_dir,
        device=args.device,
        select_metric=args.select_metric,
        eval_batch_size=args.eval_batch_size,
        overwrite=args.overwrite,
        mask_history=args.mask_history,
        preset=args.preset,
        tag=args.tag,
        data_dir=paths.data_dir,
        cache_dir=paths.cache_dir,
        download=not args.no_download,
        precision=args.precision,
        eval_users=args.eval_users,
        threads=args.threads if args.threads is not None else grid.threads_per_job(len(gpus) if gpus else args.jobs),
        progress=tty and not args.quiet,
        log=not tty and not args.quiet,
        overrides=overrides,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    if board:
        specs = [s for s in board.specs(settings) if s.dataset in datasets and (s.dataset, s.method) not in gaps]
        specs = _without_equivalents(specs, board.name)
    else:
        specs = [s for s in grid.build_specs(datasets, method_names, seeds, settings) if (s.dataset, s.method) not in gaps]

    # ---- plan --------------------------------------------------------------------------
    if quick:
        print(f"quick suite: {QUICK_METHODS} on {QUICK_DATASETS}, seed(s) {args.seeds}, epochs capped {QUICK_PROFILE}, "
              f"records tagged '{args.tag}'")
    if board:  # a board names records of older settings and keeps them; an explicit grid stops on them
        specs = grid.kept_records(specs)
    else:
        grid.check_conflicts(specs)
    status = {name: grid.dataset_status(name, settings) for name in datasets}
    text, pending = grid.plan_text(specs, status, jobs=len(gpus) if gpus else args.jobs)
    print(text, flush=True)
    if args.dry_run:
        return 0
    # ---- prepare once, then fan out ----------------------------------------------------
    if pending:
        pending = grid.prepare(pending, optional=optional)
    report = grid.print_outcome
    if args.executor == "local":
        outcomes = grid.run_local(pending, jobs=args.jobs, gpus=gpus, report=report)
    elif args.executor == "slurm":
        options = _slurm_options(args, slurm_section)
        outcomes = grid.run_submitit(pending, options, cluster=args.slurm_cluster, wait=not args.no_wait)
        for out in outcomes:
            report(out)
        if args.no_wait:
            print(f"records will land under {settings.results_dir}/; re-run the same command to see what is left")
            return 0
    else:
        outcomes = grid.run_ray(pending, address=args.ray_address, gpus_per_task=args.ray_gpus,
                                cpus_per_task=settings.threads or 1)  # fmt: skip
        for out in outcomes:
            report(out)
    counts = {k: sum(o.status == k for o in outcomes) for k in ("done", "skipped", "busy", "failed")}
    print(f"{counts['done']} run(s) written, {len(specs) - len(pending) + counts['skipped']} skipped"
          + (f", {counts['busy']} left to another worker" if counts["busy"] else "")
          + (f", {counts['failed']} FAILED" if counts["failed"] else "") + f", under {settings.results_dir}/")  # fmt: skip
    if args.leaderboard:
        from bench.board import boards_for
        from bench.leaderboard import write_leaderboard

        write_leaderboard(settings.results_dir, Path(args.leaderboard), boards_for(settings.results_dir))
        print(f"leaderboard regenerated: {args.leaderboard}")
    return 1 if counts["failed"] else 0


def _board_for_run(args):
    """The board of ``run --board NAME``, which declares what --methods, --datasets, --seeds,
    --preset and --tag would (an error to give both), or None."""
    if not args.board:
        return None
    from bench.board import load_board

    given = [opt for opt, value in (("--methods", args.methods), ("--datasets", args.datasets), ("--seeds", args.seeds),
                                    ("--preset", args.preset), ("--tag", args.tag)) if value]  # fmt: skip
    if given:
        raise UserError(f"--board {args.board} declares the datasets, methods, seeds and presets; drop {', '.join(given)}")
    return load_board(args.board)


def _gaps(pairs: list[tuple[str, str]], paths) -> dict[tuple[str, str], str]:
    """The (dataset, method) pairs that cannot run because the dataset's copy lacks an input the
    method needs (``Method.needs``; found from which files the copy has, nothing parsed), with why."""
    from bench.board import gap_reason
    from bench.data.registry import dataset_inputs

    found = {d: dataset_inputs(d, paths.data_dir, cache_dir=paths.cache_dir) for d in dict.fromkeys(d for d, _ in pairs)}
    out = {}
    for d, m in pairs:
        reason = gap_reason(m, found[d][0], f"{d}'s copy ({found[d][1]})") if found[d] is not None else None
        if reason:
            out[(d, m)] = reason
    return out


def _without_equivalents(specs: list, board: str) -> list:
    """A board's runs less those done at equivalent settings (a classical method's ``cpu`` preset
    equals its defaults): by a record that exists, or by another of these runs, kept in its place."""
    from dataclasses import replace

    from bench.board import equivalent_record, equivalent_settings
    from bench.results import is_complete

    kept, done, twice = [], 0, 0
    paths = set()
    for spec in specs:
        if not spec.settings.overwrite and not is_complete(spec.path) and equivalent_record(spec) is not None:
            done += 1
        elif any(replace(spec, settings=other).path in paths for other in equivalent_settings(spec.method, spec.settings)):
            twice += 1
        else:
            kept.append(spec)
            paths.add(spec.path)
    if done or twice:
        print(f"board {board}: {done + twice} cell(s) at settings equivalent to another cell's (a preset that resolves to the defaults) "
              f"are not run again: {done} by records that exist, {twice} by runs of this board")  # fmt: skip
    return kept


def _downloadable(name: str) -> bool:
    from bench.data.registry import get_spec

    return bool(get_spec(name).remote)


def _slurm_options(args, section: dict):
    from bench.grid import SlurmOptions

    unknown = set(section) - SlurmOptions.fields()
    if unknown:
        raise UserError(f"--config [slurm]: unknown option(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(SlurmOptions.fields()))}")
    options = SlurmOptions(**section)
    for name in ("partition", "time_min", "gpus", "cpus", "mem_gb", "max_parallel"):
        value = getattr(args, f"slurm_{name}")
        if value is not None:
            setattr(options, name, value)
    return options


def cmd_list(args) -> int:
    from tabulate import tabulate

    from bench.data.registry import DATASETS, locate
    from bench.paths import Paths
    from methods import METHODS

    if args.boards:
        return _list_boards()

    rows = []
    aliases: dict[str, list[str]] = {}
    for alias, target in METHODS.aliases().items():
        aliases.setdefault(target, []).append(alias)
    for name in METHODS.names():
        cls = METHODS.get(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        rows.append([name, ", ".join(aliases.get(name, [])), cls.output, ", ".join(sorted(cls.presets)) or "-",
                     cls.description or (doc[0] if doc else "")])  # fmt: skip
    print(tabulate(rows, headers=["method", "alias", "output", "presets", "description"], tablefmt="simple"))
    print()
    paths = Paths.resolve(data_dir=args.data_dir)
    rows = []
    for name, spec in DATASETS.items():
        where = locate(name, paths.data_dir, cache_dir=paths.cache_dir)
        counts = spec.counts
        rows.append([name, "/".join(f"{c:,}" for c in counts) if counts else "?", f"{where[0]}: {where[1]}" if where else "not local (download or --data-dir)"])
    print(tabulate(rows, headers=["dataset", "users/items/interactions", "available"], tablefmt="simple"))
    return 0


def _list_boards() -> int:
    from tabulate import tabulate

    from bench.board import BOARDS_DIR, board_names, load_board

    names = board_names()
    if not names:
        print(f"no boards in {BOARDS_DIR}/")
    for name in names:
        board = load_board(name)
        print(f"board {name} ({board.path}): {len(board.cells())} cells, records under {board.results_dir}/; run with "
              f"`python -m bench run --board {name}`" + (f"\n  {board.description}" if board.description else ""))  # fmt: skip
        rows = [[g.name, ", ".join(g.table(d) for d in g.datasets), ", ".join(g.methods), ",".join(map(str, g.seeds)), g.note]
                for g in board.groups]  # fmt: skip
        print(tabulate(rows, headers=["group", "tables", "methods", "seeds", "note"], tablefmt="simple", maxcolwidths=[None, 30, 40, None, 50]))
        print()
    return 0


def cmd_leaderboard(args) -> int:
    from bench.board import boards_for, load_board
    from bench.leaderboard import stale, write_leaderboard

    out, results_dir = Path(args.output), Path(args.results_dir)
    boards = [load_board(b) for b in args.board] if args.board else boards_for(results_dir)
    if args.check:
        problems = stale(results_dir, out, boards)
        if problems:
            print(f"stale: {', '.join(problems)}: run `python -m bench leaderboard` and commit it", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    write_leaderboard(results_dir, out, boards)
    print(f"wrote {out}" + (f" (board {', '.join(b.name for b in boards)})" if boards else ""))
    return 0


def cmd_compare(args) -> int:
    from bench.compare import compare, parse_pairs, parse_tolerances, significance

    if args.pairs:
        if not args.dataset:
            raise UserError("--pairs needs --dataset TABLE (e.g. scientific@cpu)")
        _, text = significance(Path(args.results_dir), args.dataset, parse_pairs(args.pairs), args.metric, args.users_of)
        print(text)
        if args.output:
            command = (f"python -m bench compare --pairs {args.pairs} --dataset {args.dataset} --metric {args.metric} "
                       + (f"--users-of {args.users_of} " if args.users_of else "")
                       + f"--results-dir {args.results_dir} --output {args.output}")
            Path(args.output).write_text(f"<!-- Generated by `{command}`. Do not edit by hand. -->\n\n# Paired tests\n\n{text}\n")
        return 0
    if not args.baseline or not args.candidate:
        raise UserError("compare: give --baseline DIR --candidate DIR (regression check), or --pairs with --dataset (paired tests)")
    ok, table = compare(Path(args.baseline), Path(args.candidate), parse_tolerances(args.tol or []))
    print(table)
    return 0 if ok else 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the option and where to look."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench", description="Generative-recommendation benchmark harness.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    r = sub.add_parser("run", help="train and evaluate methods on datasets, one record per (dataset, method, seed)",
                       description="Train and evaluate methods on datasets, one record per (dataset, method, seed). Without "
                                   f"--methods and --datasets it runs the quick suite ({QUICK_METHODS} on {QUICK_DATASETS}) with "
                                   "epoch caps, tagged '" + QUICK_TAG + "'; as soon as either option is given, every method "
                                   "runs at its defaults (or --preset / --set / --config).")
    r.add_argument("--methods", default=None, help=f"comma-separated method names (default: {QUICK_METHODS})")
    r.add_argument("--datasets", default=None, help="comma-separated dataset names, or 'all' (default: ml-100k)")
    r.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0)")
    r.add_argument("--board", default=None,
                   help="run the missing cells of a declared board (boards/<NAME>.toml, see `bench list --boards`) instead of "
                        "--methods/--datasets/--seeds/--preset; results default to the board's results_dir")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per run (default: all cores for one job, cores / jobs with --jobs)")
    r.add_argument("--results-dir", default=None,
                   help="where records go (default: runs/, git-ignored, for your own runs; the curated records behind "
                        "leaderboard.md are written with --results-dir results)")
    r.add_argument("--preset", default="", help="apply each method's declared preset (e.g. cpu; see `bench list`); "
                                                "records kept apart under <dataset>@<preset>")
    r.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="training matmuls: auto = bf16 where the device has it natively (CUDA, CPUs with AVX512-BF16/AMX), "
                        "else fp32; logits and losses stay fp32")
    r.add_argument("--eval-users", type=int, default=0,
                   help="validate and test on a seeded sample of N users, the same for every method (for expensive methods); "
                        "records kept apart under <dataset>@users<N>")
    r.add_argument("--dry-run", action="store_true", help="print the plan (runs, skips, datasets, estimates) and exit")
    r.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default: 1)")
    r.add_argument("--gpus", default=None, help="comma-separated GPU indices; each job gets one through CUDA_VISIBLE_DEVICES")
    r.add_argument("--executor", choices=("local", "slurm", "ray"), default="local",
                   help="where runs execute: here (default), a SLURM job array through submitit, or a Ray cluster")
    r.add_argument("--slurm-partition", dest="slurm_partition", default=None)
    r.add_argument("--slurm-time", dest="slurm_time_min", type=int, default=None, help="time limit per job, minutes")
    r.add_argument("--slurm-gpus", dest="slurm_gpus", type=int, default=None, help="GPUs per job")
    r.add_argument("--slurm-cpus", dest="slurm_cpus", type=int, default=None, help="CPUs per job (and torch threads)")
    r.add_argument("--slurm-mem-gb", dest="slurm_mem_gb", type=int, default=None)
    r.add_argument("--slurm-max-parallel", dest="slurm_max_parallel", type=int, default=None, help="array tasks running at once")
    r.add_argument("--slurm-cluster", default="slurm", help=argparse.SUPPRESS)  # "local": submitit's LocalExecutor (tests)
    r.add_argument("--no-wait", action="store_true", help="with --executor slurm: return after submitting")
    r.add_argument("--ray-address", default="", help="with --executor ray: the cluster address (default: start a local one)")
    r.add_argument("--ray-gpus", type=float, default=0, help="with --executor ray: GPUs per task")
    r.add_argument("--data-dir", default=None, help="folder holding <dataset>/ source files (default: $BENCH_DATA_DIR)")
    r.add_argument("--cache-dir", default=None, help="canonical-data and download cache (default: $BENCH_CACHE_DIR or ./datasets/cache)")
    r.add_argument("--no-download", action="store_true", help="never download; use local copies only")
    r.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE", help="override a method option, e.g. sasrec.hidden=64")
    r.add_argument("--config", default=None, help="TOML or JSON file with one table of options per method")
    r.add_argument("--select-metric", default="ndcg@10", help="validation metric for early stopping (default: ndcg@10)")
    r.add_argument("--eval-batch-size", type=int, default=1024)
    r.add_argument("--tag", default="",
                   help="label runs made with non-default settings (e.g. epoch caps on a CPU): results kept apart under <dataset>@<tag>, "
                        "with their own leaderboard table")
    r.add_argument("--mask-history", action="store_true",
                   help="protocol variant: remove each user's history items from every method's ranking (results kept apart under <dataset>@mask-history)")
    r.add_argument("--overwrite", action="store_true", help="redo runs whose record exists")
    r.add_argument("--checkpoint-every", type=float, default=10.0, metavar="MIN",
                   help="minutes between training-state checkpoints (seed<k>.ckpt beside the record, also written on SIGTERM/SIGINT "
                        "and deleted when the record lands); 0 = none (default: 10)")
    r.add_argument("--resume", choices=("auto", "force", "off"), default="auto",
                   help="a checkpoint an interrupted run left: auto = resume from it when its config, code, data and packages "
                        "match the run's (default), force = resume from it anyway, off = start over")
    r.add_argument("--leaderboard", nargs="?", const="leaderboard.md", default=None, help="regenerate this leaderboard file afterwards")
    r.add_argument("--quiet", action="store_true", help="no progress bars or per-validation log lines")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="methods and datasets, and which datasets are available locally")
    ls.add_argument("--data-dir", default=None)
    ls.add_argument("--boards", action="store_true", help="the declared boards (boards/*.toml): their groups of cells")
    ls.set_defaults(func=cmd_list)

    lb = sub.add_parser("leaderboard", help="regenerate leaderboard.md from the results directory")
    lb.add_argument("--results-dir", default="results")
    lb.add_argument("--output", default="leaderboard.md")
    lb.add_argument("--check", action="store_true", help="exit 1 when the file (or a figure's data) is not what would be generated")
    lb.add_argument("--board", action="append", default=None,
                    help="a board whose tables and coverage to show (repeatable; default: the boards whose results_dir is --results-dir)")
    lb.set_defaults(func=cmd_leaderboard)

    c = sub.add_parser("compare", help="regression check of a candidate results dir against a baseline (exit 1 on a regression), "
                                       "or paired per-user tests between methods with Holm's correction (--pairs)")
    c.add_argument("--baseline", help="regression check: the reference results directory")
    c.add_argument("--candidate", help="regression check: the results directory to check")
    c.add_argument("--pairs", help="paired tests: METHOD:BASELINE,... within one table, Holm-corrected over the pairs")
    c.add_argument("--results-dir", default="results", help="paired tests: where the records are (default: results)")
    c.add_argument("--dataset", help="paired tests: the leaderboard table, e.g. scientific@cpu, or several comma-separated "
                                     "(each method in exactly one)")
    c.add_argument("--users-of", default=None, metavar="RECORD",
                   help="paired tests: restrict every record to the users this record evaluated (e.g. an --eval-users "
                        "sample), so methods run on all users compare on exactly those")
    c.add_argument("--metric", default="ndcg@10", help="paired tests: the per-user metric (default: ndcg@10)")
    c.add_argument("--output", help="paired tests: also write the table as Markdown")
    c.add_argument("--tol", action="append", metavar="METRIC=ABS", help="absolute tolerance for a metric (default 0.01; '*' for all)")
    c.set_defaults(func=cmd_compare)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, Slurm's pre-emption and time limit, a container stop), handled as Ctrl-C:
    the clean-up that removes a run's claim and temporary files runs, and the exit code is 143."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` in this process (the main thread), unless a handler
    other than the default one is already installed; later SIGTERMs and SIGINTs are then ignored
    so that they cannot cut the clean-up short (Slurm and ``kill`` of a process group signal
    every process, and the grid's parent signals its workers again)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    from bench.grid import ignore_signal

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, ignore_signal)  # not SIG_IGN: see ignore_signal
        signal.signal(signal.SIGINT, ignore_signal)
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["run"]  # the quick default suite
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted: completed records are kept, no partial record was written, runs in training kept a checkpoint "
              "(unless --checkpoint-every 0); re-run to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def entry() -> int:
    """The command line (``python -m bench``, the ``bench`` script): :func:`main` with SIGTERM
    handled as Ctrl-C. A program that calls :func:`main` itself keeps its own SIGTERM handling."""
    stop_on_sigterm()
    return main()
