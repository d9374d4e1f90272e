"""Published numbers on the benchmark's splits, with their sources, for "paper" rows.

Leave-one-out, full ranking, history 20 (docs/protocol.md §2). The classical rows of the
TIGER and LETTER tables come from S3-Rec-style evaluation code that removes each user's
history items from the ranking, so they are compared with our history-masked supplementary
metrics (``compare_with = "masked"``); the generative rows (beams, nothing removed) with our
headline metrics (``"headline"``).  Their item embeddings came from larger text encoders
(Sentence-T5, LLaMA-7B) and richer item text than ours: see each record's text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

TIGER = "TIGER paper (Rajput et al., NeurIPS 2023), Table 1"
LETTER = "LETTER paper (Wang et al., CIKM 2024), Table 1"
BLOGER = "BLOGER paper (SIGIR 2026, arXiv 2510.21242), Table 1"


@dataclass(frozen=True)
class Published:
    dataset: str
    methods: tuple[str, ...]  # our registered method(s) for the same model (variants with another loss too)
    label: str  # how the paper names it
    source: str
    metrics: dict[str, float]  # recall@5, ndcg@5, recall@10, ndcg@10
    compare_with: str  # "masked" (our supplementary history-masked metrics) or "headline"


def _m(r5: float, n5: float, r10: float, n10: float) -> dict[str, float]:
    return {"recall@5": r5, "ndcg@5": n5, "recall@10": r10, "ndcg@10": n10}


PUBLISHED: tuple[Published, ...] = (
    Published("beauty", ("sasrec",), "SASRec", TIGER, _m(0.0387, 0.0249, 0.0605, 0.0318), "masked"),
    Published("beauty", ("bert4rec",), "BERT4Rec", TIGER, _m(0.0203, 0.0124, 0.0347, 0.0170), "masked"),
    # beside our defaults (softmax cross-entropy) and our variants trained with each paper's own loss
    Published("beauty", ("caser", "caser-bce"), "Caser", TIGER, _m(0.0205, 0.0131, 0.0347, 0.0176), "masked"),
    Published("beauty", ("hgn-bpr", "hgn"), "HGN", TIGER, _m(0.0325, 0.0206, 0.0512, 0.0266), "masked"),
    Published("beauty", ("gru4rec-top1", "gru4rec"), "GRU4Rec", TIGER, _m(0.0164, 0.0099, 0.0283, 0.0137), "masked"),
    Published("beauty", ("tiger",), "TIGER", TIGER, _m(0.0454, 0.0321, 0.0648, 0.0384), "headline"),
    Published("beauty", ("mf",), "MF", LETTER, _m(0.0294, 0.0145, 0.0474, 0.0191), "masked"),
    Published("beauty", ("lightgcn",), "LightGCN", LETTER, _m(0.0305, 0.0194, 0.0511, 0.0260), "masked"),
    Published("beauty", ("p5-cid",), "P5-CID", LETTER, _m(0.0400, 0.0274, 0.0590, 0.0335), "headline"),
    Published("beauty", ("letter-base",), "TIGER (LETTER's 4x256 tokenizer, row 0)", LETTER, _m(0.0395, 0.0262, 0.0610, 0.0331), "headline"),
    Published("beauty", ("letter-tiger",), "LETTER-TIGER", LETTER, _m(0.0431, 0.0286, 0.0672, 0.0364), "headline"),
    Published("beauty", ("lc-rec",), "LC-Rec (LLaMA-7B)", LETTER, _m(0.0443, 0.0311, 0.0642, 0.0374), "headline"),
    Published("beauty", ("bloger",), "BLOGER", BLOGER, _m(0.0444, 0.0293, 0.0654, 0.0361), "headline"),
)


def published_for(dataset: str) -> list[Published]:
    """The published rows of a dataset (the base name of a leaderboard table, before any @variant)."""
    return [p for p in PUBLISHED if p.dataset == dataset]
