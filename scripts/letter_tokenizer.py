"""Train only the tokenizers of letter-tiger and its ablations on a dataset and compare their
codebook utilization (no seq2seq recommender: that part is the same for all of them).

Each variant runs its method's own ``build_ids`` (text embeddings, CF SASRec, regularized
RQ-VAE); the CF embeddings depend only on the training data and the seed, so they are trained
once and shared by the variants that use them. ``plain`` = the same tokenizer with alpha = beta = 0.

    BENCH_CACHE_DIR=/path/cache python scripts/letter_tokenizer.py --dataset beauty --data-dir /work/shared/data \\
        --rq-epochs 30 --cf-epochs 5 --variants tiger-cr,letter-tiger --threads 1 --out letter.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench import codebook
from bench.data.registry import load_dataset
from bench.paths import Paths
from bench.runner import RunConfig, build_method, resolve_device
from bench.split import leave_one_out
from methods import METHODS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--variants", default="tiger-cr,letter-tiger", help="comma-separated: letter-tiger, tiger-cr, tiger-dr, tiger-cr-dr, plain")
    ap.add_argument("--rq-epochs", type=int, default=30)
    ap.add_argument("--cf-epochs", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], help="extra option FIELD=VALUE for every variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    paths = Paths.resolve(data_dir=args.data_dir)
    split = leave_one_out(load_dataset(args.dataset, paths.data_dir, cache_dir=paths.cache_dir))
    extra = dict(s.split("=", 1) for s in args.set)
    shared_cf = None
    results = {}
    for variant in args.variants.split(","):
        name = "tiger-cr-dr" if variant == "plain" else variant
        overrides = {"rq_epochs": str(args.rq_epochs), "cf_epochs": str(args.cf_epochs), **extra}
        if variant == "plain":
            overrides.update(alpha="0", beta="0")
        cfg = RunConfig(device=str(device), progress=False, overrides={name: overrides}, data_dir=paths.data_dir,
                        cache_dir=paths.cache_dir)
        method, info = build_method(METHODS.get(name), split, args.seed, cfg, device)
        if method.config.alpha > 0:
            if shared_cf is None:
                t0 = time.perf_counter()
                shared_cf = method.cf_embeddings()
                print(f"CF SASRec: {args.cf_epochs} epochs, {time.perf_counter() - t0:.0f}s, loss {shared_cf[1]['loss_curve']}", flush=True)
            method.cf_embeddings = lambda: shared_cf  # same training data and seed: the same embeddings
        t0 = time.perf_counter()
        ids = method.build_ids()
        seconds = time.perf_counter() - t0
        stats = codebook.utilization(ids)
        tok = method.ctx.info["tokenizer"]
        results[variant] = {
            "alpha": method.config.alpha, "beta": method.config.beta, "tau": method.config.tau,
            "seconds": round(seconds, 1),
            "per_level": [{k: lv[k] for k in ("used", "entropy_bits", "entropy_normalized", "unique_prefixes")} for lv in stats["per_level"]],
            "collision_rate": stats["collision_rate"], "largest_group": stats["largest_group"],
            "items_in_collision_groups": stats["items_in_collision_groups"],
            "before_collision_handling": tok["rqvae"]["before_collision_handling"],
            "final_losses": tok["rqvae"]["final_losses"],
            "regularizers": tok.get("regularizers"),
            "cf": {k: v for k, v in tok.get("cf_embeddings", {}).items() if k != "loss_curve"} | (
                {"final_loss": tok["cf_embeddings"]["loss_curve"][-1]} if "cf_embeddings" in tok else {}),
        }  # fmt: skip
        first = stats["per_level"][0]
        print(f"{variant:13s} level-1 used {first['used']}/{first['size']}, entropy {first['entropy_bits']:.2f} bits; "
              f"collisions {stats['collision_rate']:.4f}; {seconds:.0f}s", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
