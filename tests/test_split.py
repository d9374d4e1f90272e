"""Leave-one-out split, sequence views, training windows, negative sampling, and that a
method never gets to read a target (docs/protocol.md §1, §2 and §8)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bench.batching import NegativeSampler, sequence_windows, shuffled_batches
from bench.data.canonical import Dataset, RawData, canonicalize
from bench.method import EvalBatch, Method, TrainData
from bench.runner import RunConfig, execute
from bench.split import EvalInput, Sequences, Split, leave_one_out

pytestmark = pytest.mark.usefixtures("single_thread")


def seqs(rows: list[list[int]]) -> Sequences:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    items = np.array([i for r in rows for i in r], dtype=np.int32)
    return Sequences(offsets, items)


HAND = {
    "alice": ["a", "b", "c", "d", "e"],
    "bob": ["c", "a", "f"],
    "carol": ["b", "f"],  # too short to evaluate: all of it is training
    "dave": ["f", "e", "d", "c", "b", "a"],
    "erin": ["d"],
}


# ---- leave_one_out -----------------------------------------------------------------------
def test_leave_one_out_on_a_hand_made_dataset() -> None:
    ds = canonicalize("hand", RawData(sequences=HAND))
    split = leave_one_out(ds)
    names = lambda arr: [str(ds.item_ids[i]) for i in arr]  # noqa: E731
    users = [str(u) for u in ds.user_ids]
    assert users == sorted(HAND)
    assert (split.n_users, split.n_items) == (5, 6)

    evaluated = [users[u] for u in split.test.input.users]
    assert evaluated == ["alice", "bob", "dave"]
    np.testing.assert_array_equal(split.valid.input.users, split.test.input.users)
    assert names(split.test.targets) == ["e", "f", "a"]
    assert names(split.valid.targets) == ["d", "a", "b"]
    for k, user in enumerate(evaluated):
        assert names(split.test.input.history[k]) == HAND[user][:-1]
        assert names(split.valid.input.history[k]) == HAND[user][:-2]
    for u, user in enumerate(users):
        expected = HAND[user][:-2] if len(HAND[user]) >= 3 else HAND[user]
        assert names(split.train[u]) == expected  # row u = training interactions of user u
    assert split.train.n == 5
    assert int(split.train.lengths.sum()) == sum(len(s) for s in HAND.values()) - 2 * 3


def test_leave_one_out_random_against_the_definition(tiny_split: Split) -> None:
    ds = tiny_split.dataset
    lengths = ds.lengths()
    evaluated = np.flatnonzero(lengths >= 3)
    np.testing.assert_array_equal(tiny_split.test.input.users, evaluated)
    assert (lengths < 3).sum() == 2  # conftest's two short users
    for k, u in enumerate(evaluated):
        s = ds.sequence(u)
        assert tiny_split.test.targets[k] == s[-1] and tiny_split.valid.targets[k] == s[-2]
        np.testing.assert_array_equal(tiny_split.test.input.history[k], s[:-1])
        np.testing.assert_array_equal(tiny_split.valid.input.history[k], s[:-2])
    for u in range(ds.n_users):
        s = ds.sequence(u)
        # the training row is the sequence without its last two positions (the valid and test targets)
        np.testing.assert_array_equal(tiny_split.train[u], s[:-2] if len(s) >= 3 else s)


# ---- Sequences.padded --------------------------------------------------------------------
def test_padded_right_aligns_and_caps() -> None:
    s = seqs([[1, 2, 3, 4, 5], [6], [], [7, 8]])
    np.testing.assert_array_equal(
        s.padded(), [[1, 2, 3, 4, 5], [-1, -1, -1, -1, 6], [-1, -1, -1, -1, -1], [-1, -1, -1, 7, 8]]
    )
    np.testing.assert_array_equal(s.padded(3), [[3, 4, 5], [-1, -1, 6], [-1, -1, -1], [-1, 7, 8]])  # most recent kept
    np.testing.assert_array_equal(s.padded(7, pad=0)[0], [0, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(s.padded(2, rows=np.array([3, 0])), [[7, 8], [4, 5]])
    assert s.padded(0).shape == (4, 0)
    assert s.padded(rows=np.array([], dtype=np.int64)).shape == (0, 0)
    assert s.padded().dtype == np.int64


def test_padded_random_against_python() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 50, size=rng.integers(0, 12)).tolist() for _ in range(60)]
    s = seqs(rows)
    for cap in (None, 1, 4, 11, 20):
        out = s.padded(cap)
        width = max(map(len, rows)) if cap is None else cap
        for r, row in enumerate(rows):
            tail = row[-width:] if width else []
            assert out[r].tolist() == [-1] * (width - len(tail)) + tail


# ---- sequence_windows --------------------------------------------------------------------
def brute_windows(rows: list[list[int]], max_len: int):
    inputs, targets, users = [], [], []
    for u, s in enumerate(rows):
        end = len(s) - 1
        while end >= 1:  # chunks of max_len targets, from the most recent
            positions = range(end - max_len + 1, end + 1)
            targets.append([s[t] if t >= 1 else -1 for t in positions])
            inputs.append([s[t - 1] if t >= 1 else -1 for t in positions])
            users.append(u)
            end -= max_len
    return np.array(inputs).reshape(-1, max_len), np.array(targets).reshape(-1, max_len), np.array(users)


@pytest.mark.parametrize("max_len", [1, 3, 5, 50])
def test_sequence_windows_cover_every_training_target_once(max_len: int) -> None:
    rng = np.random.default_rng(max_len)
    rows = [rng.integers(0, 40, size=rng.integers(0, 14)).tolist() for _ in range(50)]
    rows[0], rows[1] = [], [7]  # no targets at all
    inputs, targets, users = sequence_windows(seqs(rows), max_len)
    bi, bt, bu = brute_windows(rows, max_len)
    np.testing.assert_array_equal(users, bu)
    np.testing.assert_array_equal(targets, bt)
    np.testing.assert_array_equal(inputs, bi)
    # every (user, position >= 1) is a target exactly once, with the previous item as input
    pairs = sorted((int(users[w]), int(inputs[w, c]), int(targets[w, c])) for w, c in zip(*np.nonzero(targets >= 0)))
    expected = sorted((u, s[t - 1], s[t]) for u, s in enumerate(rows) for t in range(1, len(s)))
    assert pairs == expected
    assert ((inputs >= 0) == (targets >= 0)).all()


def test_sequence_windows_on_the_split_never_hold_held_out_positions(tiny_split: Split) -> None:
    ds = tiny_split.dataset
    inputs, targets, users = sequence_windows(tiny_split.train, 4)
    for w in range(len(users)):
        s = ds.sequence(users[w])
        if len(s) >= 3:
            held_out = set(s[-2:].tolist()) - set(s[:-2].tolist())
            assert not held_out & set(targets[w].tolist()) and not held_out & set(inputs[w].tolist())


# ---- NegativeSampler ---------------------------------------------------------------------
def test_negative_sampler_contains_and_range() -> None:
    users = torch.tensor([0, 0, 1, 2, 2, 2])
    items = torch.tensor([1, 3, 0, 5, 6, 1])
    sampler = NegativeSampler(users, items, 8, torch.Generator().manual_seed(0))
    known = set(zip(users.tolist(), items.tolist()))
    U, I = torch.meshgrid(torch.arange(4), torch.arange(8), indexing="ij")
    got = sampler.contains(U.flatten(), I.flatten()).tolist()
    assert got == [(u, i) in known for u, i in zip(U.flatten().tolist(), I.flatten().tolist())]
    neg = sampler.draw(torch.tensor([0, 1, 2, 3]).repeat(500))
    assert neg.dtype == torch.int64 and neg.shape == (2000,)
    assert int(neg.min()) >= 0 and int(neg.max()) < 8
    shaped = sampler.draw(torch.tensor([[0], [2]]), shape=(2, 7))
    assert shaped.shape == (2, 7) and int(shaped.max()) < 8


def test_negative_sampler_avoids_own_items_except_the_rare_double_hit() -> None:
    n_items = 10
    # user 0 owns half the catalog: one redraw -> about 1/4 own items (not 1/2)
    # user 1 owns nothing: uniform over the catalog
    # user 2 owns every item but 9: drawing 9 needs no collision; it can't be "re-drawn into"
    own0 = [0, 2, 4, 6, 8]
    users = torch.tensor([0] * 5 + [2] * 9)
    items = torch.tensor(own0 + list(range(9)))
    sampler = NegativeSampler(users, items, n_items, torch.Generator().manual_seed(1))
    n = 20000
    neg0 = sampler.draw(torch.zeros(n, dtype=torch.long))
    rate = np.isin(neg0.numpy(), own0).mean()
    assert 0.2 < rate < 0.3
    neg1 = sampler.draw(torch.ones(n, dtype=torch.long))
    counts = np.bincount(neg1.numpy(), minlength=n_items)
    assert counts.min() > 0.8 * n / n_items and counts.max() < 1.2 * n / n_items
    neg2 = sampler.draw(torch.full((n,), 2, dtype=torch.long))
    assert 0.15 < (neg2.numpy() == 9).mean() < 0.25  # 1/10 + 9/10 * 1/10 = 0.19, vs 0.1 without the redraw
    # a user owning 1 of 1000 items: a double hit has probability 1e-6, so none in 20k draws
    big = NegativeSampler(torch.tensor([0]), torch.tensor([123]), 1000, torch.Generator().manual_seed(2))
    assert not (big.draw(torch.zeros(n, dtype=torch.long)) == 123).any()


def test_shuffled_batches_is_a_seeded_permutation() -> None:
    def order(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return torch.cat(list(shuffled_batches(103, 10, g, torch.device("cpu")))).tolist()

    assert sorted(order(0)) == list(range(103))
    assert order(0) == order(0) and order(0) != order(1)


# ---- a method never receives targets -----------------------------------------------------
def test_eval_types_carry_no_targets() -> None:
    assert {f.name for f in dataclasses.fields(EvalInput)} == {"users", "history"}
    assert {f.name for f in dataclasses.fields(EvalBatch)} == {"users", "history", "lengths"}
    assert {f.name for f in dataclasses.fields(TrainData)} == {"train", "n_users", "n_items", "item_text", "item_value", "dataset", "item_ids", "data_dir", "cache_dir", "source_dir"}


def _arrays_reachable(obj, seen=None):
    """Every numpy array / tensor reachable through attributes, dataclass fields and containers
    (not through functions: a closure can reach anything in Python)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or callable(obj) and not isinstance(obj, torch.nn.Module):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj.detach().cpu().numpy()
    elif isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays_reachable(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays_reachable(v, seen)
    elif dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
        for v in vars(obj).values():
            yield from _arrays_reachable(v, seen)


def test_a_method_never_sees_a_target(tmp_path) -> None:
    """Each user's validation and test targets are 'canary' items that occur nowhere else,
    with ids (500..549) that no other integer a method can read reaches (users < 25,
    offsets < 300, ordinary items < 30).  A spy method collects every integer array reachable
    from what it is given, in fit, in validation and at test time; a canary in there is a leak."""
    rng = np.random.default_rng(0)
    n_users, n_items = 25, 550
    rows, canary_valid, canary_test = [], set(), set()
    for u in range(n_users):
        body = rng.choice(30, size=int(rng.integers(1, 8)), replace=False).tolist()
        rows.append(body + [500 + u, 525 + u])
        canary_valid.add(500 + u)
        canary_test.add(525 + u)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    ds = Dataset(
        name="canary", user_ids=np.array([f"u{u:02d}" for u in range(n_users)]),
        item_ids=np.array([f"i{i}" for i in range(n_items)]), offsets=offsets,
        items=np.array([i for r in rows for i in r], dtype=np.int32), text_fields=("title",),
        item_text={"title": [f"Item {i}" for i in range(n_items)]}, item_value=None, value_field=None,
        source="test", fingerprint="canary",
    )  # fmt: skip
    split = leave_one_out(ds)
    assert set(split.test.targets.tolist()) == canary_test and set(split.valid.targets.tolist()) == canary_valid
    assert offsets[-1] < 300

    seen: dict[str, list] = {"fit": [], "valid": [], "test": []}

    class Spy(Method):
        name = "spy"

        @dataclasses.dataclass
        class Config:
            max_len: int | None = None  # reads the whole history

        evals = 0  # Evaluator.run calls eval() once: validation in fit, final validation, test, masked test

        def fit(self) -> None:
            seen["fit"].extend(_arrays_reachable(self))
            self.ctx.validate()

        def eval(self) -> None:
            Spy.evals += 1

        def score(self, batch: EvalBatch) -> torch.Tensor:
            phase = "test" if Spy.evals >= 3 else "valid"
            seen[phase].extend(_arrays_reachable(self))
            seen[phase].extend(_arrays_reachable(batch))
            for u, row, n in zip(batch.users.tolist(), batch.history.tolist(), batch.lengths.tolist()):
                s = rows[u]
                real = [i for i in row if i >= 0]
                assert real == (s[:-1] if phase == "test" else s[:-2]) and n == len(real)
            return torch.zeros(len(batch.users), self.data.n_items)

    execute(Spy, split, 0, RunConfig(results_dir=tmp_path, device="cpu", progress=False, eval_batch_size=7))
    assert Spy.evals == 4 and seen["fit"] and seen["valid"] and seen["test"]

    def ints_in(arrays) -> set[int]:
        return {int(v) for a in arrays if a.dtype.kind in "iu" and a.size for v in np.unique(a)}

    # nothing the method can read in fit or during validation holds a validation or test target
    assert not ints_in(seen["fit"]) & (canary_valid | canary_test)
    assert not ints_in(seen["valid"]) & (canary_valid | canary_test)
    # at test time the history includes the validation target (s[:-1]) but never the test target
    assert canary_valid <= ints_in(seen["test"])
    assert not ints_in(seen["test"]) & canary_test


def test_eval_users_sample_is_shared_by_methods_and_kept_apart(tiny_split, run_cfg) -> None:
    import json

    from bench.results import ranks_path
    from bench.runner import evaluated, execute
    from bench.split import sample_rows
    from methods import METHODS

    n = len(tiny_split.test.targets)
    rows = sample_rows(n, 10, "tiny")
    assert len(rows) == 10 and np.array_equal(rows, sample_rows(n, 10, "tiny")) and np.all(np.diff(rows) > 0)
    assert not np.array_equal(rows, sample_rows(n, 10, "other"))  # per dataset
    assert np.array_equal(sample_rows(n, 0, "tiny"), np.arange(n)) and np.array_equal(sample_rows(n, n + 5, "tiny"), np.arange(n))
    cfg = run_cfg(eval_users=10)
    sub, picked = evaluated(tiny_split, cfg)
    assert np.array_equal(picked, rows) and np.array_equal(sub.test.targets, tiny_split.test.targets[rows])
    assert np.array_equal(sub.valid.input.users, sub.test.input.users)  # the same users validate and test
    assert np.array_equal(sub.test.input.history[3], tiny_split.test.input.history[int(rows[3])])
    users = {}
    for name in ("pop", "mf"):
        path = execute(METHODS.get(name), tiny_split, 0, cfg)
        rec = json.loads(path.read_text())
        assert path.parent.parent.name == "tiny@users10" and rec["protocol"]["eval_users"] == 10
        assert rec["protocol"]["users_evaluated"] == 10
        with np.load(ranks_path(path)) as z:
            users[name] = z["users"]
            assert len(z["ranks"]) == 10
    assert np.array_equal(users["pop"], users["mf"]) and np.array_equal(users["pop"], tiny_split.test.input.users[rows])
