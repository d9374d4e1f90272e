"""Device-resident training data for sequential models: windows and negative sampling.

Written once and shared by every method that trains on next-item prediction, so that an
epoch is a shuffled pass over tensors already on the device (no per-batch Python loading).
"""

from __future__ import annotations

import numpy as np
import torch

from bench.split import Sequences


def sequence_windows(seqs: Sequences, max_len: int, pad: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each training sequence into right-aligned next-item windows.

    A user with sequence ``s`` (length n >= 2) yields windows whose target row holds
    ``s[t]`` and input row ``s[t-1]`` at the same column, for every t in 1..n-1, in
    chunks of ``max_len`` targets counted from the most recent, so every training
    interaction is a target exactly once.  Returns ``(inputs, targets, window_user)``;
    ``inputs`` and ``targets`` are (W, max_len) with ``pad`` where there is nothing.
    """
    lengths = seqs.lengths
    n_targets = np.maximum(lengths - 1, 0)
    per_user = -(-n_targets // max_len)  # ceil
    users = np.repeat(np.arange(seqs.n), per_user)
    j = np.arange(len(users)) - np.repeat(np.cumsum(per_user) - per_user, per_user)  # window index from the end
    end = seqs.offsets[users + 1] - 1 - j * max_len  # index of the last target of each window
    idx = end[:, None] - (max_len - 1) + np.arange(max_len)[None, :]
    valid = idx >= (seqs.offsets[users] + 1)[:, None]
    safe = np.where(valid, idx, 1)
    targets = np.where(valid, seqs.items[safe], pad).astype(np.int64)
    inputs = np.where(valid, seqs.items[safe - 1], pad).astype(np.int64)
    return inputs, targets, users


class NegativeSampler:
    """Uniform negatives for (user, item) training pairs, avoiding the user's own items.

    A drawn negative that falls in the user's training set is re-drawn once (and kept on
    the rare second hit), all on the device via a sorted key table and ``searchsorted``.
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int, generator: torch.Generator):
        self.n_items = n_items
        self.generator = generator
        self.known = torch.unique(users.long() * n_items + items.long())

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        key = users.long() * self.n_items + items
        pos = torch.searchsorted(self.known, key).clamp_max(len(self.known) - 1)
        return self.known[pos] == key

    def draw(self, users: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Negatives shaped like ``users`` (or ``shape``, broadcast against ``users``)."""
        shape = tuple(users.shape) if shape is None else shape
        dev = self.known.device
        neg = torch.randint(self.n_items, shape, generator=self.generator, device=dev)
        users = users.expand(shape) if users.shape != shape else users
        again = torch.randint(self.n_items, shape, generator=self.generator, device=dev)
        return torch.where(self.contains(users, neg), again, neg)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Index tensors of a seeded random pass over ``n`` rows."""
    order = torch.randperm(n, generator=generator, device=device)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
