"""Result records: one JSON per (dataset, method, seed) plus a compact per-user file.

Layout::

    results/<dataset>/<method>/seed<k>.json        the record (written last, atomically)
    results/<dataset>/<method>/seed<k>.ranks.npz   per-user target rank in the top 100 (0 = absent)

Records of a protocol variant (e.g. ``--mask-history``) live under ``<dataset>@<variant>/``
so that they are never mixed with, or averaged into, the default protocol's numbers.

A record exists only once both files were completely written, so an interrupted run
leaves nothing behind and a re-run resumes by skipping the records that exist.

The results directory may be shared by many processes on many hosts (NFS included):
temporary files carry host, pid and a random part; one run id is written into both the
JSON and its ranks file and checked when read, so files of two different runs never pair
up; and :class:`Claim` (an exclusive-create ``seed<k>.claim`` file, refreshed while the run
lives) keeps two invocations of the same grid from training the same run twice.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import UserError

SCHEMA_VERSION = 1


def table_name(dataset: str, variant: str = "") -> str:
    """The leaderboard table / results folder of a dataset under a protocol variant."""
    return f"{dataset}@{variant}" if variant else dataset


def table_parts(table: str) -> tuple[str, str]:
    """(dataset, variant) of a table name: :func:`table_name`'s inverse ("" for the defaults)."""
    dataset, _, variant = table.partition("@")
    return dataset, variant


def record_path(results_dir: Path, dataset: str, method: str, seed: int, variant: str = "") -> Path:
    return Path(results_dir) / table_name(dataset, variant) / method / f"seed{seed}.json"


def ranks_path(record: Path) -> Path:
    return record.with_name(record.name.replace(".json", ".ranks.npz"))


def codebook_plot_path(record: Path) -> Path:
    return record.with_name(record.name.replace(".json", ".codebook.png"))


def temp_name(path: Path) -> Path:
    """A temporary sibling of ``path`` that no other process or host can pick: host, pid, random."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a uniquely named temporary file and a rename."""
    _atomic(path, lambda f: f.write(data))


def write_record(path: Path, record: dict, ranks: np.ndarray, fingerprint: str, run_id: str | None = None,
                 users: np.ndarray | None = None) -> None:  # fmt: skip
    """Write the per-user ranks, then the record; each atomically, both stamped with ``run_id``.

    An existing record is removed first: were it kept, a failure between the two writes
    would pair the old JSON with the new ranks and still look complete (and the run ids,
    checked on reading, would not match).
    """
    run_id = run_id or new_run_id()
    rp = ranks_path(path)
    path.unlink(missing_ok=True)
    extra = {"users": np.asarray(users, dtype=np.int32)} if users is not None else {}  # a sample: which users
    _atomic(rp, lambda f: np.savez_compressed(f, ranks=np.asarray(ranks, dtype=np.uint8), fingerprint=np.array(fingerprint),
                                               run_id=np.array(run_id), **extra))
    record = dict(record, run_id=run_id, per_user=rp.name, schema=SCHEMA_VERSION)
    text = json.dumps(_clean(record), indent=1, sort_keys=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()))


def ranks_run_id(ranks_file: Path) -> str | None:
    """The run id stored in a ranks file (``None`` for files written before run ids existed)."""
    with np.load(ranks_file) as z:
        return str(z["run_id"]) if "run_id" in z.files else None


def rewrite_record(path: Path, record: dict) -> None:
    """Rewrite an existing record's JSON atomically (e.g. to add a section derived from its
    ranks file); the ranks file is left as it is."""
    if not ranks_path(path).is_file():
        raise UserError(f"{path}: no ranks file beside it; not a complete record")
    text = json.dumps(_clean(record), indent=1, sort_keys=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()))


REQUIRED_FIELDS = ("dataset", "method", "seed", "metrics")
# what reading a damaged JSON or npz file can raise (a truncated zip, a wrong type, a missing key)
_UNREADABLE = (ValueError, OSError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile)


def record_problem(path: Path) -> str | None:
    """Why the record at ``path`` (its JSON and ranks file) cannot be used, or None when it is
    complete: the JSON is an object with the required fields, the ranks file reads, and both
    carry the same run id.  A missing JSON is "missing"; anything else names the damage."""
    if not path.is_file():
        return "missing"
    try:
        data = json.loads(path.read_text())
    except _UNREADABLE as exc:
        return f"not valid JSON ({type(exc).__name__}: {exc})"
    if not isinstance(data, dict):
        return f"not a result record (a JSON {type(data).__name__}, expected an object)"
    missing = [f for f in REQUIRED_FIELDS if f not in data]
    if missing:
        return f"lacks field(s) {', '.join(missing)}"
    rp = ranks_path(path)
    if not rp.is_file():
        return f"its ranks file {rp.name} is missing"
    try:
        with np.load(rp) as z:
            stored = str(z["run_id"]) if "run_id" in z.files else None
            z["ranks"]  # noqa: B018 -- reads (and so checks) the array
    except _UNREADABLE as exc:
        return f"its ranks file {rp.name} is unreadable ({type(exc).__name__}: {exc})"
    if stored != data.get("run_id"):
        return f"its ranks file {rp.name} belongs to another run ({stored}, the JSON is {data.get('run_id')})"
    return None


def is_complete(path: Path) -> bool:
    """Both files exist and read, the JSON is a record, and both carry the same run id."""
    return record_problem(path) is None


def claim_path(record: Path) -> Path:
    return record.with_name(record.name.replace(".json", ".claim"))


class Claim:
    """An exclusive claim on one run, held in ``seed<k>.claim`` beside its record.

    Created with O_CREAT|O_EXCL (atomic on local disks and on NFSv3+), so of several
    processes or hosts only one gets it.  While held, a daemon thread refreshes its mtime
    every ``stale_after / 4`` seconds.  A claim is stale, and may be taken over, when its
    mtime is older than ``stale_after`` seconds, or when it names a process of this host
    that no longer exists (e.g. a worker killed with ``kill -9``).  Taking over renames the
    stale file away first (only one process's rename succeeds).
    """

    def __init__(self, path: Path, stale_after: float = 600.0):
        self.path = Path(path)  # the claim file: claim_path(record) for a run
        self.stale_after = stale_after
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def stale(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if age > self.stale_after:
            return True
        owner = self.owner()
        if owner and owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            try:
                os.kill(owner["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self.stale():
                    return False
                moved = temp_name(self.path)
                try:  # take over: move the stale claim away (of several, one rename wins), then delete it
                    os.rename(self.path, moved)
                except FileNotFoundError:
                    pass
                moved.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
            self.held = True
            self._thread = threading.Thread(target=self._refresh, daemon=True)
            self._thread.start()
            return True
        return False

    def _refresh(self) -> None:
        while not self._stop.wait(self.stale_after / 4):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


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

    def users(self) -> np.ndarray:
        """The users (dataset user indices) whose test ranks this record holds, in the order of
        :meth:`ranks`: the sample stored beside the ranks for an ``--eval-users`` record; for a
        record of every user, all users in index order (each user of these datasets is
        evaluated). An error when the record cannot say which users its ranks belong to."""
        with np.load(ranks_path(self.path)) as z:
            if "users" in z.files:
                return z["users"].astype(np.int64)
            n = len(z["ranks"])
        if self.data.get("dataset_info", {}).get("users") != n:
            raise UserError(f"{self.path}: its {n} ranks are not one per user of the dataset and it stores no user list; "
                            "cannot restrict it to other users")
        return np.arange(n, dtype=np.int64)

    def ranks(self) -> np.ndarray:
        """The per-user ranks; an error when the ranks file belongs to another run than the JSON."""
        with np.load(ranks_path(self.path)) as z:
            stored = str(z["run_id"]) if "run_id" in z.files else None
            if stored != self.data.get("run_id"):
                raise UserError(f"{ranks_path(self.path)}: written by run {stored}, but {self.path.name} is run "
                                f"{self.data.get('run_id')}; re-run this record (--overwrite)")
            return z["ranks"].astype(np.int64)


def load_records(results_dir: Path, refused: list[tuple[Path, str]] | None = None) -> list[Record]:
    """Every complete record under ``results_dir``, in a deterministic order.

    A record that cannot be used (:func:`record_problem`: damaged JSON, a broken or foreign ranks
    file) is never included: with ``refused`` given, it is appended there as ``(path, reason)``;
    without, it is an error that names the file."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"results directory {results_dir} does not exist")
    out = []
    for path in sorted(results_dir.glob("*/*/seed*.json")):
        problem = record_problem(path)
        if problem is not None:
            if refused is None:
                raise UserError(f"{path}: {problem}; re-run it (`bench run ... --overwrite`) or delete it")
            refused.append((path, problem))
            continue
        out.append(Record(path, json.loads(path.read_text())))
    return sorted(out, key=lambda r: r.key)
