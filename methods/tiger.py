"""TIGER (Rajput et al., 2023): generative retrieval with RQ-VAE semantic IDs.

Item text -> sentence embedding (:mod:`methods.semid.text`) -> RQ-VAE with 3 levels of 256
codes plus a counting level that makes every ID unique (:mod:`methods.semid.rqvae`) -> a
T5-style encoder-decoder trained to generate the next item's ID from the IDs of the last
20 items, decoded with the constrained beam search (:mod:`methods.semid.generative`).

``tiger-rkmeans`` is TIGER on RQ-KMeans IDs (residual k-means on the same embeddings, no
trained quantizer: ``rq_method = "rkmeans"``, :mod:`methods.semid.rkmeans`).

``tiger-letterindex`` is TIGER's recommender on an index given from outside (by default
LETTER's released index beside the dataset, e.g. ``beauty/Beauty.letter_index.json``), so the
recommender can be judged apart from the tokenizer.

Tokenizer options carry an ``rq_`` prefix and text options a ``text_`` prefix in the flat
config (``--set tiger.rq_epochs=500``, ``--set tiger.text_encoder=PATH``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.errors import UserError
from bench.semantic_ids import SemanticIDs
from methods.semid.generative import CPU_RECOMMENDER, GenerativeConfig, GenerativeMethod
from methods.semid.rqvae import COLLISIONS, KMEANS_INIT, RQ_METHODS, external_index
from methods.semid.text_ids import TextIDs, TextTokenizerOptions


@dataclass
class TIGERConfig(TextTokenizerOptions, GenerativeConfig):
    def __post_init__(self):
        super().__post_init__()
        if self.rq_method not in RQ_METHODS:
            raise UserError(f"option rq_method: expected one of {', '.join(RQ_METHODS)}, got {self.rq_method!r}")
        if self.rq_collisions not in COLLISIONS:
            raise UserError(f"option rq_collisions: expected one of {', '.join(COLLISIONS)}, got {self.rq_collisions!r}")
        if self.rq_kmeans_init not in KMEANS_INIT:
            raise UserError(f"option rq_kmeans_init: expected one of {', '.join(KMEANS_INIT)}, got {self.rq_kmeans_init!r}")
        self.rqvae_config().check()


class TIGER(TextIDs, GenerativeMethod):
    name = "tiger"
    description = "TIGER: RQ-VAE semantic IDs (3x256 + counting token) and a T5 recommender with constrained beam search"
    Config = TIGERConfig
    # cpu: the shared small recommender and 500 tokenizer epochs (TIGER, LETTER: 20k; the same
    # 500 as letter-*, so their codebooks compare). Scientific, one thread: 0.34 CPU s per
    # tokenizer epoch; with ~1,600 s for the recommender, ~30 min in all (plus ~220 s for the
    # text embeddings when not cached).
    presets = {"cpu": {**CPU_RECOMMENDER, "rq_epochs": 500}}
    needs = ("item_text",)  # the tokenizer quantizes item text embeddings (inherited by LETTER, BLOGER, UniVA)

@dataclass
class TIGERRKMeansConfig(TIGERConfig):
    rq_method: str = "rkmeans"


class TIGERRKMeans(TIGER):
    """TIGER with RQ-KMeans IDs (:mod:`methods.semid.rkmeans`): the same 3 x 256 levels and
    counting token, the codes from residual k-means on the text embeddings instead of a trained
    RQ-VAE (the ``rq_*`` training options do not apply).  Its ``cpu`` preset is tiger's
    recommender; there is no tokenizer training to shorten."""

    name = "tiger-rkmeans"
    description = "TIGER on RQ-KMeans semantic IDs (residual k-means++ on the text embeddings, no trained quantizer; 3x256 + counting token)"
    Config = TIGERRKMeansConfig
    presets = {"cpu": dict(CPU_RECOMMENDER)}


@dataclass
class ExternalIndexConfig(GenerativeConfig):
    index: str = ""  # path of a LETTER-format index; "" = the *.letter_index.json beside the dataset in the data directory


class TIGERLetterIndex(GenerativeMethod):
    name = "tiger-letterindex"
    description = "TIGER's recommender on LETTER's released semantic IDs (judges the recommender apart from the tokenizer)"
    Config = ExternalIndexConfig
    presets = {"cpu": dict(CPU_RECOMMENDER)}  # no tokenizer to train

    def index_path(self) -> Path:
        if self.config.index:
            return Path(self.config.index)
        folder = self.data.source_dir  # the dataset's local folder, as the harness found it
        found = sorted(folder.glob("*.letter_index.json")) if folder is not None and folder.is_dir() else []
        if len(found) != 1:
            where = f"{folder}/*.letter_index.json" if folder is not None else "the dataset's folder in a data directory (--data-dir or $BENCH_DATA_DIR)"
            raise UserError(f"{self.name}: no single LETTER index for dataset {self.data.dataset!r} in {where}; "
                            f"pass --set {self.name}.index=PATH")  # fmt: skip
        return found[0]

    def build_ids(self) -> SemanticIDs:
        path = self.index_path()
        ids = external_index(path, self.data)
        self.ctx.info["tokenizer"] = {"external_index": str(path)}
        return ids
