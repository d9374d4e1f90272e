"""Item text template, encoders and the embedding cache."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest
import torch

from bench.errors import UserError
from bench.method import TrainData
from methods.semid import text
from methods.semid.text import TextConfig, item_embeddings, item_texts


def _data(name: str = "tiny") -> TrainData:
    item_text = {"title": ["Red  lipstick", "", "Blue nail polish"], "brand": ["Acme", "", ""], "sales_rank": ["", "", "7"]}
    return TrainData(None, 0, 3, item_text, None, name, np.array(["A", "B", "C"]))


def test_template_joins_named_non_blank_fields():
    data = _data()
    assert item_texts(data, TextConfig()) == ["Title: Red lipstick; Brand: Acme", "", "Title: Blue nail polish; Sales rank: 7"]
    assert item_texts(data, TextConfig(fields=("brand", "title"))) == ["Brand: Acme; Title: Red lipstick", "", "Title: Blue nail polish"]
    cfg = TextConfig(fields=("title",), separator=" | ", name_format="{name}={text}")
    assert item_texts(data, cfg) == ["title=Red lipstick", "", "title=Blue nail polish"]
    with pytest.raises(UserError, match="colour"):
        item_texts(data, TextConfig(fields=("colour",)))


class FakeEncoder:
    """Deterministic 4-dim vectors from a text hash; counts how often it is loaded."""

    loads = 0

    @classmethod
    def load(cls, cfg, device):
        cls.loads += 1
        return lambda texts: np.array([[zlib.crc32(f"{t}{k}".encode()) % 1000 / 1000 for k in range(4)] for t in texts], dtype=np.float32)


def test_cache_hit_does_not_load_the_encoder(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "load_encoder", FakeEncoder.load)
    FakeEncoder.loads = 0
    data, cfg = _data(), TextConfig(encoder="fake-encoder")
    emb, info = item_embeddings(data, cfg, "cpu", cache_dir=tmp_path)
    assert emb.shape == (3, 4) and emb.dtype == np.float32
    assert (info["cache_hit"], info["blank_items"], info["dim"], FakeEncoder.loads) == (False, 1, 4, 1)
    assert info["blank_per_field"] == {"title": 1, "brand": 2, "sales_rank": 2}
    assert info["template"]["separator"] == "; " and info["encoder"] == "fake-encoder"
    again, info2 = item_embeddings(data, cfg, "cpu", cache_dir=tmp_path)
    assert info2["cache_hit"] and FakeEncoder.loads == 1 and np.array_equal(emb, again)
    assert info2["cache_file"] == info["cache_file"]
    assert not list((tmp_path / "embeddings").glob(".*tmp"))  # no temporary files left behind
    # another template, encoder, dataset or text is another entry
    for changed_data, changed_cfg in [
        (data, TextConfig(encoder="fake-encoder", separator=" | ")),
        (data, TextConfig(encoder="fake-encoder-2")),
        (_data("other"), cfg),
    ]:
        _, i = item_embeddings(changed_data, changed_cfg, "cpu", cache_dir=tmp_path)
        assert not i["cache_hit"]
    assert FakeEncoder.loads == 4
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 4


@pytest.mark.slow  # importing transformers alone takes seconds
def test_hf_model_mean_pooling(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "title", ":", "red", "lipstick", "blue", "nail", "polish"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    BertModel(config).eval().save_pretrained(tmp_path)
    cfg = TextConfig(encoder=str(tmp_path), batch_size=2)
    encode = text.load_encoder(cfg, "cpu")
    texts = ["Title: red lipstick", "Title: blue nail polish", ""]
    got = encode(texts)
    tok, model = BertTokenizer.from_pretrained(tmp_path), BertModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        for t, row in zip(texts, got):  # one at a time: no padding, so the mean is over every token
            ids = tok(t, return_tensors="pt")
            assert np.allclose(row, model(**ids).last_hidden_state[0].mean(0).numpy(), atol=1e-5)


def test_bad_encoder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="encoder_kind"):
        text.load_encoder(TextConfig(encoder_kind="word2vec"), "cpu")
    with pytest.raises(UserError, match="cannot load text encoder"):
        text.load_encoder(TextConfig(encoder=str(tmp_path), encoder_kind="hf"), "cpu")


@pytest.mark.slow
def test_default_minilm_offline(tmp_path):
    start = time.perf_counter()
    emb, info = item_embeddings(_data(), TextConfig(), "cpu", cache_dir=tmp_path)
    assert emb.shape == (3, 384) and info["encoder"] == "all-MiniLM-L6-v2" and not info["cache_hit"]
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)  # MiniLM's pipeline normalizes
    assert np.abs(emb[0] - emb[2]).max() > 0.01
    assert time.perf_counter() - start < 120
