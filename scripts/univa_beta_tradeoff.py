"""Plot univa's HR@100 against ValueHR@100 over the value-guided beam's beta.

Either from committed records (``--records DIR``: each seed's headline beta plus the
supplementary passes its ``beta_sweep`` option asked for, ``test_metrics_variants``; nothing is
trained), or by training univa once here (validation selects its checkpoint as in the harness)
and decoding the test users at several beta.

An analysis sweep, not a selection: beta is not chosen on these test numbers.  The value
metrics are bench/value.py's (the same values every record uses).

    BENCH_CACHE_DIR=/path/cache python scripts/univa_beta_tradeoff.py --dataset scientific --data-dir /work/shared/data \\
        --preset cpu --betas 0,0.5,1,2 --threads 1 --out results/scientific-univa-beta.png
    python scripts/univa_beta_tradeoff.py --records results/scientific@cpu/univa --reference results/scientific@cpu/tiger --out "results/plots/scientific@cpu-univa-beta.png"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.config import parse_set_options, resolve_config, to_dict
from bench.data.registry import load_dataset
from bench.paths import Paths
from bench.runner import RunConfig, build_method, resolve_device, supplementary_passes
from bench.split import leave_one_out
from methods import METHODS


def sweep(method, split, tiebreak, betas: list[float], batch_size: int) -> list[dict]:
    """The harness's supplementary passes of ``method`` at each beta (config restored after)."""
    cfg = RunConfig(progress=False, eval_batch_size=batch_size)
    passes = supplementary_passes(method, split, tiebreak, cfg, {f"beta={b:g}": {"beta": b} for b in betas})
    return [{"beta": b, **{k: v for k, v in passes[f"beta={b:g}"].items() if k != "options"}} for b in betas]


def from_records(directory: Path) -> tuple[list[dict], list[dict]]:
    """Per-beta rows averaged over the seeds' records in ``directory`` (mean and the seeds'
    values), and the records' facts."""
    records = [json.loads(p.read_text()) for p in sorted(directory.glob("seed*.json"))]
    if not records:
        raise SystemExit(f"--records {directory}: no seed*.json records there")
    by_beta: dict[float, list[dict]] = {}
    for rec in records:
        if "value_metrics" not in rec:
            raise SystemExit(f"--records {directory}: seed {rec['seed']} has no value_metrics (dataset without item values)")
        by_beta.setdefault(float(rec["config"]["beta"]), []).append(rec["value_metrics"]["metrics"])
        for variant in rec.get("test_metrics_variants", {}).values():
            if set(variant["options"]) == {"beta"} and "value_metrics" in variant:
                by_beta.setdefault(float(variant["options"]["beta"]), []).append(variant["value_metrics"])
    rows = []
    for beta in sorted(by_beta):
        runs = by_beta[beta]
        keys = [k for k in runs[0] if all(r.get(k) is not None for r in runs)]
        rows.append({"beta": beta, "seeds": len(runs), "value_metrics": {k: float(np.mean([r[k] for r in runs])) for k in keys},
                     "per_seed": runs})  # fmt: skip
    facts = [{"seed": r["seed"], "run_id": r.get("run_id"), "git_sha": r["provenance"].get("git_sha")} for r in records]
    return rows, facts


def reference_point(directory: Path) -> dict:
    """Another method's mean HR@100 and ValueHR@100 over its seeds' records (e.g. tiger)."""
    records = [json.loads(p.read_text()) for p in sorted(directory.glob("seed*.json"))]
    if not records or any("value_metrics" not in r for r in records):
        raise SystemExit(f"--reference {directory}: expected seed*.json records with value_metrics")
    mean = {k: float(np.mean([r["value_metrics"]["metrics"][k] for r in records])) for k in ("hr@100", "value_hr@100")}
    return {"method": records[0]["method"], "seeds": len(records), **mean}


def plot(rows: list[dict], path: Path, title: str, reference: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["value_metrics"]["hr@100"] for r in rows]
    y = [r["value_metrics"]["value_hr@100"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:  # each seed's point, under the mean
        seeds = r.get("per_seed", [])
        ax.scatter([m["hr@100"] for m in seeds], [m["value_hr@100"] for m in seeds], s=10, c="0.6", zorder=1)
    ax.plot(x, y, "o-", zorder=2)
    for r, a, b in zip(rows, x, y):
        ax.annotate(f"β={r['beta']:g}", (a, b), textcoords="offset points", xytext=(5, 5))
    if reference:
        ax.scatter([reference["hr@100"]], [reference["value_hr@100"]], marker="*", s=120, c="tab:red", zorder=3)
        ax.annotate(f"{reference['method']} ({reference['seeds']} seeds)", (reference["hr@100"], reference["value_hr@100"]),
                    textcoords="offset points", xytext=(0, 10), ha="right", va="bottom")  # fmt: skip
    ax.set_xlabel("HR@100")
    ax.set_ylabel("ValueHR@100")
    ax.set_title(title, fontsize=8, wrap=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scientific")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--method", default="univa", help="univa or one of its ablations with a value head")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", action="append", default=[], help="FIELD=VALUE for the method (after the preset)")
    ap.add_argument("--betas", default="0,0.5,1,2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", default="univa-beta.png", help="the PNG; a JSON of the numbers is written beside it")
    ap.add_argument("--records", default=None, help="a directory of univa records (seed*.json): plot them, train nothing")
    ap.add_argument("--reference", default=None, help="with --records: another method's records to mark, e.g. results/scientific@cpu/tiger")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.records:
        rows, facts = from_records(Path(args.records))
        reference = reference_point(Path(args.reference)) if args.reference else None
        out.with_suffix(".json").write_text(json.dumps({"records": args.records, "runs": facts, "sweep": rows, "reference": reference,
                                                        "note": "supplementary test passes of each seed's selected model; "
                                                                "beta is not selected on these test numbers"}, indent=1) + "\n")  # fmt: skip
        plot(rows, out, f"{args.records}: beta sweep\n(mean of {len(facts)} seeds; grey: each seed)", reference)
        for r in rows:
            print(f"beta {r['beta']:g} ({r['seeds']} runs): " + ", ".join(f"{k} {v:.4f}" for k, v in r["value_metrics"].items()))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    cls = METHODS.get(args.method)
    overrides = parse_set_options([f"{args.method}.{s}" for s in args.set]).get(args.method, {})
    config = resolve_config(cls, args.preset, overrides)
    paths = Paths.resolve(data_dir=args.data_dir)
    split = leave_one_out(load_dataset(args.dataset, paths.data_dir, cache_dir=paths.cache_dir, download=False))
    device = resolve_device(args.device)
    run = RunConfig(device=str(device), progress=False, log=True, eval_batch_size=args.batch_size,
                    overrides={cls.name: to_dict(config)})  # fmt: skip
    method, parts = build_method(cls, split, args.seed, run, device)
    method.fit()
    rows = sweep(method, split, parts["tiebreak"], [float(b) for b in args.betas.split(",")], args.batch_size)
    facts = {"dataset": args.dataset, "method": cls.name, "seed": args.seed, "preset": args.preset, "config": to_dict(config),
             "training": method.ctx.info, "efficiency": method.ctx.efficiency, "value_source": method.values.source, "sweep": rows,
             "note": "analysis sweep over the decoding beta of one trained model; beta is not selected on these test numbers"}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(facts, indent=1, default=str) + "\n")
    plot(rows, out, f"{cls.name} on {args.dataset} (seed {args.seed}, preset {args.preset}): beta sweep")
    for r in rows:
        print(f"beta {r['beta']:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in r["value_metrics"].items() if v is not None))


if __name__ == "__main__":
    main()
