"""Leave-one-out split, identical for every method (docs/protocol.md §2).

For a user with sequence ``s`` (oldest first): test target ``s[-1]`` with history
``s[:-1]``; validation target ``s[-2]`` with history ``s[:-2]``; training interactions
``s[:-2]``.  Users with fewer than three interactions contribute all of them to training
and are not evaluated (the registered datasets have none).

The targets of an :class:`EvalSet` are kept by the harness; methods receive only
:class:`EvalInput` (users and histories).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from bench.data.canonical import Dataset


@dataclass(frozen=True)
class Sequences:
    """Per-user item sequences in CSR form (oldest first)."""

    offsets: np.ndarray  # (n + 1,) int64
    items: np.ndarray  # (nnz,) int32

    @property
    def n(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, row: int) -> np.ndarray:
        return self.items[self.offsets[row] : self.offsets[row + 1]]

    def padded(self, max_len: int | None = None, rows: np.ndarray | None = None, pad: int = -1) -> np.ndarray:
        """Right-aligned matrix of the last ``max_len`` items of each row (most recent last)."""
        rows = np.arange(self.n) if rows is None else np.asarray(rows)
        lengths = self.lengths[rows]
        width = int(lengths.max(initial=0)) if max_len is None else int(max_len)
        out = np.full((len(rows), width), pad, dtype=np.int64)
        if width == 0 or len(rows) == 0:
            return out
        take = np.minimum(lengths, width)
        # column j of row r holds item offsets[r+1] - width + j when that index is in range
        cols = np.arange(width)
        start = self.offsets[rows + 1] - width
        idx = start[:, None] + cols[None, :]
        valid = cols[None, :] >= (width - take)[:, None]
        out[valid] = self.items[idx[valid]]
        return out

    def take(self, rows: np.ndarray) -> Sequences:
        """The given rows, in the given order."""
        return _cut(self.offsets, self.items, np.asarray(rows, dtype=np.int64), drop_last=0)

    def user_item_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) for every element, in order."""
        rows = np.repeat(np.arange(self.n, dtype=np.int64), self.lengths)
        return rows, self.items.astype(np.int64)


@dataclass(frozen=True)
class EvalInput:
    """What a method sees at evaluation time: users and their histories, no targets."""

    users: np.ndarray  # (n,) user indices
    history: Sequences  # row k = history of users[k], oldest first


@dataclass(frozen=True)
class EvalSet:
    input: EvalInput
    targets: np.ndarray  # (n,) item indices -- harness only

    def subset(self, rows: np.ndarray) -> EvalSet:
        rows = np.asarray(rows, dtype=np.int64)
        return EvalSet(EvalInput(self.input.users[rows], self.input.history.take(rows)), self.targets[rows])


def sample_rows(n: int, k: int, dataset: str) -> np.ndarray:
    """A seeded sample of ``k`` of ``n`` evaluated users (sorted row indices), derived from the
    dataset's name and ``k`` only: the same users for every method and every seed, so that
    records made on a sample compare user by user (``--eval-users``, docs/protocol.md §2)."""
    if k <= 0 or k >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([k, zlib.crc32(dataset.encode()), zlib.crc32(b"eval-users")]))
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class Split:
    dataset: Dataset
    train: Sequences  # row u = training interactions of user u (all users)
    valid: EvalSet
    test: EvalSet
    n_users: int
    n_items: int


def _cut(offsets: np.ndarray, items: np.ndarray, users: np.ndarray, drop_last: int) -> Sequences:
    starts = offsets[users]
    ends = offsets[users + 1] - drop_last
    lengths = ends - starts
    new_offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    idx = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return Sequences(new_offsets, items[idx])


def leave_one_out(dataset: Dataset) -> Split:
    offsets, items = dataset.offsets, dataset.items
    lengths = np.diff(offsets)
    all_users = np.arange(dataset.n_users)
    drop = np.where(lengths >= 3, 2, 0)
    # training rows: every user, without their last two items when they are evaluated
    starts, ends = offsets[:-1], offsets[1:] - drop
    tr_len = ends - starts
    tr_off = np.zeros(dataset.n_users + 1, dtype=np.int64)
    np.cumsum(tr_len, out=tr_off[1:])
    tr_idx = np.repeat(starts - tr_off[:-1], tr_len) + np.arange(tr_off[-1])
    train = Sequences(tr_off, items[tr_idx])

    evaluated = all_users[lengths >= 3]
    valid = EvalSet(
        EvalInput(evaluated, _cut(offsets, items, evaluated, drop_last=2)),
        items[offsets[evaluated + 1] - 2].astype(np.int64),
    )
    test = EvalSet(
        EvalInput(evaluated, _cut(offsets, items, evaluated, drop_last=1)),
        items[offsets[evaluated + 1] - 1].astype(np.int64),
    )
    return Split(dataset, train, valid, test, dataset.n_users, dataset.n_items)
