"""Exact ranking of the whole catalogue by the log-likelihood of each item's full semantic ID.

A beam returns at most ``beam`` items and its misses are invisible.  A model that scores a
code given the codes before it (the seq2seq of :mod:`methods.semid.seq2seq`) can instead score
every item: log p(ID | history) = sum over levels l of log p(c_l | history, c_<l), each term
normalized over the whole vocabulary as the beam search's step does, so a beam's summed score
and the exact score of the same ID are the same number.

:func:`exact_leaf_scores` expands the prefix trie level by level with the beam search's step
function (:func:`methods.semid.generative.seq2seq_step`): the history is encoded once per user,
and the decoder runs once per trie node (a distinct prefix of valid IDs), not once per item and
level, since items that share a prefix share its decoder state.

Branch and bound: every term is a log-probability (<= 0), so a prefix's score bounds the score
of every ID below it.  Given, per user, a score ``bound`` that at least :data:`DEPTH` items
reach (the worst of a beam of at least that many valid IDs: their scores are exact), a prefix
scoring below it cannot lead to any of the user's top :data:`DEPTH` items and is not expanded;
the items below it score -inf.  Every item scoring at least the bound gets its exact score, so
the ranking's top :data:`DEPTH` (the harness's ranking depth, ``bench.metrics.MAX_RANK``: every
metric and the per-user ranks file) is the exact ranking's; a user without a bound (-inf) gets
the whole trie expanded.  (Under ``--mask-history`` the harness removes history items after
scoring; history items ranked within the top :data:`DEPTH` then shift the exact part of the
ranking up by as many places.)  A small slack (:data:`BOUND_SLACK`) keeps rounding differences
between the beam's arithmetic and this pass's from cutting an ID that ties the bound.

Cost, measured on Scientific at the ``cpu`` preset (tiger-rkmeans after 2 epochs, 500 test
users, one thread of a busy Xeon): the beam pass (beam 100) 2.5 s, this pass 13.8 s (5.5x).
Every prefix scoring above the 100th ID must be expanded: per user 1 + 256 + 1,401 + 244 decoder
rows on average, against about 300 for the beam, at the same cost per row; expanding the whole
trie (6,097 rows a user) took 12x the beam.

Rows of (user, live prefix) go through the decoder together, at most :data:`EXACT_ROWS` per call
(the vocabulary logits of every row are the memory); a group of users whose live prefixes
exceed that is split and redone.

:class:`BeamRecall` measures how much of an exact ranking a method's beam (or any other
decoder that returns lists) found, for the users whose lists it remembers, and keeps each
list's bound for the exact pass.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from bench.method import EvalBatch
from bench.metrics import MAX_RANK
from methods.semid.beam import PrefixTrie, StepFn

DEPTH = MAX_RANK
# (user, live prefix) rows per decoder call: the vocabulary logits of 16,384 rows x ~1,000 tokens
# are 64 MB in float32.
EXACT_ROWS = 16384
BOUND_SLACK = 1e-2  # relative and absolute (bf16 decoding on CUDA rounds to ~1e-2): bound - slack * (1 + |bound|)


@torch.no_grad()
def exact_leaf_scores(step: StepFn, trie: PrefixTrie, bound: torch.Tensor, max_rows: int | None = None) -> tuple[torch.Tensor | None, int]:
    """(B, n_leaves) summed log-probabilities of the valid IDs (trie leaves) of ``B = len(bound)``
    rows, -inf for an ID below a pruned prefix; ``step`` as :func:`methods.semid.beam.beam_search`
    takes it, asked at depth d for every live prefix of every row (as if each were a beam).
    ``bound`` (B,): prefixes scoring below a row's bound are not expanded (-inf: none).  Returns
    them with the most live prefixes any row had at a depth; the scores are None when more than
    ``max_rows`` (row, prefix) pairs would go through the decoder at once and there is more than
    one row (the caller splits the rows)."""
    B, device = len(bound), trie.leaf_ptr.device
    floor = (bound - BOUND_SLACK * (1 + bound.abs())).unsqueeze(1)  # -inf stays -inf
    scores = torch.zeros(B, 1, device=device)
    nodes = torch.zeros(B, 1, dtype=torch.long, device=device)  # live prefixes at depth d, -1 = an empty slot
    codes = torch.zeros(B, 1, 0, dtype=torch.long, device=device)
    parent = torch.zeros(B, 1, dtype=torch.long, device=device)
    widest = 1
    for d, table in enumerate(trie.transitions):
        widest = max(widest, nodes.shape[1])
        if max_rows is not None and B > 1 and B * nodes.shape[1] > max_rows:
            return None, widest
        logp = step(d, codes, parent).float()  # (B, K, size)
        K, size = logp.shape[1], logp.shape[2]
        child = table[nodes.clamp_min(0)].long()  # (B, K, size)
        cand = (scores.unsqueeze(-1) + logp).reshape(B, K * size)
        child = child.reshape(B, K * size)
        keep = (child >= 0) & (nodes >= 0).repeat_interleave(size, 1) & (cand >= floor)
        # compact each row's kept entries to the front, in order (parent slot, then code)
        slot = torch.cumsum(keep, 1) - 1
        width = max(1, int(keep.sum(1).max()))
        rows, flat = torch.nonzero(keep, as_tuple=True)
        pick = torch.zeros(B, width, dtype=torch.long, device=device)
        pick[rows, slot[rows, flat]] = flat
        live = torch.arange(width, device=device).unsqueeze(0) < keep.sum(1, keepdim=True)
        parent, code = pick // size, pick % size
        scores = torch.where(live, cand.gather(1, pick), -torch.inf)
        nodes = torch.where(live, child.gather(1, pick), -1)
        codes = torch.cat([codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, d)), code.unsqueeze(-1)], -1)
    out = torch.full((B, trie.n_leaves + 1), -torch.inf, device=device)
    out.scatter_(1, torch.where(nodes >= 0, nodes, trie.n_leaves), scores)  # empty slots land in the extra column
    return out[:, :-1], widest


def exact_item_scores(make_step: Callable[[torch.Tensor], StepFn], src: torch.Tensor, trie: PrefixTrie, leaf_of_item: torch.Tensor,
                      bound: torch.Tensor | None = None, rows: int = EXACT_ROWS) -> torch.Tensor:  # fmt: skip
    """(B, n_items) log-likelihood of every item's ID given each row of ``src`` (the encoder
    input), -inf below a pruned prefix (``bound``, (B,), default none: the whole trie);
    ``make_step(src_rows)`` gives the step function of some rows.  Items that share an ID share
    its score (the harness's tie-break orders them).  Users go through in groups sized by the
    most live prefixes a row had so far (``rows`` / that); a group that overflows is redone smaller."""
    bound = torch.full((len(src),), -torch.inf, device=src.device) if bound is None else bound
    if bool(torch.isinf(bound).any()):
        widest = max(len(t) for t in trie.transitions)
    else:
        widest = DEPTH
    out, start = [], 0
    while start < len(src):
        per_call = max(1, rows // widest)
        part = slice(start, start + per_call)
        leaves, seen = exact_leaf_scores(make_step(src[part]), trie, bound[part], rows)
        widest = max(widest, seen) if leaves is None else seen
        if leaves is None:
            continue
        out.append(leaves[:, leaf_of_item])
        start += len(leaves)
    return torch.cat(out) if out else torch.zeros(0, len(leaf_of_item), device=src.device)


def beam_bound(scores: torch.Tensor, depth: int = DEPTH) -> torch.Tensor:
    """(B,) from a beam's (B, K) summed scores, best first (-inf = an empty slot): the score of its
    ``depth``-th ID, which at least ``depth`` items reach; -inf where it found fewer IDs."""
    if scores.shape[1] < depth:
        return torch.full((len(scores),), -torch.inf, device=scores.device)
    return scores[:, depth - 1].float()


def leaf_of_items(trie: PrefixTrie) -> torch.Tensor:
    """(n_items,) the leaf (ID) of every item."""
    leaf = torch.empty_like(trie.leaf_items)
    leaf[trie.leaf_items] = torch.repeat_interleave(torch.arange(trie.n_leaves, device=trie.leaf_ptr.device), trie.leaf_ptr.diff())
    return leaf


class BeamRecall:
    """How much of an exact ranking a decoder's ranked lists found.

    :meth:`remember` keeps each user's latest list with a key of the history it was made for
    (the last lists pass over the test users is the headline test pass, before any
    supplementary pass); :meth:`compare`, given the exact scores of a batch, counts for the
    users whose remembered list was made for the very same history how many of their exact top
    10 items the list returned at all, and within its own top 10 (exact ties at the cut are
    broken by item index here, not by the harness's order); :meth:`report` returns the shares
    and starts the counts again."""

    K = 10

    def __init__(self, n_users: int):
        self.n_users = n_users
        self.keys: torch.Tensor | None = None
        self.lists: torch.Tensor | None = None
        self.bounds: torch.Tensor | None = None  # per user, a score that DEPTH of the listed items reach (-inf: none)
        self.width = 0  # the decoder's beam when the lists were made
        self.counts = {"users": 0, "found": 0, "found_top": 0}

    @staticmethod
    def history_key(history: torch.Tensor) -> torch.Tensor:
        """(B,) a polynomial hash of each row's real items (padding skipped), to recognise a history."""
        key = torch.zeros(len(history), dtype=torch.long, device=history.device)
        for col in history.T:
            key = torch.where(col >= 0, (key * 1_000_003 + col + 1) % (2**61 - 1), key)
        return key

    def remember(self, batch: EvalBatch, items: torch.Tensor, width: int, bound: torch.Tensor | None = None) -> None:
        """Keep the batch's lists (B, k), made with ``width``, and each row's ``bound`` (see
        :func:`beam_bound`; None = no bound)."""
        if self.lists is None or self.lists.shape[1] != items.shape[1]:
            self.keys = torch.full((self.n_users,), -1, dtype=torch.long, device=items.device)
            self.lists = torch.full((self.n_users, items.shape[1]), -1, dtype=torch.long, device=items.device)
            self.bounds = torch.full((self.n_users,), -torch.inf, device=items.device)
        self.keys[batch.users] = self.history_key(batch.history)
        self.lists[batch.users] = items
        self.bounds[batch.users] = -torch.inf if bound is None else bound.float()
        self.width = int(width)

    def bound_for(self, batch: EvalBatch) -> torch.Tensor:
        """(B,) the remembered bound of each row whose list was made for this very history, else -inf."""
        if self.bounds is None:
            return torch.full((len(batch.users),), -torch.inf, device=batch.users.device)
        same = self.keys[batch.users] == self.history_key(batch.history)
        return torch.where(same, self.bounds[batch.users], -torch.inf)

    def compare(self, batch: EvalBatch, scores: torch.Tensor) -> None:
        if self.lists is None:
            return
        same = self.keys[batch.users] == self.history_key(batch.history)
        if not bool(same.any()):
            return
        top = scores[same].topk(min(self.K, scores.shape[1]), dim=1).indices  # (U, K)
        lists = self.lists[batch.users[same]]  # (U, width)
        hit = (top.unsqueeze(2) == lists.unsqueeze(1)) & (lists.unsqueeze(1) >= 0)
        self.counts["users"] += int(same.sum())
        self.counts["found"] += int(hit.any(2).sum())
        self.counts["found_top"] += int(hit[:, :, : self.K].any(2).sum())

    def report(self) -> dict[str, Any]:
        """The share of each compared user's exact top-10 items that the remembered lists held
        (``beam_recall_of_exact_top10``) and held within their own top 10; {} when none was compared."""
        c, self.counts = self.counts, {"users": 0, "found": 0, "found_top": 0}
        if not c["users"]:
            return {}
        slots = c["users"] * self.K
        return {"beam_recall_of_exact_top10": c["found"] / slots, "beam_top10_share_of_exact_top10": c["found_top"] / slots,
                "users_compared": c["users"], "beam": self.width}  # fmt: skip
