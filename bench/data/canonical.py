"""The canonical dataset: per-user chronological item sequences with remapped ids.

Every source format is parsed into a :class:`RawData` (original string ids, sequences in
chronological order, item text, optional item value) and then :func:`canonicalize`-d:

* items are remapped to ``0..n_items-1`` by a *seeded permutation* of the sorted original
  ids, so that no method can exploit id order (in P5-format files the test item is often
  "largest id so far + 1"; ASINs are themselves roughly chronological);
* users are ordered by their original id string;
* sequences are stored CSR-style (``offsets``, ``items``).

A :class:`Dataset` is cached as ``.npz`` + ``.json`` under the cache directory, keyed by
dataset name and preprocessing fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CANONICAL_VERSION = 1  # bump when the canonical form or remapping changes


@dataclass
class RawData:
    """What a source parser returns. Ids are original strings."""

    sequences: dict[str, list[str]]  # user id -> item ids, oldest first
    item_text: dict[str, dict[str, str]] = field(default_factory=dict)  # item id -> {field: text}
    item_value: dict[str, float] = field(default_factory=dict)  # item id -> value (e.g. price)
    value_field: str | None = None
    text_fields: tuple[str, ...] = ()
    source: str = ""  # human-readable description of where the data came from
    source_digest: str = ""  # sha256 over the source files


@dataclass
class Dataset:
    name: str
    user_ids: np.ndarray  # (n_users,) original user id strings
    item_ids: np.ndarray  # (n_items,) original item id strings, index = remapped item id
    offsets: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (n_interactions,) int32, remapped ids, chronological per user
    text_fields: tuple[str, ...]
    item_text: dict[str, list[str]]  # field -> per-item strings ("" when missing)
    item_value: np.ndarray | None  # (n_items,) float32, NaN when missing
    value_field: str | None
    source: str
    fingerprint: str  # hash of the canonical arrays: identical data <=> identical fingerprint

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "fingerprint": self.fingerprint,
            "text_fields": list(self.text_fields),
            "value_field": self.value_field,
            "source": self.source,
        }

    # ---- cache -------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = dict(
            user_ids=self.user_ids.astype(str),
            item_ids=self.item_ids.astype(str),
            offsets=self.offsets,
            items=self.items,
        )
        if self.item_value is not None:
            arrays["item_value"] = self.item_value
        meta = {
            "name": self.name,
            "text_fields": list(self.text_fields),
            "item_text": self.item_text,
            "value_field": self.value_field,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "canonical_version": CANONICAL_VERSION,
        }
        _atomic_write(directory / "arrays.npz", lambda f: np.savez(f, **arrays))
        _atomic_write(directory / "meta.json", lambda f: f.write(json.dumps(meta).encode()))

    @classmethod
    def load(cls, directory: Path) -> "Dataset":
        meta = json.loads((directory / "meta.json").read_text())
        with np.load(directory / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(
            name=meta["name"],
            user_ids=arrays["user_ids"],
            item_ids=arrays["item_ids"],
            offsets=arrays["offsets"],
            items=arrays["items"],
            text_fields=tuple(meta["text_fields"]),
            item_text=meta["item_text"],
            item_value=arrays.get("item_value"),
            value_field=meta["value_field"],
            source=meta["source"],
            fingerprint=meta["fingerprint"],
        )


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def remap_seed(name: str, seed: int = 0) -> int:
    """The fixed seed of a dataset's item-id permutation (stable across runs and machines)."""
    return zlib.crc32(f"{name}:{seed}".encode())


def canonicalize(name: str, raw: RawData, permutation_seed: int = 0) -> Dataset:
    """Turn parsed source data into the canonical, id-remapped form."""
    if not raw.sequences:
        raise ValueError(f"dataset {name!r}: the source has no interactions")
    item_set = sorted({i for seq in raw.sequences.values() for i in seq})
    rng = np.random.default_rng(remap_seed(name, permutation_seed))
    perm = rng.permutation(len(item_set))  # new id of the k-th item in sorted order
    item_ids = np.empty(len(item_set), dtype=object)
    item_ids[perm] = item_set
    index = {item: int(perm[k]) for k, item in enumerate(item_set)}

    user_ids = sorted(raw.sequences)
    lengths = np.fromiter((len(raw.sequences[u]) for u in user_ids), dtype=np.int64, count=len(user_ids))
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.fromiter(
        (index[i] for u in user_ids for i in raw.sequences[u]), dtype=np.int32, count=int(offsets[-1])
    )

    fields = tuple(raw.text_fields) or tuple(sorted({k for t in raw.item_text.values() for k in t}))
    item_text = {f: [raw.item_text.get(str(i), {}).get(f, "") or "" for i in item_ids] for f in fields}
    item_value = None
    if raw.item_value:
        item_value = np.array([raw.item_value.get(str(i), np.nan) for i in item_ids], dtype=np.float32)

    user_arr = np.array(user_ids, dtype=str)
    item_arr = item_ids.astype(str)
    h = hashlib.sha256()
    for arr in (offsets, items):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\x00".join(user_arr.tolist()).encode())
    h.update("\x00".join(item_arr.tolist()).encode())
    h.update(json.dumps(item_text, sort_keys=True).encode())
    if item_value is not None:
        h.update(item_value.tobytes())
    return Dataset(
        name=name,
        user_ids=user_arr,
        item_ids=item_arr,
        offsets=offsets,
        items=items,
        text_fields=fields,
        item_text=item_text,
        item_value=item_value,
        value_field=raw.value_field if item_value is not None else None,
        source=raw.source,
        fingerprint=h.hexdigest()[:16],
    )
