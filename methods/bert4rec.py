"""BERT4Rec (Sun et al., 2019): bidirectional transformer trained with a cloze task.

Item embedding plus a learned position embedding, layer norm and dropout; post-norm
transformer layers (GELU feed-forward) attending in both directions over the non-padding
positions; an output head (linear, GELU, layer norm) whose result is scored against the
shared item embeddings plus an item bias, as in the paper and RecBole.

Training: each training sequence, cut into right-aligned chunks of ``max_len``
(``sequence_chunks``), has every item replaced by a [mask] token with probability
``mask_ratio``; a fraction ``ft_ratio`` of the rows instead masks only the last item (the
paper's extra samples that match the prediction task; RecBole's ``ft_ratio``).  Softmax
cross-entropy over the catalog at the masked positions only: the output projection is never
computed elsewhere.  Prediction: [mask] appended after the last ``max_len - 1`` history
items; its output scores every item.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.batching import EpochBatches, sequence_chunks
from bench.errors import UserError
from bench.losses import softmax_cross_entropy
from bench.method import EvalBatch, Method
from bench.training import adam, train


@dataclass
class BERT4RecConfig:
    hidden: int = 64  # RecBole hidden_size (paper: 64)
    layers: int = 2  # RecBole and paper
    heads: int = 2  # RecBole and paper
    inner: int = 256  # RecBole inner_size (4 x hidden, as in the paper)
    dropout: float = 0.2  # RecBole hidden/attention dropout (paper: 0.1)
    mask_ratio: float = 0.2  # RecBole mask_ratio (paper: 0.6 on Beauty, 0.2 on MovieLens)
    ft_ratio: float = 0.5  # RecBole: share of rows that mask only the last item
    max_len: int = 50  # positions including the appended [mask] (RecBole and paper on Beauty: 50)
    lr: float = 1e-3  # RecBole (paper: 1e-4)
    weight_decay: float = 0.0
    batch_size: int = 256  # paper
    epochs: int = 200
    patience: int = 5
    eval_every: int = 2
    # where shuffled batches would be mostly padding (short histories), batches of similar length holding about
    # batch_size chunks' worth of targets each (bench.batching.EpochBatches); False = always shuffled batches of
    # batch_size chunks. Records made before this option used shuffled batches.
    group_by_length: bool = field(default=True, metadata={"before": False})

    def __post_init__(self):
        if not 0.0 < self.mask_ratio <= 1.0 or not 0.0 <= self.ft_ratio <= 1.0:
            raise UserError(f"options bert4rec.mask_ratio in (0, 1] and bert4rec.ft_ratio in [0, 1] expected, got {self.mask_ratio}, {self.ft_ratio}")
        if self.max_len < 2:
            raise UserError(f"option bert4rec.max_len: expected >= 2 (history + [mask]), got {self.max_len}")
        if self.hidden % self.heads:
            raise UserError(f"option bert4rec.hidden ({self.hidden}) must be divisible by bert4rec.heads ({self.heads})")


class BERT4RecModel(torch.nn.Module):
    def __init__(self, n_items: int, cfg: BERT4RecConfig):
        super().__init__()
        d = cfg.hidden
        self.mask_id = n_items + 1  # 0 = padding, item i -> i + 1, n_items + 1 = [mask]
        self.item = torch.nn.Embedding(n_items + 2, d, padding_idx=0)
        self.pos = torch.nn.Embedding(cfg.max_len, d)
        self.norm = torch.nn.LayerNorm(d, eps=1e-12)
        self.drop = torch.nn.Dropout(cfg.dropout)
        layer = torch.nn.TransformerEncoderLayer(d, cfg.heads, cfg.inner, cfg.dropout, activation="gelu", batch_first=True,
                                                 layer_norm_eps=1e-12)  # fmt: skip
        self.encoder = torch.nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.head = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.GELU(), torch.nn.LayerNorm(d, eps=1e-12))
        self.bias = torch.nn.Parameter(torch.zeros(n_items))
        for m in self.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(m.weight, std=0.02)  # RecBole initializer_range
                if isinstance(m, torch.nn.Linear) and m.bias is not None:
                    torch.nn.init.zeros_(m.bias)
        for name, p in self.encoder.named_parameters():
            if name.endswith("in_proj_weight"):
                torch.nn.init.normal_(p, std=0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq``: (B, L) shifted ids (0 = padding), right-aligned, L <= max_len. Returns (B, L, d)."""
        L = seq.shape[1]
        x = self.drop(self.norm(self.item(seq) + self.pos.weight[-L:].unsqueeze(0)))
        return self.encoder(x, src_key_padding_mask=seq == 0)

    def output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The catalog's output weights (n_items, d), the shared item embeddings, and its bias;
        they score ``head(h)``."""
        return self.item.weight[1 : self.mask_id], self.bias

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        weight, bias = self.output()
        return self.head(h) @ weight.T + bias


class BERT4Rec(Method):
    name = "bert4rec"
    description = "BERT4Rec: bidirectional transformer, cloze training, [mask] appended at test time"
    Config = BERT4RecConfig
    presets = {"cpu": {}}  # the defaults fit: one Scientific seed trains to early stopping on one core (docs/protocol.md §5)
    output = "scores"

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.model = BERT4RecModel(data.n_items, config).to(self.device)

    def mask_batch(self, seq: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Cloze masking of (B, L) right-aligned shifted ids: returns (masked input, masked positions)."""
        cfg = self.config
        real = seq > 0
        masked = (torch.rand(seq.shape, generator=gen, device=seq.device) < cfg.mask_ratio) & real
        last_only = torch.rand(seq.shape[0], generator=gen, device=seq.device) < cfg.ft_ratio
        last = torch.zeros_like(masked)
        last[:, -1] = True
        masked = torch.where(last_only.unsqueeze(1), last, masked)
        return torch.where(masked, torch.full_like(seq, self.model.mask_id), seq), masked

    def fit(self) -> None:
        cfg, dev = self.config, self.device
        chunks, _ = sequence_chunks(self.data.train, cfg.max_len)
        chunks = torch.from_numpy(chunks + 1).to(dev)  # -1 padding -> 0
        lengths = (chunks > 0).sum(1)
        gen = self.ctx.torch_generator(self.name, "train")
        opt = adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def loss(idx: torch.Tensor) -> torch.Tensor | None:
            seq = chunks[idx, -int(lengths[idx].max()) :]  # drop columns that are padding in every row
            inp, masked = self.mask_batch(seq, gen)
            if not masked.any():
                return None
            h = self.model(inp)[masked]  # the output projection only where an item is masked
            return softmax_cross_entropy(self.model.head(h), seq[masked] - 1, *self.model.output())

        batches = EpochBatches(lengths, cfg.batch_size, gen, cfg.group_by_length)
        self.ctx.info["batching"] = batches.describe
        train(self.ctx, self.model, opt, loss, batches,
              cfg.epochs, cfg.patience, cfg.eval_every)  # fmt: skip

    def test_input(self, batch: EvalBatch) -> torch.Tensor:
        """The last ``max_len - 1`` history items (shifted ids, 0 = padding) with [mask] appended."""
        hist = batch.history[:, -(self.config.max_len - 1) :] + 1
        mask = torch.full((len(hist), 1), self.model.mask_id, dtype=hist.dtype, device=hist.device)
        return torch.cat([hist, mask], 1)

    def score(self, batch: EvalBatch) -> torch.Tensor:
        seq = self.test_input(batch)
        width = int(batch.lengths.max().clamp(max=self.config.max_len - 1)) + 1
        return self.model.item_logits(self.model(seq[:, -width:])[:, -1])
