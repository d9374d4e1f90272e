"""Add the value metrics (HR / ValueHR / wNDCG at 10 and 100) to every record of a results
directory from its committed ranks file, without retraining (bench/value.py).

Each dataset is loaded once (its canonical cache or the data directory) and split as the
harness does; a record whose ranks were made on other data is an error, not a silent mix.

    python scripts/add_value_metrics.py --results-dir results --data-dir /work/shared/data [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.data.registry import load_dataset
from bench.errors import UserError
from bench.results import load_records
from bench.split import leave_one_out
from bench.value import add_value_metrics


def add_to_results(results_dir: Path, data_dir: Path | None = None, overwrite: bool = False, load=load_dataset) -> dict[str, int]:
    """Add the section to every record under ``results_dir``; returns counts (added, kept)."""
    splits = {}
    added = kept = 0
    for record in load_records(results_dir):
        name = record.data["dataset"]
        if name not in splits:
            splits[name] = leave_one_out(load(name, data_dir=data_dir, download=False))
        if add_value_metrics(record, splits[name], overwrite=overwrite):
            added += 1
        else:
            kept += 1
    return {"added": added, "kept": kept}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--overwrite", action="store_true", help="recompute a section a record already has")
    args = ap.parse_args()
    try:
        counts = add_to_results(Path(args.results_dir), Path(args.data_dir) if args.data_dir else None, args.overwrite)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"value metrics added to {counts['added']} record(s); {counts['kept']} already had them")


if __name__ == "__main__":
    main()
