"""What a training-state checkpoint (bench/checkpoint.py) of a generative run costs, without training.

Builds TIGER's recommender at a preset's sizes with a given vocabulary (Scientific's IDs by
default: 3 x 256 codes + a counting level of 22, 793 tokens with the special ones, as the
committed ``scientific@cpu`` tiger records have), gives AdamW one step so that its state is
full-size, and times the two things a checkpoint does: the in-memory snapshot taken at every
epoch boundary, and the atomic write (temporary file, fsync, rename) every ``--checkpoint-every``
minutes.  Prints the file's size, both times and the write's share of the default interval.

    python scripts/checkpoint_cost.py --preset cpu
    python scripts/checkpoint_cost.py --preset ''        # the paper-size defaults
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.checkpoint import Checkpointer
from bench.config import resolve_config
from bench.method import Context, TrainData
from bench.provenance import cpu_name
from bench.semantic_ids import SemanticIDs
from bench.training import Selection
from methods.tiger import TIGER


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", help="tiger's preset ('' = defaults)")
    p.add_argument("--items", type=int, default=4344, help="catalog size (Scientific: 4,344)")
    p.add_argument("--sizes", default="256,256,256,22", help="ID level sizes (Scientific's tiger IDs)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = resolve_config(TIGER, args.preset, {})
    sizes = tuple(int(s) for s in args.sizes.split(","))
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(s, size=args.items) for s in sizes], 1)
    ctx = Context(device=torch.device("cpu"), seed=0, validate=dict, label=f"[tiger@{args.preset or 'defaults'}]")
    data = TrainData(None, 0, args.items, {}, None, "scientific-shaped")
    method = TIGER(config, data, ctx)
    method.set_ids(SemanticIDs(codes, sizes, "synthetic", {}))
    method.model = method.make_model(method.user_offset + config.user_tokens)
    decay = [p for n, p in method.model.named_parameters() if p.dim() > 1 and "bias.table" not in n]
    no_decay = [p for n, p in method.model.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for param in method.model.parameters():  # one step: Adam's moments exist for every parameter
        param.grad = torch.randn_like(param)
    opt.step()
    sched.step()
    ctx.info.update(semantic_ids={"sizes": list(sizes)}, valid_curve=[(e, 0.05) for e in range(2, 101, 2)])
    with tempfile.TemporaryDirectory() as folder:
        ckpt = Checkpointer(Path(folder) / "seed0.ckpt", {"config": {}}, every=float("inf"), label=ctx.label)
        ckpt.method, ctx.checkpoints = method, ckpt
        ckpt.stages["semantic_ids"] = method.semantic_ids
        loop = Selection(ctx, method.model, config.epochs, config.patience, config.eval_every, state={"optimizer": opt, "scheduler": sched})
        loop.best_state = {k: v.detach().clone() for k, v in method.model.state_dict().items()}
        ckpt.loops.append(loop)
        snapshot, write = [], []
        for _ in range(args.repeat):
            loop.epoch += 1
            t0 = time.perf_counter()
            ckpt.epoch_end(loop)
            snapshot.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ckpt.write()
            write.append(time.perf_counter() - t0)
        size = ckpt.path.stat().st_size
    params = sum(p.numel() for p in method.model.parameters())
    snap, wr = float(np.median(snapshot)), float(np.median(write))
    print(f"tiger@{args.preset or 'defaults'}: {params:,} parameters, vocabulary {method.model.vocab_size}; checkpoint {size / 2**20:.2f} MiB")
    print(f"in-memory snapshot per epoch boundary {1000 * snap:.1f} ms, write {1000 * wr:.1f} ms (median of {args.repeat}; "
          f"{cpu_name()}, {args.threads} thread(s))")  # fmt: skip
    print(f"write at the default 10-minute interval: {100 * wr / 600:.4f}% of training time")


if __name__ == "__main__":
    main()
