"""Result records: one JSON per (dataset, method, seed) plus a compact per-user file.

Layout::

    results/<dataset>/<method>/seed<k>.json        the record (written last, atomically)
    results/<dataset>/<method>/seed<k>.ranks.npz   per-user target rank in the top 100 (0 = absent)

Records of a protocol variant (e.g. ``--mask-history``) live under ``<dataset>@<variant>/``
so that they are never mixed with, or averaged into, the default protocol's numbers.

A record exists only once both files were completely written, so an interrupted run
leaves nothing behind and a re-run resumes by skipping the records that exist.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import UserError

SCHEMA_VERSION = 1


def table_name(dataset: str, variant: str = "") -> str:
    """The leaderboard table / results folder of a dataset under a protocol variant."""
    return f"{dataset}@{variant}" if variant else dataset


def record_path(results_dir: Path, dataset: str, method: str, seed: int, variant: str = "") -> Path:
    return Path(results_dir) / table_name(dataset, variant) / method / f"seed{seed}.json"


def ranks_path(record: Path) -> Path:
    return record.with_name(record.name.replace(".json", ".ranks.npz"))


def codebook_plot_path(record: Path) -> Path:
    return record.with_name(record.name.replace(".json", ".codebook.png"))


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _clean(value):
    """JSON-safe: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_record(path: Path, record: dict, ranks: np.ndarray, fingerprint: str) -> None:
    """Write the per-user ranks, then the record; each atomically.

    An existing record is removed first: were it kept, a failure between the two writes
    would pair the old JSON with the new ranks and still look complete.
    """
    rp = ranks_path(path)
    path.unlink(missing_ok=True)
    _atomic(rp, lambda f: np.savez_compressed(f, ranks=np.asarray(ranks, dtype=np.uint8), fingerprint=np.array(fingerprint)))
    record = dict(record, per_user=rp.name, schema=SCHEMA_VERSION)
    text = json.dumps(_clean(record), indent=1, sort_keys=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()))


def rewrite_record(path: Path, record: dict) -> None:
    """Rewrite an existing record's JSON atomically (e.g. to add a section derived from its
    ranks file); the ranks file is left as it is."""
    if not ranks_path(path).is_file():
        raise UserError(f"{path}: no ranks file beside it; not a complete record")
    text = json.dumps(_clean(record), indent=1, sort_keys=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()))


def is_complete(path: Path) -> bool:
    if not path.is_file() or not ranks_path(path).is_file():
        return False
    try:
        json.loads(path.read_text())
    except ValueError:
        return False
    return True


@dataclass
class Record:
    path: Path
    data: dict

    @property
    def table(self) -> str:
        return table_name(self.data["dataset"], self.data.get("protocol", {}).get("variant", ""))

    @property
    def key(self) -> tuple[str, str, int]:
        return self.table, self.data["method"], int(self.data["seed"])

    def ranks(self) -> np.ndarray:
        with np.load(ranks_path(self.path)) as z:
            return z["ranks"].astype(np.int64)


def load_records(results_dir: Path) -> list[Record]:
    """Every complete record under ``results_dir``, in a deterministic order."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"results directory {results_dir} does not exist")
    out = []
    for path in sorted(results_dir.glob("*/*/seed*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path}: not a valid result record ({exc}); delete it and re-run") from None
        missing = {"dataset", "method", "seed", "metrics"} - set(data)
        if missing:
            raise UserError(f"{path}: result record lacks field(s) {', '.join(sorted(missing))}")
        out.append(Record(path, data))
    return sorted(out, key=lambda r: r.key)
