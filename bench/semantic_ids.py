"""The semantic-ID table: every item's tuple of codes, one per level (a type the harness measures).

This is the contract between tokenizers (RQ-VAE, spectral clustering, an index given from
outside) and the recommender/decoder: a tokenizer produces a :class:`SemanticIDs`, the
seq2seq model embeds its codes as tokens, and the beam search decodes only tuples that
appear in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SemanticIDs:
    codes: np.ndarray  # (n_items, levels) int64; codes[i, l] in [0, sizes[l])
    sizes: tuple[int, ...]  # number of possible codes per level (a counting level: the size of the largest collision group)
    source: str  # how the IDs were made, e.g. "rqvae", "rqvae+letter", "external:Beauty.letter_index.json", "spectral"
    info: dict[str, Any] = field(default_factory=dict)  # tokenizer facts for the result record (losses, seconds, ...)

    def __post_init__(self):
        self.codes = np.asarray(self.codes, dtype=np.int64)
        self.sizes = tuple(int(s) for s in self.sizes)
        if self.codes.ndim != 2 or self.codes.shape[1] != len(self.sizes):
            raise ValueError(f"codes must be (n_items, {len(self.sizes)}), got {self.codes.shape}")
        if len(self.codes) and ((self.codes < 0).any() or (self.codes >= np.array(self.sizes)).any()):
            raise ValueError(f"codes out of range for level sizes {self.sizes}")

    @property
    def n_items(self) -> int:
        return len(self.codes)

    @property
    def levels(self) -> int:
        return len(self.sizes)

    @property
    def offsets(self) -> np.ndarray:
        """Token offset of each level when all levels share one vocabulary: level l, code c -> offsets[l] + c."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @property
    def vocab_size(self) -> int:
        return int(sum(self.sizes))

    def tokens(self) -> np.ndarray:
        """(n_items, levels) token ids in the shared vocabulary (codes shifted by level offsets)."""
        return self.codes + self.offsets[None, :]

    def unique_fraction(self) -> float:
        return len(np.unique(self.codes, axis=0)) / max(1, self.n_items)
