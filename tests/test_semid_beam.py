"""The prefix trie and the constrained beam search: only valid IDs, exact against brute
force when the beam covers everything, collision groups, de-duplication, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from methods.semid.beam import PrefixTrie, _best, _first_occurrences, _leaves_to_items, beam_search
from methods.semid.generative import BOS, N_SPECIAL, seq2seq_step
from bench.semantic_ids import SemanticIDs
from methods.semid.seq2seq import Seq2Seq, Seq2SeqConfig, relative_position_bucket

pytestmark = pytest.mark.usefixtures("single_thread")

SIZES = (3, 4, 2)


def random_ids(n_items: int = 16, sizes=SIZES, seed: int = 0) -> SemanticIDs:
    rng = np.random.default_rng(seed)
    return SemanticIDs(np.stack([rng.integers(s, size=n_items) for s in sizes], 1), sizes, "test")


def tiny_model(vocab: int, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(d_model=16, layers=2, heads=2, d_kv=8, d_ff=32, dropout=0.1)
    return Seq2Seq(cfg, vocab).eval()


def setup(ids: SemanticIDs, B: int = 3, seed: int = 0):
    model = tiny_model(N_SPECIAL + ids.vocab_size, seed)
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(N_SPECIAL, N_SPECIAL + ids.vocab_size, (B, 7), generator=gen)
    src[0, :3] = 0  # left padding in one row
    offsets = torch.from_numpy(ids.offsets + N_SPECIAL)
    return model, src, offsets


def brute_force(model: Seq2Seq, src: torch.Tensor, ids: SemanticIDs) -> tuple[np.ndarray, torch.Tensor]:
    """Every distinct valid ID scored by teacher forcing: sum of log-softmax over the vocabulary."""
    uniq = np.unique(ids.codes, axis=0)
    tokens = torch.from_numpy(uniq + ids.offsets + N_SPECIAL)  # (U, levels)
    B, U = len(src), len(uniq)
    tgt_in = torch.cat([torch.full((U, 1), BOS), tokens[:, :-1]], 1)
    scores = torch.empty(B, U)
    with torch.no_grad():
        for b in range(B):
            logp = torch.log_softmax(model(src[b : b + 1].expand(U, -1), tgt_in), -1)
            scores[b] = logp.gather(2, tokens.unsqueeze(-1)).squeeze(-1).sum(1)
    return uniq, scores


# ---- the trie -----------------------------------------------------------------------------
def test_trie_accepts_exactly_the_id_set() -> None:
    ids = random_ids(20)
    trie = PrefixTrie.build(ids)
    every = torch.tensor(list(itertools.product(*[range(s) for s in SIZES])))
    leaf = trie.leaf_of(every)
    valid = {tuple(c) for c in ids.codes.tolist()}
    assert {tuple(c) for c, l in zip(every.tolist(), leaf.tolist()) if l >= 0} == valid
    assert sorted(set(leaf[leaf >= 0].tolist())) == list(range(trie.n_leaves)) and trie.n_leaves == len(valid)
    # every item is in the group of its own ID, once
    item_leaf = trie.leaf_of(torch.from_numpy(ids.codes))
    for item, l in enumerate(item_leaf.tolist()):
        group = trie.leaf_items[trie.leaf_ptr[l] : trie.leaf_ptr[l + 1]].tolist()
        assert item in group and group == sorted(group)
    assert sorted(trie.leaf_items.tolist()) == list(range(ids.n_items))
    # prefixes per depth: distinct prefixes of each length
    assert trie.prefixes_per_depth() == [1] + [len(np.unique(ids.codes[:, : d + 1], axis=0)) for d in range(3)]


def test_relative_buckets_match_t5_rules() -> None:
    rel = torch.arange(-200, 201)
    bi = relative_position_bucket(rel, True, 32, 128)
    assert bi[200].item() == 0 and bi[201].item() == 17 and bi[199].item() == 1  # 0, +1 (upper half), -1
    assert bi.max().item() == 31 and bi[rel > 0].min().item() == 17 and bi[rel <= 0].max().item() == 15
    causal = relative_position_bucket(rel, False, 32, 128)
    assert (causal[rel >= 0] == 0).all() and causal[200 - 15].item() == 15 and causal[0].item() == 31
    assert (causal[:-1] >= causal[1:]).all()  # monotone in the distance


# ---- beam search --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_exhaustive_beam_equals_brute_force(seed: int) -> None:
    ids = random_ids(16, seed=seed)
    trie = PrefixTrie.build(ids)
    model, src, offsets = setup(ids, seed=seed)
    uniq, scores = brute_force(model, src, ids)
    beam = max(trie.prefixes_per_depth()) * max(SIZES)  # keeps every candidate at every depth
    res = beam_search(seq2seq_step(model, src, offsets, SIZES), trie, len(src), beam, 100, "cpu")
    U = len(uniq)
    assert res.generated == len(src) * U and res.invalid == 0 and res.duplicates == 0
    for b in range(len(src)):
        order = torch.argsort(scores[b], descending=True)
        torch.testing.assert_close(res.scores[b, :U], scores[b, order], atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(res.codes[b, :U].numpy(), uniq[order.numpy()])
        assert (res.leaves[b, U:] == -1).all()


def test_small_beam_generates_only_valid_ids_and_matches_top_of_brute_force() -> None:
    ids = random_ids(16, seed=3)
    trie = PrefixTrie.build(ids)
    model, src, offsets = setup(ids, B=4, seed=3)
    _, scores = brute_force(model, src, ids)
    res = beam_search(seq2seq_step(model, src, offsets, SIZES), trie, len(src), 4, 100, "cpu")
    assert res.leaves.shape == (4, 4) and (res.leaves >= 0).all()
    valid = {tuple(c) for c in ids.codes.tolist()}
    assert all(tuple(c) in valid for c in res.codes.reshape(-1, 3).tolist())
    assert torch.equal(trie.leaf_of(res.codes), res.leaves)
    # a beam's score is the exact score of its ID, and scores come best first
    for b in range(4):
        assert (res.scores[b, :-1] >= res.scores[b, 1:]).all()
        assert res.scores[b, 0] <= scores[b].max() + 1e-5


def test_beam_larger_than_the_id_set_drops_empty_slots() -> None:
    ids = random_ids(20)
    trie = PrefixTrie.build(ids)
    model, src, offsets = setup(ids)
    res = beam_search(seq2seq_step(model, src, offsets, SIZES), trie, len(src), 500, 100, "cpu")
    assert res.leaves.shape[1] == trie.n_leaves  # slots that are -inf in every row are dropped
    assert torch.isfinite(res.scores).all() and res.generated == len(src) * trie.n_leaves
    assert res.items.shape == (len(src), 100)
    for row in res.items.tolist():
        real = [i for i in row if i >= 0]
        assert sorted(real) == list(range(ids.n_items)) and row[len(real) :] == [-1] * (100 - len(real))


def test_collision_groups_give_each_item_once_in_beam_order() -> None:
    codes = np.array([[0, 0], [1, 1], [0, 0], [1, 0], [0, 0], [1, 1]])  # items 0, 2, 4 share an ID; 1 and 5 too
    ids = SemanticIDs(codes, (2, 2), "test")
    trie = PrefixTrie.build(ids)
    leaf = trie.leaf_of(torch.tensor([[1, 1], [0, 0], [1, 0]]))
    items, dup = _leaves_to_items(leaf.unsqueeze(0), trie, 8)
    assert items.tolist() == [[1, 5, 0, 2, 4, 3, -1, -1]] and dup == 0
    items, _ = _leaves_to_items(leaf.unsqueeze(0), trie, 3)
    assert items.tolist() == [[1, 5, 0]]  # cut at k
    # the same leaf twice (impossible in a trie search, checked anyway): counted and removed
    items, dup = _leaves_to_items(torch.tensor([[leaf[0], leaf[0], -1, leaf[2]]]), trie, 6)
    assert items.tolist() == [[1, 5, 3, -1, -1, -1]] and dup == 2


def test_first_occurrences() -> None:
    lists = torch.tensor([[3, 1, 3, -1, 2, 1], [0, 0, 0, 0, 0, 0]])
    assert _first_occurrences(lists).tolist() == [[3, 1, 2, -1, -1, -1], [0, -1, -1, -1, -1, -1]]


def test_beam_search_is_deterministic_and_batch_independent() -> None:
    ids = random_ids(16, seed=5)
    trie = PrefixTrie.build(ids)
    model, src, offsets = setup(ids, B=4, seed=5)
    a = beam_search(seq2seq_step(model, src, offsets, SIZES), trie, 4, 5, 10, "cpu")
    b = beam_search(seq2seq_step(model, src, offsets, SIZES), trie, 4, 5, 10, "cpu")
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)
    one = beam_search(seq2seq_step(model, src[2:3], offsets, SIZES), trie, 1, 5, 10, "cpu")
    assert torch.equal(one.items[0], a.items[2])
    torch.testing.assert_close(one.scores[0], a.scores[2])


@pytest.mark.parametrize("beam", [3, 40])
def test_cached_decoding_equals_recomputing_the_prefix(beam: int) -> None:
    ids = random_ids(20, seed=7)
    trie = PrefixTrie.build(ids)
    model, src, offsets = setup(ids, B=3, seed=7)
    cached = beam_search(seq2seq_step(model, src, offsets, SIZES, cache=True), trie, 3, beam, 30, "cpu")
    full = beam_search(seq2seq_step(model, src, offsets, SIZES, cache=False), trie, 3, beam, 30, "cpu")
    assert torch.equal(cached.codes, full.codes) and torch.equal(cached.items, full.items)
    torch.testing.assert_close(cached.scores, full.scores, atol=1e-5, rtol=1e-5)


def test_ties_keep_the_lower_index() -> None:
    ids = SemanticIDs(np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 1]]), (3, 2), "test")
    trie = PrefixTrie.build(ids)

    def flat(depth: int, codes: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:  # every code equally likely
        return torch.zeros(codes.shape[0], codes.shape[1], ids.sizes[depth])

    res = beam_search(flat, trie, 2, 3, 5, "cpu")
    assert res.codes[0].tolist() == [[0, 0], [0, 1], [1, 0]] and torch.equal(res.items[0], res.items[1])
    assert res.items[0].tolist() == [0, 1, 2, -1, -1]


@pytest.mark.parametrize("width", [1, 7, 39, 40])
def test_best_is_the_head_of_a_stable_descending_sort(width: int) -> None:
    """The top-k selection keeps what a stable descending sort keeps, ties at the cut included."""
    gen = torch.Generator().manual_seed(width)
    cand = torch.randint(0, 6, (60, 40), generator=gen).float()  # many ties, across the cut too
    cand[torch.rand(60, 40, generator=gen) < 0.5] = -torch.inf
    cand[:10] = torch.randn(10, 40, generator=gen)  # rows without ties
    cand[10:12] = -torch.inf  # rows with nothing valid
    top, idx = _best(cand, width)
    srt = torch.sort(cand, dim=1, descending=True, stable=True)
    assert torch.equal(top, srt.values[:, :width])
    finite = torch.isfinite(top)  # the order of -inf slots does not matter: the search drops them
    assert torch.equal(idx[finite], srt.indices[:, :width][finite])
    assert torch.equal(cand.gather(1, idx), top)


def test_left_padding_does_not_change_the_encoding() -> None:
    model = tiny_model(20)
    src = torch.tensor([[5, 6, 7, 2]])
    padded = torch.tensor([[0, 0, 5, 6, 7, 2]])
    tgt = torch.tensor([[BOS, 9, 10]])
    with torch.no_grad():
        torch.testing.assert_close(model(src, tgt), model(padded, tgt))


@pytest.mark.slow
def test_seq2seq_equals_hugging_face_t5_with_the_same_weights() -> None:
    """Our T5 and transformers' T5ForConditionalGeneration (relu, tied embeddings, relative
    bias in the first layer of each stack) give the same logits for the same weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    model = tiny_model(30)
    hf = T5ForConditionalGeneration(T5Config(
        vocab_size=30, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, relative_attention_num_buckets=32,
        relative_attention_max_distance=128, dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True,
        pad_token_id=0, decoder_start_token_id=BOS, eos_token_id=2,
    )).eval()  # fmt: skip
    sd = {"shared.weight": model.embed.weight, "encoder.final_layer_norm.weight": model.enc_norm.weight,
          "decoder.final_layer_norm.weight": model.dec_norm.weight}  # fmt: skip
    for stack, layers, bias in (("encoder", model.encoder, model.enc_bias), ("decoder", model.decoder, model.dec_bias)):
        sd[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = bias.table.weight
        for i, layer in enumerate(layers):
            if stack == "encoder":
                parts = [("SelfAttention", layer.attn, layer.attn_norm)]
            else:
                parts = [("SelfAttention", layer.self_attn, layer.self_norm), ("EncDecAttention", layer.cross_attn, layer.cross_norm)]
            for j, (name, attn, norm) in enumerate(parts):
                for w in "qkvo":
                    sd[f"{stack}.block.{i}.layer.{j}.{name}.{w}.weight"] = getattr(attn, w).weight
                sd[f"{stack}.block.{i}.layer.{j}.layer_norm.weight"] = norm.weight
            j = len(parts)
            sd[f"{stack}.block.{i}.layer.{j}.DenseReluDense.wi.weight"] = layer.ff.wi.weight
            sd[f"{stack}.block.{i}.layer.{j}.DenseReluDense.wo.weight"] = layer.ff.wo.weight
            sd[f"{stack}.block.{i}.layer.{j}.layer_norm.weight"] = layer.ff_norm.weight
    missing, unexpected = hf.load_state_dict({k: v.detach() for k, v in sd.items()}, strict=False)
    assert not unexpected and set(missing) <= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    src = torch.tensor([[0, 0, 5, 6, 7, 2], [4, 8, 9, 10, 11, 2]])
    tgt = torch.tensor([[BOS, 9, 10], [BOS, 3, 4]])
    with torch.no_grad():
        ours = model(src, tgt)
        theirs = hf(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_item_mask_restricts_each_row_and_keeps_order() -> None:
    ids = random_ids(16)  # random codes: some leaves hold several items
    trie = PrefixTrie.build(ids)
    model, src, offsets = setup(ids)
    B = len(src)
    full = beam_search(seq2seq_step(model, src, offsets, ids.sizes), trie, B, 200, 16, "cpu")
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(B, ids.n_items, generator=gen) < 0.5
    got = beam_search(seq2seq_step(model, src, offsets, ids.sizes), trie, B, 200, 16, "cpu", item_mask=mask)
    for b in range(B):
        want = [i for i in full.items[b].tolist() if i >= 0 and mask[b, i]]
        assert [i for i in got.items[b].tolist() if i >= 0] == want
    # all allowed: identical to no mask
    same = beam_search(seq2seq_step(model, src, offsets, ids.sizes), trie, B, 5, 16, "cpu", item_mask=torch.ones(B, ids.n_items, dtype=torch.bool))
    ref = beam_search(seq2seq_step(model, src, offsets, ids.sizes), trie, B, 5, 16, "cpu")
    assert torch.equal(same.items, ref.items)
    # a small beam never spends a slot on a prefix without allowed items
    small = beam_search(seq2seq_step(model, src, offsets, ids.sizes), trie, B, 3, 16, "cpu", item_mask=mask)
    assert all(mask[b, i] for b in range(B) for i in small.items[b].tolist() if i >= 0)
    assert (small.items[:, 0] >= 0).all()
