"""SASRec (Kang & McAuley, 2018): causal self-attention over the item history.

The block follows the paper: item embedding scaled by sqrt(d) plus a learned position
embedding; per layer, layer-normed queries attend causally over the sequence, residual,
layer norm, point-wise feed-forward with residual; a final layer norm.  The output at the
last position scores every item by a dot product with the (shared) item embeddings.

Two losses, two registered methods, everything else identical:

* ``sasrec``: binary cross-entropy with one sampled negative per position, as in the
  paper and in the tables of TIGER/LETTER;
* ``sasrec-ce``: softmax cross-entropy over the full catalog, which is much stronger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bench.errors import UserError
from bench.batching import EpochBatches, NegativeSampler, sequence_windows
from bench.losses import sampled_loss, softmax_cross_entropy
from bench.method import Context, EvalBatch, Method
from bench.split import Sequences
from bench.training import adam, run_epoch, train


ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU}


@dataclass
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.5  # paper: 0.5 on the sparse Amazon data, 0.2 on MovieLens
    max_len: int = 50  # paper: 50 on Amazon, 200 on MovieLens
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200
    patience: int = 5  # validations without improvement
    eval_every: int = 5
    loss: str = "bce"  # "bce" (one sampled negative per position) or "ce" (full softmax)
    # where shuffled batches would be mostly padding (short histories), batches of similar length holding about
    # batch_size windows' worth of targets each (bench.batching.EpochBatches); False = always shuffled batches of
    # batch_size windows. Records made before this option used shuffled batches.
    group_by_length: bool = field(default=True, metadata={"before": False})
    # the point-wise feed-forward: the paper's is d -> d with ReLU; RecBole's SASRec uses 256 wide with GELU.
    # None = hidden. Records made before these options ran the paper's block.
    ffn_hidden: int | None = field(default=None, metadata={"before": None})
    activation: str = field(default="relu", metadata={"before": "relu"})

    def __post_init__(self):
        if self.loss not in ("bce", "ce"):
            raise UserError(f"option loss: expected 'bce' or 'ce', got {self.loss!r}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"option activation: expected one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.ffn_hidden is not None and self.ffn_hidden < 1:
            raise UserError(f"option ffn_hidden: expected a positive width or None (= hidden), got {self.ffn_hidden!r}")


class SASRecModel(torch.nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        d, f = cfg.hidden, cfg.ffn_hidden or cfg.hidden
        self.item = torch.nn.Embedding(n_items + 1, d, padding_idx=0)  # 0 = padding, item i -> i + 1
        self.pos = torch.nn.Embedding(cfg.max_len, d)
        self.drop = torch.nn.Dropout(cfg.dropout)
        self.attn_norm = torch.nn.ModuleList(torch.nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.layers))
        self.attn = torch.nn.ModuleList(
            torch.nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True) for _ in range(cfg.layers)
        )
        self.ffn_norm = torch.nn.ModuleList(torch.nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.layers))
        self.ffn = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Linear(d, f), ACTIVATIONS[cfg.activation](), torch.nn.Dropout(cfg.dropout), torch.nn.Linear(f, d),
                torch.nn.Dropout(cfg.dropout),
            )
            for _ in range(cfg.layers)
        )
        self.last_norm = torch.nn.LayerNorm(d, eps=1e-8)
        self.scale = d**0.5
        self.heads = cfg.heads
        causal = torch.triu(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool), 1)
        self.register_buffer("causal", causal, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() > 1:
                torch.nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq``: (B, L) shifted ids (0 = padding), right-aligned, L <= max_len. Returns (B, L, d).

        Attention is causal and never reads padded keys (each position may always read
        itself), so the output does not depend on how much left padding a batch carries.
        """
        B, L = seq.shape
        keep = (seq > 0).unsqueeze(-1)
        x = self.item(seq) * self.scale + self.pos.weight[-L:].unsqueeze(0)
        x = self.drop(x) * keep
        blocked = self.causal[-L:, -L:].unsqueeze(0) | (seq == 0).unsqueeze(1)  # (B, L, L): True = may not attend
        blocked = blocked & ~torch.eye(L, dtype=torch.bool, device=seq.device)
        mask = blocked.repeat_interleave(self.heads, dim=0)
        for norm, attn, fnorm, ffn in zip(self.attn_norm, self.attn, self.ffn_norm, self.ffn):
            q = norm(x)
            a, _ = attn(q, x, x, attn_mask=mask, need_weights=False)
            x = fnorm(q + a)
            x = (x + ffn(x)) * keep
        return self.last_norm(x)

    def output(self) -> tuple[torch.Tensor, None]:
        """The catalog's output weights (n_items, d) and bias: the shared item embeddings."""
        return self.item.weight[1:], None

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.output()[0].T


def training_setup(model: SASRecModel, cfg: SASRecConfig, train: Sequences, n_items: int, gen: torch.Generator, dev: torch.device):
    """Set up training of ``model`` on the ``train`` sequences for the shared loop
    (:mod:`bench.training`): returns ``(model, optimizer, loss(idx), batches())``.  Used by
    :class:`SASRec` under validation-based selection and by other methods that need a SASRec
    trained for a fixed number of epochs (LETTER's collaborative item embeddings)."""
    inputs, targets, window_user = sequence_windows(train, cfg.max_len)
    inputs = torch.from_numpy(inputs + 1).to(dev)  # -1 padding -> 0
    targets = torch.from_numpy(targets).to(dev)
    window_user = torch.from_numpy(window_user).to(dev)
    lengths = (targets >= 0).sum(1)
    rows, items = train.user_item_pairs()
    sampler = NegativeSampler(torch.from_numpy(rows).to(dev), torch.from_numpy(items).to(dev), n_items, gen)
    opt = adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)

    def loss(idx: torch.Tensor) -> torch.Tensor:
        seq, tgt = inputs[idx], targets[idx]
        width = int(lengths[idx].max())  # drop columns that are padding in every row
        seq, tgt = seq[:, -width:], tgt[:, -width:]
        h = model(seq)
        mask = tgt >= 0
        h, pos = h[mask], tgt[mask]
        if cfg.loss == "ce":
            return softmax_cross_entropy(h, pos, *model.output())
        users = window_user[idx].unsqueeze(1).expand_as(tgt)[mask]
        neg = sampler.draw(users)
        return sampled_loss("bce", (h * model.item(pos + 1)).sum(-1), (h * model.item(neg + 1)).sum(-1, keepdim=True))

    return model, opt, loss, EpochBatches(lengths, cfg.batch_size, gen, cfg.group_by_length)


def epoch_trainer(model: SASRecModel, cfg: SASRecConfig, train: Sequences, n_items: int, gen: torch.Generator,
                  ctx: Context) -> Callable[[], float]:  # fmt: skip
    """A function that runs one epoch of the shared loop per call under ``ctx`` (a sub-training's
    context, :meth:`bench.method.Context.child`) and returns its mean loss, for a SASRec trained a
    fixed number of epochs without selection (LETTER's CF embeddings)."""
    model, opt, loss, batches = training_setup(model, cfg, train, n_items, gen, ctx.device)
    return lambda: run_epoch(ctx, model, opt, loss, batches())


class SASRec(Method):
    name = "sasrec"
    description = "SASRec, binary cross-entropy with one sampled negative (as in the papers' tables)"
    Config = SASRecConfig
    presets = {"cpu": {}}  # the defaults fit: one Scientific seed trains to early stopping on one core (docs/protocol.md §5)
    output = "scores"

    def __init__(self, config, data, ctx):
        super().__init__(config, data, ctx)
        self.model = SASRecModel(data.n_items, config).to(self.device)

    def fit(self) -> None:
        cfg = self.config
        setup = training_setup(self.model, cfg, self.data.train, self.data.n_items, self.ctx.torch_generator(self.name, "train"), self.device)
        self.ctx.info["batching"] = setup[-1].describe
        train(self.ctx, *setup, cfg.epochs, cfg.patience, cfg.eval_every)

    def score(self, batch: EvalBatch) -> torch.Tensor:
        h = self.model(batch.history + 1)[:, -1]
        return self.model.item_logits(h)


@dataclass
class SASRecCEConfig(SASRecConfig):
    loss: str = "ce"


class SASRecCE(SASRec):
    name = "sasrec-ce"
    description = "SASRec, full softmax cross-entropy over the catalog"
    Config = SASRecCEConfig
