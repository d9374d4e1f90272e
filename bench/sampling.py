"""A seeded sample of evaluation users (``--eval-users N``), the same for every method.

Decoding with a language model costs seconds per user on a CPU, so an expensive method may be
evaluated on a sample of the users.  The sample depends only on the number of users, its size
and a seed, never on the method, so every method scored on it ranks the same users and their
ranks stay comparable.  Samples of one seed are nested: the users of a smaller sample are the
first of a larger one (one permutation, cut at ``n``), so a 500-user record is a subset of the
1,000-user one.
"""

from __future__ import annotations

import numpy as np

from bench.errors import UserError
from bench.method import seed_sequence


def sample_users(n_users: int, n: int, seed: int) -> np.ndarray:
    """Sorted row indices in ``[0, n_users)``: ``n`` of them drawn without replacement, or all
    rows when ``n >= n_users``."""
    if n < 1:
        raise UserError(f"--eval-users: expected a positive number of users, got {n}")
    if n >= n_users:
        return np.arange(n_users, dtype=np.int64)
    order = np.random.default_rng(seed_sequence(seed, "eval-users")).permutation(n_users)
    return np.sort(order[:n]).astype(np.int64)
