"""Throughput of the constrained beam search at Beauty's size (test users per second).

Beauty-sized inputs: 22,363 users, 12,101 items, IDs of 3 x 256 codes plus a count level
(TIGER's collision token), histories of 20 items.  The model has TIGER's size
(4+4 layers, d_model 128, 6 x 64 heads, d_ff 1024) with RANDOM weights and random codes:
this measures speed only (a trained model's scores change which beams survive, not the
work done per step).  The code path is the one GenerativeMethod.recommend runs
(encoder once per batch, one decoder call per level for all beams, trie masks, top-k).

    python scripts/bench_beam.py --device cuda
    python scripts/bench_beam.py --device cpu --users 300 --batch 100 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from methods.semid.beam import PrefixTrie, beam_search
from methods.semid.generative import EOS, N_SPECIAL, PAD, seq2seq_step
from bench.semantic_ids import SemanticIDs
from methods.semid.seq2seq import Seq2Seq, Seq2SeqConfig

USERS, ITEMS, HISTORY = 22_363, 12_101, 20


def beauty_sized_ids(seed: int = 0) -> SemanticIDs:
    rng = np.random.default_rng(seed)
    codes = rng.integers(256, size=(ITEMS, 3))
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    rank = np.empty(ITEMS, dtype=np.int64)
    rank[order] = np.arange(ITEMS) - np.repeat(np.cumsum(counts) - counts, counts)  # index within the collision group
    return SemanticIDs(np.column_stack([codes, rank]), (256, 256, 256, int(counts.max())), "random (benchmark)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--users", type=int, default=USERS, help="test users to decode (default: all of Beauty's)")
    ap.add_argument("--batch", type=int, default=1024, help="users per beam-search batch (the harness's eval batch size)")
    ap.add_argument("--beams", default="20,100")
    ap.add_argument("--no-cache", action="store_true", help="re-read the whole decoder prefix each step instead of caching keys/values")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    ap.add_argument("--bf16", action="store_true", help="decode under bf16 autocast (as the harness does on CUDA at bf16 precision)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ids = beauty_sized_ids()
    trie = PrefixTrie.build(ids, device)
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(), N_SPECIAL + ids.vocab_size, PAD).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    offsets = torch.from_numpy(ids.offsets + N_SPECIAL).to(device)
    item_tokens = torch.from_numpy(ids.tokens() + N_SPECIAL).to(device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    history = torch.randint(ITEMS, (args.users, HISTORY), generator=gen).to(device)
    lengths = torch.randint(1, HISTORY + 1, (args.users,), generator=gen).to(device)
    history = torch.where(torch.arange(HISTORY, device=device) >= HISTORY - lengths[:, None], history, -1)  # right-aligned
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"model params {n_params:,} (random weights), vocab {model.vocab_size}, ID sizes {ids.sizes}, "
          f"prefixes per depth {trie.prefixes_per_depth()}, users {args.users}, batch {args.batch}, "
          f"decoder {'recomputes the prefix' if args.no_cache else 'key/value cache'}")

    def src_of(h: torch.Tensor) -> torch.Tensor:
        tok = torch.where((h >= 0).unsqueeze(-1), item_tokens[h.clamp_min(0)], PAD).reshape(len(h), -1)
        return torch.cat([tok, torch.full((len(h), 1), EOS, device=device, dtype=torch.long)], 1)

    for beam in [int(b) for b in args.beams.split(",")]:
        with torch.no_grad():  # warm-up (kernels, allocator)
            beam_search(seq2seq_step(model, src_of(history[:8]), offsets, ids.sizes, not args.no_cache, args.bf16), trie, len(history[:8]), beam, 100, device)
        step_seconds = np.zeros(ids.levels)
        enc_seconds = 0.0
        sync(device)
        t0 = time.perf_counter()
        for start in range(0, args.users, args.batch):
            h = history[start : start + args.batch]
            sync(device)
            te = time.perf_counter()
            step = seq2seq_step(model, src_of(h), offsets, ids.sizes, not args.no_cache, args.bf16)
            sync(device)
            enc_seconds += time.perf_counter() - te

            def timed(depth: int, codes: torch.Tensor, parent: torch.Tensor, step=step) -> torch.Tensor:
                sync(device)
                ts = time.perf_counter()
                out = step(depth, codes, parent)
                sync(device)
                step_seconds[depth] += time.perf_counter() - ts
                return out

            with torch.no_grad():
                res = beam_search(timed, trie, len(h), beam, 100, device)
        sync(device)
        total = time.perf_counter() - t0
        rest = total - enc_seconds - step_seconds.sum()
        print(f"beam {beam:3d}: {args.users / total:9.1f} users/s  ({1000 * total / args.users:.3f} ms/user, {total:.2f} s); "
              f"encoder {enc_seconds:.2f} s, decoder steps {', '.join(f'{s:.2f}' for s in step_seconds)} s, "
              f"masking/top-k/items {rest:.2f} s; last batch: {res.generated} IDs, {res.invalid} invalid, {res.duplicates} duplicates")
        if device.type == "cuda":
            print(f"          peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
