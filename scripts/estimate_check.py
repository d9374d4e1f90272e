"""How good the run plan's time estimates are: each committed record against what the plan
would have estimated when the run started.

For every record under ``--results-dir`` with its start time, the estimate is
:func:`bench.grid.estimate_from` over the records that had finished before that run started
(the plan's own rules: the same method, preferring the same variant and CPU model, the same
dataset or scaled by training interactions from the nearest one), for the run's CPU model.
The ratio is measured wall time (fit + test) over the estimate.  Prints a Markdown summary by
the kind of estimate and the runs whose estimate was furthest off.

    python scripts/estimate_check.py --results-dir results
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from pathlib import Path

from bench.grid import _measured, estimate_from


def kind(basis: str) -> str:
    if "other settings" in basis:
        return "from other settings (another preset)"
    if basis.startswith("scaled"):
        return "scaled from another dataset"
    return "same dataset and variant"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-dir", default="results")
    p.add_argument("--worst", type=int, default=10)
    args = p.parse_args()
    rows = [r for r in _measured((Path(args.results_dir),)) if r.get("started_at") and r.get("finished_at")]
    checked = []
    for r in rows:
        earlier = [q for q in rows if q["finished_at"] <= r["started_at"]]
        est = estimate_from(earlier, r["method"], r["dataset"], r["variant"], r["cpu"])
        if est.seconds:
            checked.append({**r, "estimate": est.seconds, "basis": est.basis, "kind": kind(est.basis), "ratio": r["seconds"] / est.seconds})
    print(f"{len(checked)} of {len(rows)} records had an estimate when they started (the others were the first of their method).\n")
    print("| estimate from | runs | median ratio (measured / estimate) | geometric mean | within 0.5x-2x |\n|---|---|---|---|---|")
    groups = defaultdict(list)
    for c in checked:
        groups[c["kind"]].append(c["ratio"])
    groups["all"] = [c["ratio"] for c in checked]
    for name, ratios in groups.items():
        within = sum(0.5 <= x <= 2 for x in ratios) / len(ratios)
        gmean = math.exp(statistics.fmean(math.log(x) for x in ratios))
        print(f"| {name} | {len(ratios)} | {statistics.median(ratios):.2f} | {gmean:.2f} | {within:.0%} |")
    print(f"\nThe {args.worst} furthest off (by |log ratio|):\n")
    print("| record | measured | estimate | ratio | basis |\n|---|---|---|---|---|")
    for c in sorted(checked, key=lambda c: -abs(math.log(c["ratio"])))[: args.worst]:
        name = "/".join(Path(c["path"]).parts[-3:])
        print(f"| {name} | {c['seconds'] / 60:.0f} min | {c['estimate'] / 60:.0f} min | {c['ratio']:.2f} | {c['basis']} |")


if __name__ == "__main__":
    main()
