"""The GPU check: TIGER's seconds per epoch and its full test pass at beam 20 and 100, and
SASRec-CE's seconds per epoch, on Beauty at the default settings; one short table.

Sized for one H100/H200 within about 12 minutes.  The tokenizer trains for only
``--rq-epochs`` (default 200): the recommender's epoch and the beam search cost the same
whatever the codes are, and the paper's 20k tokenizer epochs would take most of the budget.
On a CPU, ``--tiny`` checks the logic at a small size (synthetic Beauty-shaped data, a
reduced model):

    python scripts/gpu_check.py --data-dir data --output peers/gpu_check_h200.md      # on the GPU machine
    python scripts/gpu_check.py --tiny --device cpu                                   # logic check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from bench import provenance
from bench.data.canonical import canonicalize
from bench.evaluate import Evaluator
from bench.method import DecodeRequest
from bench.runner import RunConfig, build_method
from bench.split import leave_one_out
from methods import METHODS

sys.path.insert(0, str(Path(__file__).parent))
from bench_speed import beauty_shaped  # noqa: E402

TINY = {"d_model": 32, "layers": 1, "heads": 2, "d_kv": 16, "d_ff": 64, "rq_epochs": 5, "rq_codebook_size": 16}


def timed_fit(name: str, split, device: torch.device, overrides: dict, precision: str):
    cfg = RunConfig(device=str(device), progress=False, precision=precision, overrides={name: {"epochs": 1, "eval_every": 1, **overrides}})
    method, parts = build_method(METHODS.get(name), split, 0, cfg, device)
    method.fit()
    return method, parts, method.ctx.efficiency


def timed_test(method, parts, split, beam: int) -> float:
    """Seconds of a full test pass at ``beam`` (the pass's decode request names it)."""
    return Evaluator(split.test, method, parts["tiebreak"], 1024, False, "test", request=DecodeRequest("test", beam=beam)).run().seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder holding beauty/ (default: synthetic Beauty-shaped data)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--rq-epochs", type=int, default=200)
    ap.add_argument("--tiny", action="store_true", help="small data and model: checks the logic on a CPU")
    ap.add_argument("--output", default="")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.data_dir and not args.tiny:
        from bench.data.registry import load_dataset
        from bench.paths import Paths

        paths = Paths.resolve(data_dir=args.data_dir)
        dataset = load_dataset("beauty", paths.data_dir, cache_dir=paths.cache_dir, download=False)
    else:
        dataset = canonicalize("beauty-shaped", beauty_shaped(300 if args.tiny else 22_363, items=400 if args.tiny else 12_101))
    split = leave_one_out(dataset)
    t0 = time.perf_counter()
    tiger_over = {"rq_epochs": args.rq_epochs, **(TINY if args.tiny else {})}
    tiger, parts, eff = timed_fit("tiger", split, device, tiger_over, args.precision)
    rows = [["tiger: tokenizer (RQ-VAE, s)", f"{eff['tokenizer_seconds']:.1f}", f"{tiger_over['rq_epochs']} RQ-VAE epochs"],
            ["tiger: training epoch (s)", f"{eff['epoch_seconds_mean']:.2f}", f"{tiger.ctx.info['train_examples']:,} examples"]]  # fmt: skip
    for beam in (20, 100):
        seconds = timed_test(tiger, parts, split, beam)
        rows.append([f"tiger: test pass, beam {beam} (s)", f"{seconds:.2f}", f"{len(split.test.targets):,} users"])
    _, _, eff = timed_fit("sasrec-ce", split, device, {"hidden": 16, "layers": 1} if args.tiny else {}, args.precision)
    rows.append(["sasrec-ce: training epoch (s)", f"{eff['epoch_seconds_mean']:.2f}", ""])
    hw = provenance.hardware(device)
    caption = (f"{dataset.name} ({split.n_users:,} users, {split.n_items:,} items), default settings"
               + (" (TINY model)" if args.tiny else "") + f", precision {tiger.ctx.precision}; {hw['device_name']}; "
               f"torch {torch.__version__}; whole check {time.perf_counter() - t0:.0f} s")  # fmt: skip
    table = tabulate(rows, headers=["measure", "value", "note"], tablefmt="github")
    print(caption)
    print(table)
    if args.output:
        Path(args.output).write_text(f"# GPU check\n\n{caption}\n\n{table}\n\nCommand: `python {' '.join(sys.argv)}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
