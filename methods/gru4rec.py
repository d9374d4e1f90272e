"""GRU4Rec (Hidasi et al., 2016), in the form RecBole implements it.

Item embeddings (dropout on them), a GRU over the history, a linear map from the GRU
state to the embedding size, and a dot product with the (shared) item embeddings scores
every item.  ``gru4rec``: full softmax cross-entropy on the next item (RecBole's default).
``gru4rec-top1``: the paper's TOP1 ranking loss against in-batch negatives (the other
targets of the mini-batch, as the paper's session-parallel mini-batches use them); ``loss =
"bpr"`` gives the paper's other loss.
Training reads the same right-aligned windows as SASRec (``sequence_windows``) and takes
the loss at every position: the GRU is causal, so position t sees exactly the prefix that
RecBole would feed as a separate example.  Sequences are left-aligned before the GRU so
that its state never runs over padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.batching import EpochBatches, left_align, sequence_windows
from bench.errors import UserError
from bench.losses import sampled_loss, softmax_cross_entropy
from bench.method import EvalBatch, Method
from bench.training import adam, train


@dataclass
class GRU4RecConfig:
    dim: int = 64  # RecBole embedding_size
    hidden: int = 128  # RecBole hidden_size
    layers: int = 1  # RecBole num_layers
    dropout: float = 0.3  # RecBole dropout_prob (on the item embeddings)
    max_len: int = 50  # RecBole MAX_ITEM_LIST_LENGTH
    lr: float = 1e-3  # RecBole
    weight_decay: float = 0.0
    batch_size: int = 128  # windows of up to max_len targets each (RecBole: 2048 single-target prefixes)
    epochs: int = 100
    patience: int = 10  # RecBole stopping_step
    eval_every: int = 1
    loss: str = "ce"  # "ce" (RecBole), or the paper's in-batch ranking losses "top1" / "bpr"
    # where shuffled batches would be mostly padding (short histories), batches of similar length holding about
    # batch_size windows' worth of targets each (bench.batching.EpochBatches); False = always shuffled batches of
    # batch_size windows. Records made before this option used shuffled batches.
    group_by_length: bool = field(default=True, metadata={"before": False})

    def __post_init__(self):
        if self.loss not in ("ce", "top1", "bpr"):
            raise UserError(f"option gru4rec.loss: expected 'ce', 'top1' or 'bpr', got {self.loss!r}")


class GRU4RecModel(torch.nn.Module):
    def __init__(self, n_items: int, cfg: GRU4RecConfig):
        super().__init__()
        self.item = torch.nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)  # 0 = padding, item i -> i + 1
        self.drop = torch.nn.Dropout(cfg.dropout)
        self.gru = torch.nn.GRU(cfg.dim, cfg.hidden, cfg.layers, bias=False, batch_first=True)
        self.dense = torch.nn.Linear(cfg.hidden, cfg.dim)
        torch.nn.init.xavier_normal_(self.item.weight)
        for name, p in self.gru.named_parameters():
            torch.nn.init.xavier_uniform_(p)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq``: (B, L) shifted ids, LEFT-aligned (0 = padding after the items). Returns (B, L, dim)."""
        out, _ = self.gru(self.drop(self.item(seq)))
        return self.dense(out)

    def output(self) -> tuple[torch.Tensor, None]:
        """The catalog's output weights (n_items, dim) and bias: the shared item embeddings."""
        return self.item.weight[1:], None

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.output()[0].T


class GRU4Rec(Method):
    name = "gru4rec"
    description = "GRU4Rec (RecBole variant): GRU over the history, full softmax cross-entropy"
    Config = GRU4RecConfig
    presets = {"cpu": {}}  # the defaults fit: one Scientific seed trains to early stopping on one core (docs/protocol.md §5)
    output = "scores"

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.model = GRU4RecModel(data.n_items, config).to(self.device)

    def fit(self) -> None:
        cfg, dev = self.config, self.device
        inputs, targets, _ = sequence_windows(self.data.train, cfg.max_len)
        inputs, targets = torch.from_numpy(inputs).to(dev), torch.from_numpy(targets).to(dev)
        lengths = (targets >= 0).sum(1)
        inputs = left_align(inputs, lengths) + 1  # -1 padding -> 0
        targets = left_align(targets, lengths)
        gen = self.ctx.torch_generator(self.name, "train")
        opt = adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            width = int(lengths[idx].max())  # drop columns that are padding in every row
            seq, tgt = inputs[idx, :width], targets[idx, :width]
            mask = tgt >= 0
            h, tgt = self.model(seq)[mask], tgt[mask]
            if cfg.loss == "ce":
                return softmax_cross_entropy(h, tgt, *self.model.output())
            # in-batch negatives: every other distinct target of this mini-batch
            others, own = torch.unique(tgt, return_inverse=True)
            scores = h @ self.model.item.weight[others + 1].T  # (N, distinct targets)
            pos = scores.gather(1, own.unsqueeze(1)).squeeze(1)
            not_own = torch.arange(len(others), device=dev).unsqueeze(0) != own.unsqueeze(1)
            return sampled_loss(cfg.loss, pos, scores, not_own)

        batches = EpochBatches(lengths, cfg.batch_size, gen, cfg.group_by_length)
        self.ctx.info["batching"] = batches.describe
        train(self.ctx, self.model, opt, loss, batches,
              cfg.epochs, cfg.patience, cfg.eval_every)  # fmt: skip

    def score(self, batch: EvalBatch) -> torch.Tensor:
        lengths = batch.lengths.clamp_min(1)  # an empty history reads one padding step
        seq = left_align(batch.history, lengths) + 1
        width = int(lengths.max())
        h = self.model(seq[:, :width])
        last = h[torch.arange(len(h), device=h.device), lengths - 1]
        return self.model.item_logits(last)


@dataclass
class GRU4RecTOP1Config(GRU4RecConfig):
    loss: str = "top1"


class GRU4RecTOP1(GRU4Rec):
    name = "gru4rec-top1"
    description = "GRU4Rec with the paper's TOP1 loss against in-batch negatives"
    Config = GRU4RecTOP1Config
