"""Our TIGER next to cornac 3.0.1's TIGER on the identical split with the same item embeddings.

Both sides get: the benchmark's leave-one-out split (training sequences = items[:-2], the
same validation and test users and histories), the same item text embeddings (our
:func:`methods.semid.text.item_embeddings`, default all-MiniLM-L6-v2), the same number of
RQ-VAE and seq2seq epochs, the same beam and history of 20 items.  Everything else keeps each
side's own defaults (cornac: Adam lr 1e-3, batch 256, constant lr, per-level output heads;
ours: AdamW lr 5e-4 cosine, batch 1024).  Test users are scored by each side and ranked by
the harness's metric code (cornac's scores outside its beam are all equal, so only the
top-``beam`` positions carry information: compare metrics at K <= beam).

Timings: tokenizer seconds, seconds per seq2seq training epoch (validation excluded), test
users per second at the beam.  Cornac fits and scores one user at a time (its API).

    python scripts/cornac_tiger_side_by_side.py --dataset beauty --data-dir ../shared/data \\
        --epochs 20 --rq-epochs 200 --beam 20 --output peers/cornac_tiger_beauty.md

Needs ``pip install cornac==3.0.1`` (not a project dependency).  CI does not run it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.data.registry import load_dataset  # noqa: E402
from bench.evaluate import Evaluator  # noqa: E402
from bench.method import TrainData  # noqa: E402
from bench.metrics import ranks_from_scores, summarize, tiebreak_order  # noqa: E402
from bench.runner import RunConfig, build_method, derive_seed, resolve_device  # noqa: E402
from bench.split import EvalInput, EvalSet, Sequences, Split, leave_one_out  # noqa: E402
from methods import METHODS  # noqa: E402
from methods.semid.text import TextConfig, item_embeddings  # noqa: E402


# --small: the same reduced transformer on both sides, for a smoke run on a CPU (not for quality)
SMALL = {"d_model": 32, "layers": 1, "heads": 2, "d_kv": 16, "d_ff": 64}


def subset(evalset: EvalSet, rows: np.ndarray) -> EvalSet:
    hist = evalset.input.history
    lengths = hist.lengths[rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([hist[r] for r in rows]).astype(np.int32) if len(rows) else np.zeros(0, np.int32)
    return EvalSet(EvalInput(evalset.input.users[rows], Sequences(offsets, items)), evalset.targets[rows])


def run_ours(split: Split, test: EvalSet, args, device: torch.device) -> dict:
    overrides = {"epochs": args.epochs, "eval_every": args.epochs, "rq_epochs": args.rq_epochs, "beam": args.beam,
                 "valid_beam": args.beam, **(SMALL if args.small else {})}  # fmt: skip
    cfg = RunConfig(device=str(device), progress=sys.stderr.isatty(), eval_batch_size=args.eval_batch_size,
                    overrides={"tiger": overrides}, data_dir=None)  # fmt: skip
    method, parts = build_method(METHODS.get("tiger"), split, args.seed, cfg, device)
    method.ctx.validate = lambda: {k: 0.0 for k in ("ndcg@10",)}  # no selection: both sides keep the last epoch
    method.fit()
    out = Evaluator(test, method, parts["tiebreak"], args.eval_batch_size, cfg.progress, "test").run()
    info = method.ctx.efficiency
    return {
        "metrics": summarize(out.ranks, out.list_depth, split.n_items),
        "tokenizer_seconds": info["tokenizer_seconds"],
        "epoch_seconds": info["epoch_seconds_mean"],
        "users_per_second": out.users / out.seconds,
        "params": method.parameter_counts()["params_total"],
    }


def run_cornac(split: Split, test: EvalSet, emb: np.ndarray, args, device: torch.device) -> dict:
    from cornac.data import FeatureModality
    from cornac.eval_methods import NextItemEvaluation
    from cornac.models import TIGER

    def sit(users: np.ndarray, seqs: list[np.ndarray]) -> list[tuple[str, str, int]]:
        return [(str(u), str(i), t) for u, s in zip(users, seqs) for t, i in enumerate(s)]

    train = sit(np.arange(split.n_users), [split.train[u] for u in range(split.n_users)])
    # cornac's item map is built from the data it is given: give it every user's full sequence as
    # "test" data (never used in fit) so that it knows every item; only ``test``'s users are scored
    full = [np.append(split.test.input.history[k], split.test.targets[k]) for k in range(len(split.test.targets))]
    item_ids = [str(i) for i in range(split.n_items)]
    ev = NextItemEvaluation.from_splits(train_data=train, test_data=sit(split.test.input.users, full), fmt="SIT",
                                        exclude_unknowns=False, seed=args.seed,
                                        item_feature=FeatureModality(features=emb, ids=item_ids))  # fmt: skip
    small = dict(d_model=SMALL["d_model"], d_ff=SMALL["d_ff"], num_heads=SMALL["heads"], d_kv=SMALL["d_kv"],
                 num_enc_layers=SMALL["layers"], num_dec_layers=SMALL["layers"]) if args.small else {}  # fmt: skip
    model = TIGER(n_epochs=args.epochs, rqvae_n_epochs=args.rq_epochs, n_beams=args.beam, max_len=20, seed=args.seed,
                  device=device.type, verbose=sys.stderr.isatty(), **small)  # fmt: skip
    timings = {}
    for name in ("_tokenize", "_fit_seq2seq"):  # time the two stages of cornac's fit
        original = getattr(model, name)

        def timed(*a, _original=original, _name=name, **kw):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = _original(*a, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[_name] = time.perf_counter() - t0
            return result

        setattr(model, name, timed)
    model.fit(ev.train_set)
    iid = ev.global_iid_map  # our item id (as string) -> cornac's item index
    order = np.array([iid[str(i)] for i in range(split.n_items)])
    tiebreak = tiebreak_order(split.n_items, derive_seed(args.seed, split.dataset.name, "tiebreak"))
    ranks = []
    t0 = time.perf_counter()
    for k in range(len(test.targets)):
        hist = [iid[str(i)] for i in test.input.history[k]]
        scores = model.score(0, hist)[order]  # cornac's TIGER reads only the history, not the user index
        ranks.append(ranks_from_scores(torch.from_numpy(scores[None]).float(), torch.tensor([test.targets[k]]), tiebreak))
    seconds = time.perf_counter() - t0
    return {
        "metrics": summarize(torch.cat(ranks).numpy(), args.beam, split.n_items),  # only its beam is ranked
        "tokenizer_seconds": timings["_tokenize"],
        "epoch_seconds": timings["_fit_seq2seq"] / args.epochs,
        "users_per_second": len(test.targets) / seconds,
        "params": sum(p.numel() for p in model.model.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20, help="seq2seq training epochs, both sides (no early stopping)")
    p.add_argument("--rq-epochs", type=int, default=200, help="RQ-VAE epochs, both sides")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--users", type=int, default=0, help="evaluate a seeded random subset of this many test users (0 = all)")
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--small", action="store_true", help="a small transformer on both sides (CPU smoke run; not TIGER's size)")
    p.add_argument("--output", default=None, help="also write the table as markdown here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    split = leave_one_out(dataset)
    test = split.test
    if args.users:
        rows = np.sort(np.random.default_rng(args.seed).choice(len(test.targets), min(args.users, len(test.targets)), replace=False))
        test = subset(test, rows)
    data = TrainData(split.train, split.n_users, split.n_items, dataset.item_text, dataset.item_value, dataset.name, dataset.item_ids)
    emb, emb_info = item_embeddings(data, TextConfig(), device)

    rows = []
    for side, run in (("ours (tiger)", lambda: run_ours(split, test, args, device)),
                      ("cornac 3.0.1 TIGER", lambda: run_cornac(split, test, emb, args, device))):  # fmt: skip
        r = run()
        m = r["metrics"]
        rows.append([side, f"{m['recall@10']:.4f}", f"{m['ndcg@10']:.4f}", f"{m['recall@20']:.4f}", f"{r['tokenizer_seconds']:.1f}",
                     f"{r['epoch_seconds']:.1f}", f"{r['users_per_second']:.1f}", f"{r['params']:,}"])  # fmt: skip
        print(side, m, flush=True)
    epoch_s = float(rows[0][5]), float(rows[1][5])
    users_s = float(rows[0][6]), float(rows[1][6])
    headers = ["", "recall@10", "ndcg@10", "recall@20", "tokenizer s", "s / epoch", "test users / s", "params"]
    table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    summary = (f"{args.dataset}, {len(test.targets):,} test users, beam {args.beam}, {args.epochs} seq2seq epochs (last epoch kept), "
               f"{args.rq_epochs} RQ-VAE epochs, {'SMALL transformer ' + str(SMALL) if args.small else 'TIGER-sized transformer'}, seed {args.seed}, embeddings {emb_info['encoder_source']} ({emb.shape[1]} dims), {hw}. "
               f"Epoch time ratio cornac/ours {epoch_s[1] / epoch_s[0]:.1f}x; test throughput ratio ours/cornac {users_s[0] / users_s[1]:.1f}x.")  # fmt: skip
    print(table)
    print(summary)
    if args.output:
        cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(f"<!-- Generated by `{cmd}`. Do not edit by hand. -->\n\n# TIGER: ours vs cornac 3.0.1\n\n"
                                     f"{summary}\n\n{table}\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
