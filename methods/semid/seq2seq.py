"""A T5-style encoder-decoder over semantic-ID tokens, sized as TIGER by default.

Architecture (T5 v1.0, as the T5 config that LETTER released for its TIGER runs:
``num_layers 4, d_model 128, num_heads 6, d_kv 64, d_ff 1024, dropout_rate 0.1,
relative_attention_num_buckets 32``, ReLU feed-forward, tied word embeddings):

* one token embedding shared by encoder and decoder, no absolute positions;
* pre-norm blocks with RMSNorm (no bias, no mean subtraction) and residual dropout;
* T5 relative position bias: bucketed relative distances (exact below half the buckets,
  logarithmic up to ``rel_max_distance``), bidirectional in the encoder, causal in the
  decoder, one bias table per stack computed once and shared by all its layers; the
  cross-attention has none;
* attention logits are not scaled by 1/sqrt(d_kv) (T5 folds that into the initialization
  of the query projection); attention runs through ``scaled_dot_product_attention``;
* output projection tied to the token embedding with T5's d_model**-0.5 rescaling
  (``tie_output = False`` gives a separate projection).

The decoder accepts ``(B, K, T)`` token prefixes for K beams per encoded row: the
self-attention runs per beam, the cross-attention folds the K beams into the query axis
so the encoder memory (and its projected keys and values, see :meth:`Seq2Seq.cross_kv`)
is computed once per row, never copied K times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Seq2SeqConfig:
    d_model: int = 128
    layers: int = 4  # encoder layers = decoder layers
    heads: int = 6
    d_kv: int = 64  # per head; inner attention width = heads * d_kv
    d_ff: int = 1024
    dropout: float = 0.1
    rel_buckets: int = 32
    rel_max_distance: int = 128
    tie_output: bool = True


def relative_position_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucketing of ``relative = key_position - query_position``.

    Bidirectional: half the buckets for keys after the query, half for keys before (and
    at) it.  Causal: only keys at or before the query get distinct buckets.  Within each
    half, distances below ``n/2`` have their own bucket and larger ones share buckets on a
    log scale up to ``max_distance`` (beyond it, the last bucket).
    """
    bucket = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp_min(0)
    exact = num_buckets // 2
    log_ratio = torch.log(distance.float().clamp_min(1) / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (num_buckets - exact)).long()).clamp_max(num_buckets - 1)
    return bucket + torch.where(distance < exact, distance, far)


class RelativeBias(nn.Module):
    """(1, heads, Lq, Lk) additive attention bias from bucketed relative positions."""

    def __init__(self, cfg: Seq2SeqConfig, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.buckets, self.max_distance = cfg.rel_buckets, cfg.rel_max_distance
        self.table = nn.Embedding(cfg.rel_buckets, cfg.heads)

    def forward(self, lq: int, lk: int, device: torch.device) -> torch.Tensor:
        q = torch.arange(lq, device=device)[:, None]
        k = torch.arange(lk, device=device)[None, :]
        buckets = relative_position_bucket(k - q, self.bidirectional, self.buckets, self.max_distance)
        return self.table(buckets).permute(2, 0, 1).unsqueeze(0)


class Attention(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        inner = cfg.heads * cfg.d_kv
        self.heads, self.d_kv, self.dropout = cfg.heads, cfg.d_kv, cfg.dropout
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, inner) -> (B, H, L, d_kv)
        return x.unflatten(-1, (self.heads, self.d_kv)).transpose(1, 2)

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k(memory)), self.split(self.v(memory))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, Lq, d); ``kv`` precomputed keys/values (B, H, Lk, d_kv) or None for
        self-attention; ``mask`` additive float or boolean (True = may attend), broadcastable
        to (B, H, Lq, Lk)."""
        q = self.split(self.q(x))
        k, v = self.project_kv(x) if kv is None else kv
        if mask is not None and mask.is_floating_point():
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, scale=1.0)
        return self.o(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.drop(F.relu(self.wi(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.attn_norm, self.attn = nn.RMSNorm(cfg.d_model, eps=1e-6), Attention(cfg)
        self.ff_norm, self.ff = nn.RMSNorm(cfg.d_model, eps=1e-6), FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), mask=mask))
        return x + self.drop(self.ff(self.ff_norm(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.self_norm, self.self_attn = nn.RMSNorm(cfg.d_model, eps=1e-6), Attention(cfg)
        self.cross_norm, self.cross_attn = nn.RMSNorm(cfg.d_model, eps=1e-6), Attention(cfg)
        self.ff_norm, self.ff = nn.RMSNorm(cfg.d_model, eps=1e-6), FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, self_bias: torch.Tensor, cross_kv, cross_mask: torch.Tensor, past=None):
        """``x`` (B, K, T, d): K beams of T tokens per encoded row.  With ``past`` (keys and
        values of the earlier positions, (B * K, H, t, d_kv) each) ``x`` holds only the new
        positions; returns the output and the keys/values of all positions."""
        B, K, T, d = x.shape
        h = x.reshape(B * K, T, d)
        n = self.self_norm(h)
        k, v = self.self_attn.project_kv(n)
        if past is not None and past[0].shape[2]:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        h = h + self.drop(self.self_attn(n, kv=(k, v), mask=self_bias))
        h = h.reshape(B, K * T, d)  # every beam's queries read the same encoder memory
        h = h + self.drop(self.cross_attn(self.cross_norm(h), kv=cross_kv, mask=cross_mask))
        h = h + self.drop(self.ff(self.ff_norm(h)))
        return h.reshape(B, K, T, d), (k, v)


class Seq2Seq(nn.Module):
    """Token ids in, next-token logits out; ``pad_id`` marks encoder padding."""

    def __init__(self, cfg: Seq2SeqConfig, vocab_size: int, pad_id: int = 0):
        super().__init__()
        self.cfg, self.vocab_size, self.pad_id = cfg, vocab_size, pad_id
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.enc_bias = RelativeBias(cfg, bidirectional=True)
        self.dec_bias = RelativeBias(cfg, bidirectional=False)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.enc_norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.dec_norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = None if cfg.tie_output else nn.Linear(cfg.d_model, vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """T5's initialization (initializer_factor 1)."""
        cfg = self.cfg
        d, inner = cfg.d_model, cfg.heads * cfg.d_kv
        nn.init.normal_(self.embed.weight, std=1.0)
        for m in self.modules():
            if isinstance(m, Attention):
                nn.init.normal_(m.q.weight, std=(d * cfg.d_kv) ** -0.5)
                nn.init.normal_(m.k.weight, std=d**-0.5)
                nn.init.normal_(m.v.weight, std=d**-0.5)
                nn.init.normal_(m.o.weight, std=inner**-0.5)
            elif isinstance(m, FeedForward):
                nn.init.normal_(m.wi.weight, std=d**-0.5)
                nn.init.normal_(m.wo.weight, std=cfg.d_ff**-0.5)
            elif isinstance(m, RelativeBias):
                nn.init.normal_(m.table.weight, std=d**-0.5)
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=d**-0.5)

    def encode(self, src: torch.Tensor, embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``src`` (B, S) token ids (``pad_id`` = nothing; each row needs one real token).
        Returns the memory (B, S, d) and the key mask (B, 1, 1, S), True = real token.
        ``embeds`` (B, S, d): input embeddings to read instead of looking ``src`` up (``src``
        still gives the padding mask), e.g. embeddings that carry a tokenizer's gradient."""
        keep = (src != self.pad_id)[:, None, None, :]
        S = src.shape[1]
        mask = self.enc_bias(S, S, src.device) + torch.zeros(keep.shape, device=src.device).masked_fill(~keep, -torch.inf)
        x = self.drop(self.embed(src) if embeds is None else embeds)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.drop(self.enc_norm(x)), keep

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values, computed once per batch."""
        return [layer.cross_attn.project_kv(memory) for layer in self.decoder]

    def decode(self, tgt: torch.Tensor, memory_keep: torch.Tensor, cross_kv: list, past: list | None = None,
               embeds: torch.Tensor | None = None):  # fmt: skip
        """``tgt`` (B, T) or (B, K, T) decoder input ids -> hidden states of the same shape + (d,).

        With ``past`` (the list this method returned as its second value for the earlier
        positions, rows ordered as ``tgt``'s B * K beams) only the new positions are fed and
        the pair ``(hidden, past)`` is returned (the incremental decoding of beam search).
        ``embeds`` (``tgt``'s shape + (d,)): input embeddings read instead of looking ``tgt`` up."""
        incremental = past is not None
        squeeze = tgt.dim() == 2
        if squeeze:
            tgt = tgt.unsqueeze(1)
        T = tgt.shape[-1]
        start = past[0][0].shape[2] if incremental else 0
        total = start + T
        causal = torch.ones(total, total, dtype=torch.bool, device=tgt.device).tril()
        self_bias = self.dec_bias(total, total, tgt.device).masked_fill(~causal, -torch.inf)[:, :, start:]
        if embeds is not None and squeeze:
            embeds = embeds.unsqueeze(1)
        x = self.drop(self.embed(tgt) if embeds is None else embeds)
        new_past = []
        for i, (layer, kv) in enumerate(zip(self.decoder, cross_kv)):
            x, kv_self = layer(x, self_bias, kv, memory_keep, past[i] if incremental else None)
            new_past.append(kv_self)
        x = self.drop(self.dec_norm(x))
        x = x.squeeze(1) if squeeze else x
        return (x, new_past) if incremental else x

    def empty_past(self, rows: int, device: torch.device, dtype: torch.dtype = torch.float32) -> list:
        """Keys/values of no positions, for the first incremental :meth:`decode` call."""
        shape = (rows, self.cfg.heads, 0, self.cfg.d_kv)
        return [(torch.zeros(shape, device=device, dtype=dtype),) * 2 for _ in self.decoder]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits, computed in float32 even under autocast (bf16 logits tie often),
        or in float64 for a float64 model."""
        with torch.autocast(h.device.type, enabled=False):
            dtype = torch.promote_types(h.dtype, torch.float32)
            h = h.to(dtype)
            if self.head is None:
                return (h * self.cfg.d_model**-0.5) @ self.embed.weight.to(dtype).T
            return h @ self.head.weight.to(dtype).T

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, src_embeds: torch.Tensor | None = None,
                tgt_embeds: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Teacher forcing: (B, S) source, (B, T) decoder input -> (B, T, vocab) logits; the
        optional ``*_embeds`` replace the looked-up input embeddings (see :meth:`encode`)."""
        memory, keep = self.encode(src, src_embeds)
        return self.logits(self.decode(tgt_in, keep, self.cross_kv(memory), embeds=tgt_embeds))
