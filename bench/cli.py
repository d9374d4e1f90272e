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


def _tag(value: str) -> str:
    if value and (not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value) or value == "mask-history"):
        raise UserError(f"--tag {value!r}: expected lower-case letters, digits, '.', '_' or '-' (e.g. cpu-small), not 'mask-history'")
    return value


def _split_names(value: str, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise UserError(f"--{what}: expected a comma-separated list, got {value!r}")
    return list(dict.fromkeys(names))


def _seeds(value: str) -> list[int]:
    try:
        return [int(v) for v in _split_names(value, "seeds")]
    except ValueError:
        raise UserError(f"--seeds {value!r}: expected comma-separated integers, e.g. 0,1,2") from None


def cmd_run(args) -> int:
    from bench.config import apply_overrides, load_config_file, merge_overrides, parse_set_options
    from bench.data.registry import DatasetUnavailable, dataset_names, get_spec, load_dataset, locate, resolve_data_dir
    from bench.errors import did_you_mean
    from bench.metrics import METRIC_KEYS
    from bench.results import is_complete, record_path
    from bench.runner import RunConfig, resolve_device, run_one
    from bench.split import leave_one_out
    from methods import METHODS

    # ---- validate everything before anything runs or is written ----------------------
    quick = args.methods is None and args.datasets is None
    if quick:
        args.methods, args.datasets = QUICK_METHODS, QUICK_DATASETS
    args.methods = args.methods or QUICK_METHODS
    args.datasets = args.datasets or QUICK_DATASETS
    method_names = _split_names(args.methods, "methods")
    method_classes = [METHODS.get(name) for name in method_names]
    seeds = _seeds(args.seeds)
    device = resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: expected a positive integer")
        import torch

        torch.set_num_threads(args.threads)
    if args.select_metric not in METRIC_KEYS:
        raise UserError(f"--select-metric {args.select_metric!r}: expected one of {', '.join(METRIC_KEYS)}")
    overrides = merge_overrides(
        QUICK_PROFILE if quick else {},
        load_config_file(args.config) if args.config else {},
        parse_set_options(args.set or []),
    )
    for section in overrides:  # every section, also of methods not run now: a typo is an error
        if section not in METHODS:
            raise did_you_mean(section, METHODS.names(), "method in --set/--config section")
        apply_overrides(METHODS.get(section).Config(), overrides[section], section)
    _tag(args.tag)
    data_dir = resolve_data_dir(args.data_dir)
    if args.datasets == "all":
        dataset_list, optional = dataset_names(), True
    else:
        dataset_list, optional = _split_names(args.datasets, "datasets"), False
        for name in dataset_list:
            get_spec(name)
    datasets = {}
    for name in dataset_list:
        if optional and locate(name, data_dir) is None and args.no_download:
            print(f"skip {name}: no local copy (give --data-dir) and downloads are off", file=sys.stderr)
            continue
        try:
            datasets[name] = load_dataset(name, data_dir=data_dir, cache_dir=args.cache_dir, download=not args.no_download)
        except DatasetUnavailable as exc:
            if not optional:
                raise
            print(f"skip {name}: {exc}", file=sys.stderr)
    if not datasets:
        raise UserError("no dataset could be loaded; give --data-dir DIR (or BENCH_DATA_DIR) holding the dataset folders")

    cfg = RunConfig(
        results_dir=Path(args.results_dir),
        device=str(device),
        select_metric=args.select_metric,
        eval_batch_size=args.eval_batch_size,
        overwrite=args.overwrite,
        mask_history=args.mask_history,
        tag=args.tag,
        data_dir=data_dir,
        progress=sys.stderr.isatty() and not args.quiet,
        log=not sys.stderr.isatty() and not args.quiet,
        overrides=overrides,
    )
    # ---- run -------------------------------------------------------------------------
    if quick:
        print(f"quick suite: {QUICK_METHODS} on {QUICK_DATASETS}, seed(s) {args.seeds}, epochs capped {QUICK_PROFILE}")
    done = skipped = 0
    for name, dataset in datasets.items():
        split = leave_one_out(dataset)
        for cls in method_classes:
            for seed in seeds:
                path = record_path(cfg.results_dir, name, cls.name, seed, cfg.variant)
                if is_complete(path) and not cfg.overwrite:
                    skipped += 1
                    print(f"[{name} {cls.name} seed {seed}] exists, skipped ({path}; --overwrite to redo)")
                    continue
                path = run_one(cls, split, seed, cfg)
                done += 1
                _print_result(path)
    print(f"{done} run(s) written, {skipped} skipped, under {cfg.results_dir}/")
    if args.leaderboard:
        from bench.leaderboard import write_leaderboard

        write_leaderboard(cfg.results_dir, Path(args.leaderboard))
        print(f"leaderboard regenerated: {args.leaderboard}")
    return 0


def _print_result(path: Path) -> None:
    import json

    rec = json.loads(path.read_text())
    m, e = rec["metrics"], rec["efficiency"]
    print(
        f"[{rec['dataset']} {rec['method']} seed {rec['seed']}] "
        + "  ".join(f"{k} " + ("missing" if m[k] is None else f"{m[k]:.4f}") for k in ("recall@10", "ndcg@10", "hit@100"))
        + "  "
        f"fit {e['fit_seconds']:.1f}s  test {e['test_seconds']:.2f}s  ({e['device']})"
    )


def cmd_list(args) -> int:
    from tabulate import tabulate

    from bench.data.registry import DATASETS, locate, resolve_data_dir
    from methods import METHODS

    rows = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        rows.append([name, cls.output, cls.description or (doc[0] if doc else "")])
    print(tabulate(rows, headers=["method", "output", "description"], tablefmt="simple"))
    print()
    data_dir = resolve_data_dir(args.data_dir)
    rows = []
    for name, spec in DATASETS.items():
        where = locate(name, data_dir)
        counts = spec.counts
        rows.append([name, "/".join(f"{c:,}" for c in counts) if counts else "?", f"{where[0]}: {where[1]}" if where else "not local (download or --data-dir)"])
    print(tabulate(rows, headers=["dataset", "users/items/interactions", "available"], tablefmt="simple"))
    return 0


def cmd_leaderboard(args) -> int:
    from bench.leaderboard import render_leaderboard, write_leaderboard

    out = Path(args.output)
    if args.check:
        expected = render_leaderboard(Path(args.results_dir))
        if not out.is_file() or out.read_text() != expected:
            print(f"{out} is stale: run `python -m bench leaderboard` and commit it", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    write_leaderboard(Path(args.results_dir), out)
    print(f"wrote {out}")
    return 0


def cmd_compare(args) -> int:
    from bench.compare import compare, parse_tolerances

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

    r = sub.add_parser("run", help="train and evaluate methods on datasets, one record per (dataset, method, seed)")
    r.add_argument("--methods", default=None, help=f"comma-separated method names (default: {QUICK_METHODS})")
    r.add_argument("--datasets", default=None, help="comma-separated dataset names, or 'all' (default: ml-100k)")
    r.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice; use 1 per process when running several)")
    r.add_argument("--results-dir", default="results")
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
    r.add_argument("--leaderboard", nargs="?", const="leaderboard.md", default=None, help="regenerate this leaderboard file afterwards")
    r.add_argument("--quiet", action="store_true", help="no progress bars or per-validation log lines")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="methods and datasets, and which datasets are available locally")
    ls.add_argument("--data-dir", default=None)
    ls.set_defaults(func=cmd_list)

    lb = sub.add_parser("leaderboard", help="regenerate leaderboard.md from the results directory")
    lb.add_argument("--results-dir", default="results")
    lb.add_argument("--output", default="leaderboard.md")
    lb.add_argument("--check", action="store_true", help="exit 1 when the file is not what would be generated")
    lb.set_defaults(func=cmd_leaderboard)

    c = sub.add_parser("compare", help="compare a candidate results dir with a baseline; exit 1 on a regression")
    c.add_argument("--baseline", required=True)
    c.add_argument("--candidate", required=True)
    c.add_argument("--tol", action="append", metavar="METRIC=ABS", help="absolute tolerance for a metric (default 0.01; '*' for all)")
    c.set_defaults(func=cmd_compare)
    return p


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
    except KeyboardInterrupt:
        print("interrupted: completed records are kept, nothing partial was written; re-run to resume", file=sys.stderr)
        return 130
