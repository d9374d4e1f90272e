"""Semantic-ID building blocks shared by every generative method (TIGER, LETTER, P5-CID,
LC-Rec, BLOGER, UniVA), each written once in its own module:

* ``text``     -- item text template and sentence embeddings, cached per (dataset, encoder, template);
* ``rqvae``    -- the RQ-VAE tokenizer (k-means init, collision handling, external indices);
* ``cid``      -- P5-CID's collaborative indexing (hierarchical spectral clustering of co-occurrence);
* ``regularize`` -- LETTER's tokenizer regularizers (collaborative contrastive alignment,
  codeword diversity over equal-size constrained k-means clusters), an ``extra_loss`` of the RQ-VAE;
* ``seq2seq``  -- the T5-style encoder-decoder recommender;
* ``beam``     -- the prefix trie as tensors and the batched constrained beam search;
* ``generative`` -- :class:`GenerativeMethod`, the shared training/decoding loop (a subclass
  supplies only ``build_ids``).

The item -> code-tuple table every block speaks, :class:`bench.semantic_ids.SemanticIDs`, lives
in the harness, which measures its codebook utilization (:mod:`bench.codebook`) for every method.
"""
