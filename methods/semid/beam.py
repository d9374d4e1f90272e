"""Constrained beam search over semantic IDs, batched over users and beams on the device.

:class:`PrefixTrie` holds the valid IDs of a :class:`SemanticIDs` as tensors: for every
depth a transition table ``(prefixes at that depth, codes of that level) -> child prefix
index or -1``; the children of the last depth are the leaves (the distinct IDs), and a CSR
table maps each leaf to its item(s) (several when items share an ID).

:func:`beam_search` runs one decoder step per level.  Each step asks the model once for
the next-code log-probabilities of all (user, beam) pairs, masks codes that leave the trie
with -inf through one gather in a 0/-inf table per depth, adds the running scores and keeps
the best ``beam`` of beam x level-size candidates per user by top-k (ties: the lower flat
index wins, i.e. the better-ranked parent beam, then the smaller code).  Only valid IDs can come
out.  Where fewer valid continuations exist than the beam, the rest stay -inf and are
dropped.  The result maps leaves to items, best first, each item at most once.

An optional per-request ``item_mask`` (B, n_items) restricts each row to the IDs of its
allowed items: a prefix with no allowed item below it is masked like an invalid code, and
disallowed items sharing a leaf with allowed ones are dropped from the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bench.semantic_ids import SemanticIDs


@dataclass
class PrefixTrie:
    transitions: list[torch.Tensor]  # depth d: (n_prefixes[d], sizes[d]) int32, child index at depth d + 1, or -1
    invalid: list[torch.Tensor]  # depth d: (n_prefixes[d], sizes[d]) float32, 0 where transitions has a child, else -inf
    leaf_ptr: torch.Tensor  # (n_leaves + 1,) long, CSR offsets into leaf_items
    leaf_items: torch.Tensor  # (n_items,) long, items grouped by leaf, ascending item index within a leaf
    sizes: tuple[int, ...]

    @classmethod
    def build(cls, ids: SemanticIDs, device: torch.device | str = "cpu") -> "PrefixTrie":
        codes, sizes = ids.codes, ids.sizes
        parent = np.zeros(ids.n_items, dtype=np.int64)  # every item starts at the root (depth-0 prefix 0)
        n_parent = 1
        transitions = []
        for d, size in enumerate(sizes):
            key = parent * size + codes[:, d]
            uniq, child = np.unique(key, return_inverse=True)
            table = np.full((n_parent, size), -1, dtype=np.int32)
            table[uniq // size, uniq % size] = np.arange(len(uniq), dtype=np.int32)
            transitions.append(torch.from_numpy(table).to(device))
            parent, n_parent = child.reshape(-1), len(uniq)
        counts = np.bincount(parent, minlength=n_parent)
        leaf_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        leaf_items = np.argsort(parent, kind="stable").astype(np.int64)
        invalid = [torch.where(t >= 0, 0.0, -torch.inf) for t in transitions]
        return cls(transitions, invalid, torch.from_numpy(leaf_ptr).to(device), torch.from_numpy(leaf_items).to(device), tuple(sizes))

    @property
    def levels(self) -> int:
        return len(self.sizes)

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_ptr) - 1

    def prefixes_per_depth(self) -> list[int]:
        return [len(t) for t in self.transitions] + [self.n_leaves]

    def allowed_prefixes(self, item_mask: torch.Tensor) -> list[torch.Tensor]:
        """Per depth d >= 1, (B, prefixes at depth d) bool: some item of the row's ``item_mask``
        (B, n_items) lies below the prefix; the last entry is per leaf."""
        B = item_mask.shape[0]
        leaf_of_item = torch.empty_like(self.leaf_items)
        leaf_of_item[self.leaf_items] = torch.repeat_interleave(torch.arange(self.n_leaves, device=self.leaf_ptr.device), self.leaf_ptr.diff())
        node = torch.zeros(B, self.n_leaves, device=item_mask.device).index_add_(1, leaf_of_item, item_mask.float()) > 0
        out = [node]
        for table in reversed(self.transitions[1:]):
            rows, _ = torch.nonzero(table >= 0, as_tuple=True)
            child = table[table >= 0].long()
            up = torch.zeros(B, len(table), device=item_mask.device).index_add_(1, rows, out[0][:, child].float()) > 0
            out.insert(0, up)
        return out

    def leaf_of(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., levels) code tuples -> leaf index, or -1 for a tuple that is not a valid ID."""
        node = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        for d, table in enumerate(self.transitions):
            c = codes[..., d].long()
            ok = (node >= 0) & (c >= 0) & (c < self.sizes[d])
            child = table[node.clamp_min(0), c.clamp(0, self.sizes[d] - 1)].long()
            node = torch.where(ok, child, -1)
        return node


@dataclass
class BeamResult:
    items: torch.Tensor  # (B, k) long, best first, -1 = none; each item at most once per row
    leaves: torch.Tensor  # (B, K) long leaf per final beam, -1 = no valid ID in that slot
    codes: torch.Tensor  # (B, K, levels) long generated codes per final beam
    scores: torch.Tensor  # (B, K) float summed log-probabilities, -inf for empty slots
    generated: int  # beams with a finite score (at most batch x beam; fewer when fewer valid IDs exist)
    invalid: int  # finite-score beams whose codes are not a valid ID (0 by construction; checked)
    duplicates: int  # item entries dropped because they repeated an earlier one in the row


def concat_results(results: list[BeamResult]) -> BeamResult:
    """The results of consecutive batches of users as one (rows padded to the widest: item -1,
    leaf -1, code 0, score -inf; counts summed)."""
    if len(results) == 1:
        return results[0]

    def cat(parts: list[torch.Tensor], fill) -> torch.Tensor:
        width = max(t.shape[1] for t in parts)
        return torch.cat([torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1]), value=fill) for t in parts])

    return BeamResult(cat([r.items for r in results], -1), cat([r.leaves for r in results], -1), cat([r.codes for r in results], 0),
                      cat([r.scores for r in results], -torch.inf), sum(r.generated for r in results),
                      sum(r.invalid for r in results), sum(r.duplicates for r in results))  # fmt: skip


StepFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def beam_search(step: StepFn, trie: PrefixTrie, batch: int, beam: int, k: int, device: torch.device | str,
                item_mask: torch.Tensor | None = None) -> BeamResult:
    """Constrained beam search for ``batch`` rows.

    ``step(depth, codes, parent)`` gets the codes chosen so far, (batch, K, depth) long, and
    for each of the K beams the index of the beam it extends in the previous call's K
    (zeros at depth 0; for decoders that cache per-beam state), and returns (batch, K,
    sizes[depth]) next-code log-probabilities (called ``levels`` times in all).
    Returns the top ``k`` items per row (from at most ``beam`` IDs).  ``item_mask``: optional
    (batch, n_items) bool, the items each row may show (None = all).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    prefix = torch.zeros(batch, 1, dtype=torch.long, device=device)
    scores = torch.zeros(batch, 1, device=device)
    codes = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)
    parent = torch.zeros(batch, 1, dtype=torch.long, device=device)
    allowed = trie.allowed_prefixes(item_mask.to(device)) if item_mask is not None else None
    for d, table in enumerate(trie.transitions):
        logp = step(d, codes, parent).float()
        K, size = logp.shape[1], logp.shape[2]
        rows = prefix.clamp_min(0)  # a dead beam (-1) has score -inf, so its candidates stay -inf
        if allowed is None:
            cand = trie.invalid[d][rows]  # (B, K, size): 0, or -inf for a code that leaves the trie
        else:  # a prefix with no allowed item below it is as good as invalid
            child = table[rows].long()
            ok = (child >= 0) & allowed[d].gather(1, child.clamp_min(0).reshape(batch, -1)).reshape(child.shape)
            cand = torch.where(ok, 0.0, -torch.inf)
        cand = cand.add_(logp).add_(scores.unsqueeze(-1)).reshape(batch, K * size)
        top, idx = _best(cand, min(beam, K * size))
        live = torch.isfinite(top)
        width = max(1, int(live.sum(1).max())) if batch else top.shape[1]  # drop slots that are -inf in every row
        top, idx, live = top[:, :width], idx[:, :width], live[:, :width]
        parent, code = idx // size, idx % size
        prefix = torch.where(live, table[rows.gather(1, parent), code].long(), -1)
        scores = top
        codes = torch.cat([codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, d)), code.unsqueeze(-1)], -1)
    leaves = prefix
    finite = torch.isfinite(scores)
    invalid = int((finite & (leaves < 0)).sum())
    every = k if item_mask is None else max(k, int(trie.leaf_ptr.diff().max()) * leaves.shape[1])  # masked: all, then the top k
    items, duplicates = _leaves_to_items(leaves, trie, every)
    if item_mask is not None:  # drop disallowed items that share a leaf with allowed ones
        shown = (items >= 0) & item_mask.to(device).gather(1, items.clamp_min(0))
        items = _first_occurrences(torch.where(shown, items, -1))[:, :k]
    return BeamResult(items, leaves, codes, scores, int(finite.sum()), invalid, duplicates)


def _best(cand: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``width`` largest entries of each row of ``cand`` and their indices, best first,
    equal values in index order: the head of a stable descending sort, found by top-k (the
    full sort of beam x codes candidates per row was the search's largest cost on CPU).  A row
    whose finite values tie across the cut takes the sort, to keep the lower indices."""
    n = cand.shape[1]
    head = cand.topk(min(width + 1, n), dim=1)
    idx = head.indices[:, :width].sort(dim=1).values  # index order; the stable sort by value keeps it for ties
    top, order = cand.gather(1, idx).sort(dim=1, descending=True, stable=True)
    idx = idx.gather(1, order)
    if width < n:
        tied = (head.values[:, width] == head.values[:, width - 1]) & torch.isfinite(head.values[:, width])
        if bool(tied.any()):
            rows = tied.nonzero().squeeze(1)
            srt = torch.sort(cand[rows], dim=1, descending=True, stable=True)
            top[rows], idx[rows] = srt.values[:, :width], srt.indices[:, :width]
    return top, idx


def _leaves_to_items(leaves: torch.Tensor, trie: PrefixTrie, k: int) -> tuple[torch.Tensor, int]:
    """Expand each leaf into its item(s) in beam order, drop repeats, keep the first k."""
    B, K = leaves.shape
    device = leaves.device
    valid = leaves >= 0
    safe = leaves.clamp_min(0)
    counts = torch.where(valid, trie.leaf_ptr[safe + 1] - trie.leaf_ptr[safe], 0)  # (B, K)
    flat_counts = counts.reshape(-1)
    beam_of_entry = torch.repeat_interleave(torch.arange(B * K, device=device), flat_counts)
    first_entry = torch.cumsum(flat_counts, 0) - flat_counts  # entry index where each beam starts
    within = torch.arange(len(beam_of_entry), device=device) - first_entry[beam_of_entry]
    item = trie.leaf_items[trie.leaf_ptr[safe.reshape(-1)[beam_of_entry]] + within]
    row = beam_of_entry // K
    row_start = torch.cumsum(counts.sum(1), 0) - counts.sum(1)
    col = torch.arange(len(item), device=device) - row_start[row]
    width = max(k, int(counts.sum(1).max())) if B else k
    out = torch.full((B, width), -1, dtype=torch.long, device=device)
    out[row, col] = item
    # a repeat can only arise from two beams with the same leaf; the trie makes beams distinct
    srt = out.sort(1).values
    repeat = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    duplicates = int(repeat.sum())
    if duplicates:
        out = _first_occurrences(out)
    return out[:, :k], duplicates


def _first_occurrences(lists: torch.Tensor) -> torch.Tensor:
    """Keep the first occurrence of each item per row, shift the rest left, pad with -1."""
    same = (lists.unsqueeze(2) == lists.unsqueeze(1)) & (lists >= 0).unsqueeze(2)
    earlier = torch.tril(torch.ones(lists.shape[1], lists.shape[1], dtype=torch.bool, device=lists.device), -1)
    keep = (lists >= 0) & ~(same & earlier).any(2)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    return torch.where(keep.gather(1, order), lists.gather(1, order), -1)
