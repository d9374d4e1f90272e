"""Harness-side evaluation: ask a method for scores or lists, turn them into ranks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.method import DecodeRequest, EvalBatch, Method
from bench.metrics import MAX_RANK, ranks_from_lists, ranks_from_scores
from bench.split import EvalSet


@dataclass
class EvalOutput:
    ranks: np.ndarray  # (n_users,) int, 1-based rank of the target, 0 = not in the top MAX_RANK
    seconds: float
    users: int
    short_lists: int = 0  # users whose de-duplicated list held fewer than MAX_RANK items
    duplicates: int = 0  # repeated entries removed from ranked lists
    list_entries: int = 0  # entries returned in total (for the duplicate rate)
    list_depth: int | None = None  # lists only: the longest de-duplicated list of any user
    top1: np.ndarray | None = None  # lists only: each user's first item (-1 = none), for the ID-prefix accuracy


class Evaluator:
    """Evaluates one method on one :class:`EvalSet`, batch by batch on the method's device.

    Histories are materialised once, right-aligned and capped at the method's history cap,
    and moved to the device; targets stay here and never reach the method.  With
    ``mask_history`` every item of a user's (uncapped) history is removed from the ranking,
    for every method alike: scores are set to -inf, list entries dropped.
    """

    def __init__(self, evalset: EvalSet, method: Method, tiebreak: torch.Tensor, batch_size: int, progress: bool, desc: str,
                 mask_history: bool = False, request: DecodeRequest | None = None):
        self.method, self.batch_size, self.progress, self.desc = method, batch_size, progress, desc
        self.request = request if request is not None else DecodeRequest()  # what each pass asks of the method, unless run() names another
        device = method.device
        cap = method.history_cap
        hist = evalset.input.history
        width = 0 if cap == 0 else None if cap is None else int(cap)
        self.history = torch.from_numpy(hist.padded(width)).to(device)
        self.lengths = torch.from_numpy(np.minimum(hist.lengths, self.history.shape[1])).to(device)
        self.users = torch.from_numpy(evalset.input.users.astype(np.int64)).to(device)
        self.targets = torch.from_numpy(evalset.targets).to(device)
        self.tiebreak = tiebreak.to(device)
        self.mask_history = mask_history
        self._hist = hist
        self.hist_offsets = self.hist_items = None  # (row, item) pairs of every history, CSR, moved on first masked run

    def _history_pairs(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hist_offsets is None:
            self.hist_offsets = torch.from_numpy(self._hist.offsets).to(self.users.device)
            self.hist_items = torch.from_numpy(self._hist.items.astype(np.int64)).to(self.users.device)
        lo, hi = int(self.hist_offsets[start]), int(self.hist_offsets[stop])
        counts = self.hist_offsets[start + 1 : stop + 1] - self.hist_offsets[start:stop]
        rows = torch.repeat_interleave(torch.arange(stop - start, device=counts.device), counts)
        return rows, self.hist_items[lo:hi]

    @property
    def masking_keeps_depth(self) -> bool:
        """Whether removing history items keeps the full ranking depth: true for full-catalog
        scores, false for ranked lists (masked entries would shorten them)."""
        return self.method.active_output == "scores"

    @torch.no_grad()
    def run(self, mask_history: bool | None = None, request: DecodeRequest | None = None) -> EvalOutput:
        """Ranks of every target; ``mask_history`` and ``request`` override the evaluator's own
        settings for this run.  The method holds the request for the pass (``Method.request``)."""
        method = self.method
        before = method.request
        method.request = request if request is not None else self.request
        try:
            return self._run(self.mask_history if mask_history is None else mask_history)
        finally:
            method.request = before

    def _run(self, mask: bool) -> EvalOutput:
        method = self.method
        method.eval()
        output = method.active_output
        n = len(self.users)
        ranks = torch.empty(n, dtype=torch.long, device=self.users.device)
        top1 = torch.full((n,), -1, dtype=torch.long, device=self.users.device)
        short = dup = entries = depth = 0
        method.ctx.synchronize()
        t0 = time.perf_counter()
        for start in tqdm(range(0, n, self.batch_size), desc=self.desc, disable=not self.progress or None, leave=False):
            sl = slice(start, start + self.batch_size)
            lengths = self.lengths[sl]
            width = int(lengths.max().item()) if len(lengths) else 0
            batch = EvalBatch(self.users[sl], self.history[sl, self.history.shape[1] - width :], lengths)
            if output == "scores":
                scores = method.score(batch)
                if scores.shape != (len(batch.users), method.data.n_items):
                    raise ValueError(f"{method.name}.score returned shape {tuple(scores.shape)}, expected ({len(batch.users)}, {method.data.n_items})")
                if mask:
                    scores = scores.float().clone()
                    scores[self._history_pairs(start, start + len(batch.users))] = -torch.inf
                ranks[sl] = ranks_from_scores(scores, self.targets[sl], self.tiebreak)
            else:
                lists = method.recommend(batch, MAX_RANK)
                if mask:
                    rows, items = self._history_pairs(start, start + len(batch.users))
                    seen = torch.zeros(len(batch.users), method.data.n_items, dtype=torch.bool, device=lists.device)
                    seen[rows, items] = True
                    lists = torch.where((lists >= 0) & seen.gather(1, lists.clamp_min(0)), -1, lists)
                r, n_unique, n_dup = ranks_from_lists(lists, self.targets[sl])
                ranks[sl] = r
                top1[sl] = lists.gather(1, (lists >= 0).to(torch.uint8).argmax(1, keepdim=True)).squeeze(1)
                short += int((n_unique < MAX_RANK).sum())
                depth = max(depth, int(n_unique.max()) if len(n_unique) else 0)
                dup += int(n_dup.sum())
                entries += int((lists >= 0).sum())
        method.ctx.synchronize()
        seconds = time.perf_counter() - t0
        lists = output == "lists"
        return EvalOutput(ranks.cpu().numpy(), seconds, n, short, dup, entries, depth if lists else None,
                          top1.cpu().numpy() if lists else None)  # fmt: skip
