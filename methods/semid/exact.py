"""Exact ranking of the whole catalogue by the log-likelihood of each item's full semantic ID.

A beam returns at most ``beam`` items and its misses are invisible.  A model that scores a
code given the codes before it (the seq2seq of :mod:`methods.semid.seq2seq`) can instead score
every item: log p(ID | history) = sum over levels l of log p(c_l | history, c_<l), each term
normalized over the whole vocabulary as the beam search's step does, so a beam's summed score
and the exact score of the same ID are the same number.

:func:`exact_leaf_scores` expands the whole prefix trie level by level with the beam search's
step function (:func:`methods.semid.generative.seq2seq_step`): the history is encoded once per
user, and the decoder runs once per trie node (every distinct prefix of a valid ID), not once
per item and level, since items that share a prefix share its decoder state (the cached
keys and values of its positions).  Rows of (user, node) go through the decoder together, up
to :data:`EXACT_ROWS` per call, which bounds the memory (the vocabulary logits of every row).

:class:`BeamRecall` measures how much of an exact ranking a method's beam (or any other
decoder that returns lists) found, for the users whose lists it remembers.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from bench.method import EvalBatch
from methods.semid.beam import PrefixTrie, StepFn

# (user, trie node) rows per decoder call: the vocabulary logits of 16,384 rows x ~1,000 tokens
# are 64 MB in float32.
EXACT_ROWS = 16384


def trie_children(trie: PrefixTrie) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per depth d, (parent, code) of every prefix at depth d + 1 in the order of its index:
    the prefix's parent at depth d and its last code."""
    out = []
    for table in trie.transitions:
        parent, code = torch.nonzero(table >= 0, as_tuple=True)  # row-major = the order the trie numbered the children in
        out.append((parent, code))
    return out


@torch.no_grad()
def exact_leaf_scores(step: StepFn, trie: PrefixTrie, batch: int, children: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                      ) -> torch.Tensor:  # fmt: skip
    """(batch, n_leaves) summed log-probabilities of every valid ID (trie leaf) for ``batch``
    rows, with ``step`` as :func:`methods.semid.beam.beam_search` takes it: depth d is asked for
    the next-code log-probabilities of all prefixes at depth d at once, as if each were a beam."""
    children = trie_children(trie) if children is None else children
    device = trie.leaf_ptr.device
    scores = torch.zeros(batch, 1, device=device)
    prefixes = torch.zeros(1, 0, dtype=torch.long, device=device)  # (nodes at depth d, d) codes of each prefix
    parent = torch.zeros(1, dtype=torch.long, device=device)  # each node's parent among the previous depth's nodes
    for d, (p, c) in enumerate(children):
        K = len(prefixes)
        logp = step(d, prefixes.unsqueeze(0).expand(batch, K, d), parent.unsqueeze(0).expand(batch, K)).float()
        scores = scores[:, p] + logp[:, p, c]
        prefixes = torch.cat([prefixes[p], c.unsqueeze(1)], 1)
        parent = p
    return scores


def exact_item_scores(make_step: Callable[[torch.Tensor], StepFn], src: torch.Tensor, trie: PrefixTrie, leaf_of_item: torch.Tensor,
                      children: list[tuple[torch.Tensor, torch.Tensor]] | None = None, rows: int = EXACT_ROWS) -> torch.Tensor:  # fmt: skip
    """(B, n_items) log-likelihood of every item's ID given each row of ``src`` (the encoder
    input), ``make_step(src_chunk)`` giving the step function of a chunk of rows.  Items that
    share an ID share its score (the harness's tie-break orders them)."""
    children = trie_children(trie) if children is None else children
    widest = max([1] + [len(p) for p, _ in children])
    per_call = max(1, rows // widest)
    out = []
    for start in range(0, len(src), per_call):
        chunk = src[start : start + per_call]
        out.append(exact_leaf_scores(make_step(chunk), trie, len(chunk), children)[:, leaf_of_item])
    return torch.cat(out) if out else torch.zeros(0, len(leaf_of_item), device=src.device)


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
        self.width = 0  # the decoder's beam when the lists were made
        self.counts = {"users": 0, "found": 0, "found_top": 0}

    @staticmethod
    def history_key(history: torch.Tensor) -> torch.Tensor:
        """(B,) a polynomial hash of each row's real items (padding skipped), to recognise a history."""
        key = torch.zeros(len(history), dtype=torch.long, device=history.device)
        for col in history.T:
            key = torch.where(col >= 0, (key * 1_000_003 + col + 1) % (2**61 - 1), key)
        return key

    def remember(self, batch: EvalBatch, items: torch.Tensor, width: int) -> None:
        if self.lists is None or self.lists.shape[1] != items.shape[1]:
            self.keys = torch.full((self.n_users,), -1, dtype=torch.long, device=items.device)
            self.lists = torch.full((self.n_users, items.shape[1]), -1, dtype=torch.long, device=items.device)
        self.keys[batch.users] = self.history_key(batch.history)
        self.lists[batch.users] = items
        self.width = int(width)

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
