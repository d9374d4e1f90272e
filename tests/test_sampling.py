"""The seeded user sample of ``--eval-users``."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import UserError
from bench.sampling import sample_users


def test_sample_is_seeded_sorted_unique_and_nested() -> None:
    a = sample_users(1000, 50, seed=0)
    assert a.dtype == np.int64 and len(a) == 50 and len(np.unique(a)) == 50
    assert (np.diff(a) > 0).all() and a.min() >= 0 and a.max() < 1000
    assert np.array_equal(a, sample_users(1000, 50, seed=0))  # the same for every caller
    assert not np.array_equal(a, sample_users(1000, 50, seed=1))
    assert set(a) < set(sample_users(1000, 200, seed=0))  # a smaller sample is part of a larger one
    counts = np.bincount(np.concatenate([sample_users(100, 10, s) for s in range(2000)]), minlength=100)
    assert counts.min() > 120 and counts.max() < 280  # about uniform: 200 draws expected per user


def test_sample_of_all_users_and_bad_sizes() -> None:
    assert np.array_equal(sample_users(7, 7, 0), np.arange(7)) and np.array_equal(sample_users(7, 100, 3), np.arange(7))
    for bad in (0, -5):
        with pytest.raises(UserError, match="eval-users"):
            sample_users(10, bad, 0)
