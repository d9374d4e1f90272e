"""Training and test throughput of each method on Beauty-shaped inputs, fp32 and bf16 side by side.

Beauty-shaped: 22,363 users and 12,101 items with Beauty's sequence lengths (5-core, mean
8.9) and a Zipf-like item popularity, generated here with a fixed seed, so the benchmark
needs no data files (``--data-dir DIR --dataset beauty`` uses the real one instead).  For
every method and precision it trains one epoch through the harness (the method's own code
path and the shared training loop) and runs one full test pass, then prints

    training interactions per second  (training targets / seconds of the epoch, validation excluded)
    test users per second             (full-catalog ranking of every test user)

with the machine, the torch thread count and the precisions in the table's caption.

    python scripts/bench_speed.py --threads 1                       # every classical method
    python scripts/bench_speed.py --methods sasrec-ce,tiger --threads 1 --users 5000 --output peers/speed_cpu.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from bench import provenance
from bench.data.canonical import RawData, canonicalize
from bench.evaluate import Evaluator
from bench.runner import RunConfig, build_method, resolve_precision
from bench.split import leave_one_out
from methods import METHODS

CLASSICAL = "mf,sasrec,sasrec-ce,caser,bert4rec,gru4rec,hgn,lightgcn"
USERS, ITEMS = 22_363, 12_101


def beauty_shaped(users: int, items: int = ITEMS, seed: int = 0) -> RawData:
    """Sequences with Beauty's length profile (at least 5, mean about 8.9, long tail) over a
    Zipf-like popularity; no item twice in a sequence."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.geometric(1 / 4.9, size=users) - 1, 200)
    pop = 1.0 / np.arange(1, items + 1) ** 0.8
    pop /= pop.sum()
    seqs = {}
    for u, n in enumerate(lengths):
        seqs[f"u{u}"] = [f"i{i}" for i in rng.choice(items, size=int(n), replace=False, p=pop)]
    used = {i for s in seqs.values() for i in s}
    return RawData(seqs, item_text={i: {"title": f"Item {i}"} for i in used}, text_fields=("title",), source="beauty-shaped (synthetic)")


def before_epoch(results: Path, dataset: str, method: str) -> str:
    """Seconds per epoch of ``method``'s seed-0 record under ``results`` with its code version
    and precision, e.g. "86.4 (679a8e4, fp32)"; "-" where there is none."""
    path = results / dataset / method / "seed0.json"
    if not path.exists():
        return "-"
    import json

    rec = json.loads(path.read_text())
    eff = rec.get("efficiency", {})
    seconds = eff.get("epoch_seconds_mean")
    sha = str(rec.get("provenance", {}).get("git_sha", "?"))[:7]
    return f"{seconds:.2f} ({sha}, {eff.get('precision', 'fp32')})" if seconds else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=CLASSICAL)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--users", type=int, default=USERS, help="users of the synthetic data (default: Beauty's 22,363)")
    ap.add_argument("--dataset", default="", help="a registered dataset instead of the synthetic one (with --data-dir)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    ap.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE", help="method options (e.g. tiger.d_model=64)")
    ap.add_argument("--preset", default="", help="apply each method's preset (e.g. cpu) under the one-epoch settings and --set")
    ap.add_argument("--epochs", type=int, default=1, help="epochs to time per method (s/epoch is their mean)")
    ap.add_argument("--output", default="", help="also write the table as Markdown")
    ap.add_argument("--before", default="", metavar="DIR",
                    help="a results dir of earlier code's runs on this dataset (e.g. one epoch each, on this machine): "
                         "adds their s/epoch and the code version as a column")  # fmt: skip
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dataset:
        from bench.data.registry import load_dataset
        from bench.paths import Paths

        paths = Paths.resolve(data_dir=args.data_dir)
        dataset = load_dataset(args.dataset, paths.data_dir, cache_dir=paths.cache_dir, download=False)
    else:
        dataset = canonicalize("beauty-shaped", beauty_shaped(args.users))
    split = leave_one_out(dataset)
    n_train = int(split.train.lengths.sum())
    from bench.config import parse_set_options, resolve_config, to_dict

    overrides = parse_set_options(args.set)
    rows = []
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        cls = METHODS.get(name)
        # one epoch, validated once at its end (excluded from the epoch's time)
        fields = set(cls.Config.__dataclass_fields__)
        one = {k: v for k, v in {"epochs": args.epochs, "eval_every": args.epochs, "iterations": 1, "patience": 1, "rq_epochs": 50}.items()
               if k in fields}  # fmt: skip
        if args.preset:
            one = {**to_dict(resolve_config(cls, args.preset)), **one}
        row = [name]
        for precision in [p.strip() for p in args.precisions.split(",")]:
            cfg = RunConfig(device=args.device, progress=False, precision=precision, eval_batch_size=1024,
                            overrides={cls.name: {**one, **overrides.get(cls.name, {})}})  # fmt: skip
            method, parts = build_method(cls, split, 0, cfg, device)
            method.fit()
            epoch = method.ctx.efficiency.get("epoch_seconds_mean")
            t0 = time.perf_counter()
            test = Evaluator(split.test, method, parts["tiebreak"], cfg.eval_batch_size, False, "test").run()
            row += [f"{n_train / epoch:,.0f}" if epoch else "-", f"{epoch:.2f}" if epoch else "-", f"{test.users / test.seconds:,.0f}"]
            print(f"  {name} {precision}: epoch {epoch:.2f}s, test {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        rows.append(row)
    precisions = [p.strip() for p in args.precisions.split(",")]
    headers = ["method"] + [h for p in precisions for h in (f"train inter./s {p}", f"s/epoch {p}", f"test users/s {p}")]
    if args.before:
        headers.append("s/epoch before")
        for row in rows:
            row.append(before_epoch(Path(args.before), dataset.name, row[0]))
    table = tabulate(rows, headers=headers, tablefmt="github")
    hw = provenance.hardware(device)
    caption = (f"{dataset.name}: {split.n_users:,} users, {split.n_items:,} items, {n_train:,} training interactions; "
               f"{hw['device_name']}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
               f"Python {platform.python_version()}; bf16 native on this CPU: "
               f"{resolve_precision('auto', device) == 'bf16'}; {args.epochs} epoch(s) after set-up, validation excluded"
               + (f"; preset {args.preset}" if args.preset else ""))  # fmt: skip
    print(caption)
    print(table)
    if args.output:
        cmd = " ".join(["python", *sys.argv])
        Path(args.output).write_text(f"# Training and test throughput\n\n{caption}\n\n{table}\n\nCommand: `{cmd}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
