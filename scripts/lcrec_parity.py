"""LC-Rec's training loss in fp32 and in bf16 over the first steps, against the noise of two seeds.

Trains lc-rec (its own loop and examples, at a preset) for ``--steps`` optimizer steps of
``--batch`` examples, once per (precision, seed) pair given, and records every step's loss.
Then compares, over windows of ``--window`` steps, the gap between the precisions (same seed)
with the gap between the seeds (same precision).  bf16 is in parity when its gap to fp32 is
within the run-to-run noise of the seeds.  The tokenizer is trained briefly (``rq_epochs``
20): the question is the arithmetic of the language model's training, not the IDs.

    python scripts/lcrec_parity.py --data-dir DIR --runs bf16:0,bf16:1,fp32:0 --steps 200 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from bench.config import resolve_config
from bench.method import Context
from bench.provenance import cpu_name, git_info
from bench.runner import RunConfig, train_data
from bench.script_args import add_dataset_arguments, load_split
from methods.lcrec import LCRec


def losses(split, settings: RunConfig, preset: str, precision: str, seed: int, steps: int, batch: int) -> list[float]:
    config = resolve_config(LCRec, preset, {"rq_epochs": 20, "epochs": 1, "max_examples": steps * batch, "batch_size": batch,
                                            "micro_batch_size": batch})  # fmt: skip
    ctx = Context(device=torch.device("cpu"), seed=seed, validate=lambda *request: {"ndcg@10": 0.0}, precision=precision)
    method = LCRec(config, train_data(split, settings), ctx)
    out: list[float] = []
    plan_of = method.training_plan

    def recorded():
        plan = plan_of()
        plan.after_step = lambda step, loss: out.append(float(loss))
        return plan

    method.training_plan = recorded
    method.fit()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(p)
    p.add_argument("--runs", default="bf16:0,bf16:1,fp32:0", help="precision:seed pairs")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--save", default=None, help="a JSON file for the loss curves (read back when it exists: runs done are skipped)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    code = git_info()  # the code that trains (taken before it does)
    split, settings = load_split(args)
    curves: dict[str, list[float]] = json.loads(Path(args.save).read_text()) if args.save and Path(args.save).is_file() else {}
    for run in args.runs.split(","):
        if run not in curves:
            precision, seed = run.split(":")
            curves[run] = losses(split, settings, args.preset, precision, int(seed), args.steps, args.batch)
            if args.save:
                Path(args.save).write_text(json.dumps(curves))
    w = args.window
    means = {run: [float(np.mean(c[i : i + w])) for i in range(0, len(c), w)] for run, c in curves.items()}
    runs = list(curves)
    print(f"lc-rec@{args.preset} on {args.dataset} at {(code['git_sha'] or '?')[:7]}, {cpu_name()}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}; {args.steps} steps of {args.batch} examples; mean loss per window of {w} steps\n")
    print("| steps | " + " | ".join(runs) + " |\n" + "|---" * (len(runs) + 1) + "|")
    for k in range(len(next(iter(means.values())))):
        print(f"| {k * w + 1}-{(k + 1) * w} | " + " | ".join(f"{means[r][k]:.4f}" for r in runs) + " |")
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :]]
    print("\n| pair | mean absolute gap of the window means | largest |\n|---|---|---|")
    for a, b in pairs:
        gaps = np.abs(np.array(means[a]) - np.array(means[b]))
        print(f"| {a} vs {b} | {gaps.mean():.4f} | {gaps.max():.4f} |")


if __name__ == "__main__":
    main()
