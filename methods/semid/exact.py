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
"""

from __future__ import annotations

from typing import Callable

import torch

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
