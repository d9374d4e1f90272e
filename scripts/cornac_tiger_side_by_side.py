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

``--preset cpu`` compares the two trained to early stopping at our tiger's declared ``cpu``
preset: both sides get its transformer sizes, batch size, learning rate, RQ-VAE epochs, epoch
limit and test beam.  Cornac keeps the weights of its best validation (its
``model_selection="best"``), validated every ``eval_every`` epochs at ``valid_beam`` with the
harness's NDCG@10 on a seeded sample of the benchmark's validation users (``--valid-users``,
2,000 by default as cornac's own ``val_sample``: it scores one user at a time), and stops
after ``patience`` validations without improvement.  With ``--ours-record`` our side is
the harness record of that preset and seed (made by ``bench run --preset cpu``; its config,
seed and data fingerprint are checked): its metrics and epochs are the record's, and its
seconds per epoch and test users per second are measured in this process, on a model trained
for ``--timing-epochs`` epochs, before cornac runs:

    python scripts/cornac_tiger_side_by_side.py --dataset scientific --data-dir ../shared/data --preset cpu \\
        --ours-record results/scientific@cpu/tiger/seed0.json --threads 1 \\
        --output peers/cornac_tiger_scientific_cpu.md --json peers/cornac_tiger_scientific_cpu.json

Needs ``pip install cornac==3.0.1`` (not a project dependency).  CI does not run it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from bench.paths import Paths  # noqa: E402
from bench.config import resolve_config  # noqa: E402
from bench.provenance import cpu_name  # noqa: E402
from bench.results import Record  # noqa: E402
from bench.runner import RunConfig, build_method, derive_seed, resolve_device  # noqa: E402
from bench.split import EvalSet, Split, leave_one_out, sample_rows  # noqa: E402
from methods import METHODS  # noqa: E402
from methods.semid.text import TextConfig, item_embeddings  # noqa: E402


# --small: the same reduced transformer on both sides, for a smoke run on a CPU (not for quality)
SMALL = {"d_model": 32, "layers": 1, "heads": 2, "d_kv": 16, "d_ff": 64}


def preset_settings(preset: str) -> dict:
    """Our tiger's config at ``preset`` (its declared settings over its defaults)."""
    return dataclasses.asdict(resolve_config(METHODS.get("tiger"), preset)) if preset else {}


def _summary(r: dict) -> dict:
    return {"recall@10": r["metrics"]["recall@10"], "ndcg@10": r["metrics"]["ndcg@10"], "seconds_per_epoch": r["epoch_seconds"],
            "test_users_per_second": r["users_per_second"], "epochs": r["epochs"]}  # fmt: skip


def run_ours(split: Split, test: EvalSet, args, device: torch.device, epochs: int | None = None) -> dict:
    """Train our tiger (``args.preset``'s settings, or the ``--epochs`` of the quick mode) with no
    selection (the last epoch is kept) and test it on ``test``."""
    if args.preset:
        c = preset_settings(args.preset)
        epochs = epochs or c["epochs"]
        overrides = {"epochs": epochs, "eval_every": epochs, "rq_epochs": c["rq_epochs"]}
    else:
        epochs = args.epochs
        overrides = {"epochs": epochs, "eval_every": epochs, "rq_epochs": args.rq_epochs, "beam": args.beam,
                     "valid_beam": args.beam, **(SMALL if args.small else {})}  # fmt: skip
    cfg = RunConfig(device=str(device), progress=sys.stderr.isatty(), eval_batch_size=args.eval_batch_size, preset=args.preset,
                    overrides={"tiger": overrides}, data_dir=None)  # fmt: skip
    method, parts = build_method(METHODS.get("tiger"), split, args.seed, cfg, device)
    method.ctx.validate = lambda: {k: 0.0 for k in ("ndcg@10",)}  # no selection: the last epoch is kept
    method.fit()
    out = Evaluator(test, method, parts["tiebreak"], args.eval_batch_size, cfg.progress, "test").run()
    info = method.ctx.efficiency
    return {
        "metrics": summarize(out.ranks, out.list_depth, split.n_items),
        "tokenizer_seconds": info["tokenizer_seconds"],
        "epoch_seconds": info["epoch_seconds_mean"],
        "users_per_second": out.users / out.seconds,
        "params": method.parameter_counts()["params_total"],
        "epochs": epochs,
    }


def ours_from_record(path: Path, split: Split, test_rows: np.ndarray | None, args, device: torch.device) -> dict:
    """Our side from a harness record of ``args.preset`` and ``args.seed`` (trained to early
    stopping by ``bench run``): its metrics (on ``test_rows`` when a subset is asked for) and
    epochs; seconds per epoch and test users per second measured here on a model trained for
    ``args.timing_epochs`` epochs at the same settings."""
    record = Record(path, json.loads(path.read_text()))
    expected = json.loads(json.dumps(preset_settings(args.preset)))
    problems = [f"{k}: record {record.data['config'].get(k)!r}, preset {v!r}" for k, v in expected.items() if record.data["config"].get(k) != v]
    if record.data["method"] != "tiger" or int(record.data["seed"]) != args.seed:
        problems.append(f"method/seed: record {record.data['method']} seed {record.data['seed']}, asked tiger seed {args.seed}")
    if record.data["provenance"]["data_fingerprint"] != split.dataset.fingerprint:
        problems.append(f"data fingerprint: record {record.data['provenance']['data_fingerprint']}, data {split.dataset.fingerprint}")
    if problems:
        raise SystemExit(f"--ours-record {path}: not a record of tiger at --preset {args.preset} on this data: " + "; ".join(problems))
    ranks = record.ranks()
    depth = record.data.get("generation", {}).get("list_depth")
    metrics = summarize(ranks if test_rows is None else ranks[test_rows], depth, split.n_items)
    eff = record.data["efficiency"]
    timing = run_ours(split, split.test if test_rows is None else split.test.subset(test_rows), args, device, epochs=args.timing_epochs)
    return {**timing, "metrics": metrics, "epochs": int(eff["epochs_run"])}


class _Stop(Exception):
    """Raised from cornac's validation hook once patience is exhausted."""


def cornac_ranks(model, evalset: EvalSet, iid: dict, order: np.ndarray, tiebreak: torch.Tensor) -> np.ndarray:
    """Ranks of ``evalset``'s targets under cornac's scores, user by user (its API), by the harness's code."""
    ranks = []
    for k in range(len(evalset.targets)):
        hist = [iid[str(i)] for i in evalset.input.history[k]]
        scores = model.score(0, hist)[order]  # cornac's TIGER reads only the history, not the user index
        ranks.append(ranks_from_scores(torch.from_numpy(scores[None]).float(), torch.tensor([evalset.targets[k]]), tiebreak))
    return torch.cat(ranks).numpy()


def run_cornac(split: Split, test: EvalSet, emb: np.ndarray, args, device: torch.device) -> dict:
    from cornac.data import FeatureModality
    from cornac.eval_methods import NextItemEvaluation
    from cornac.models import TIGER

    def sit(users: np.ndarray, seqs: list[np.ndarray]) -> list[tuple[str, str, int]]:
        return [(str(u), str(i), t) for u, s in zip(users, seqs) for t, i in enumerate(s)]

    def full(evalset: EvalSet) -> list[np.ndarray]:
        return [np.append(evalset.input.history[k], evalset.targets[k]) for k in range(len(evalset.targets))]

    train = sit(np.arange(split.n_users), [split.train[u] for u in range(split.n_users)])
    # cornac's item map is built from the data it is given: give it every user's full sequence as
    # "test" data (never used in fit) so that it knows every item; only ``test``'s users are scored
    item_ids = [str(i) for i in range(split.n_items)]
    ev = NextItemEvaluation.from_splits(train_data=train, test_data=sit(split.test.input.users, full(split.test)), fmt="SIT",
                                        val_data=sit(split.valid.input.users, full(split.valid)) if args.preset else None,
                                        exclude_unknowns=False, seed=args.seed,
                                        item_feature=FeatureModality(features=emb, ids=item_ids))  # fmt: skip
    iid = ev.global_iid_map  # our item id (as string) -> cornac's item index
    order = np.array([iid[str(i)] for i in range(split.n_items)])
    tiebreak = tiebreak_order(split.n_items, derive_seed(args.seed, split.dataset.name, "tiebreak"))
    if args.preset:
        c = preset_settings(args.preset)
        size = dict(d_model=c["d_model"], d_ff=c["d_ff"], num_heads=c["heads"], d_kv=c["d_kv"], num_enc_layers=c["layers"],
                    num_dec_layers=c["layers"], dropout=c["dropout"], batch_size=c["batch_size"], learning_rate=c["lr"])  # fmt: skip
        settings = dict(n_epochs=c["epochs"], rqvae_n_epochs=c["rq_epochs"], n_beams=c["valid_beam"], model_selection="best",
                        val_eval_every=c["eval_every"], **size)  # fmt: skip
        beam = c["beam"]
    else:
        small = dict(d_model=SMALL["d_model"], d_ff=SMALL["d_ff"], num_heads=SMALL["heads"], d_kv=SMALL["d_kv"],
                     num_enc_layers=SMALL["layers"], num_dec_layers=SMALL["layers"]) if args.small else {}  # fmt: skip
        settings = dict(n_epochs=args.epochs, rqvae_n_epochs=args.rq_epochs, n_beams=args.beam, **small)
        beam = args.beam
    model = TIGER(max_len=20, seed=args.seed, device=device.type, verbose=sys.stderr.isatty(), **settings)
    timings = {"validation": 0.0}
    for name in ("_tokenize", "_fit_seq2seq"):  # time the two stages of cornac's fit
        original = getattr(model, name)

        def timed(*a, _original=original, _name=name, **kw):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                return _original(*a, **kw)
            finally:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                timings[_name] = time.perf_counter() - t0

        setattr(model, name, timed)
    curve: list[tuple[int, float]] = []
    best: dict = {}
    if args.preset:
        # selection as ours: the harness's NDCG@10 on every validation user; stop after `patience` without improvement
        model._val_sessions = lambda val_set: []
        valid = split.valid.subset(sample_rows(len(split.valid.targets), args.valid_users, split.dataset.name))

        def validate(_sessions, _metric) -> float:
            t0 = time.perf_counter()
            value = float(summarize(cornac_ranks(model, valid, iid, order, tiebreak), model.n_beams, split.n_items)["ndcg@10"])
            timings["validation"] += time.perf_counter() - t0
            epoch = (len(curve) + 1) * c["eval_every"]
            curve.append((epoch, round(value, 6)))
            print(f"cornac epoch {epoch}: valid ndcg@10 {value:.4f}", file=sys.stderr, flush=True)
            if value > best.get("value", -1.0):
                best.update(value=value, epoch=epoch, state={n: p.detach().clone() for n, p in model.model.state_dict().items()})
            elif epoch - best["epoch"] >= c["patience"] * c["eval_every"]:
                raise _Stop()
            return value

        model._validate = validate
    try:
        model.fit(ev.train_set, ev.val_set)
        epochs = settings["n_epochs"]
    except _Stop:  # early stopping: keep the best validation's weights, as cornac's own selection does at the end
        epochs = curve[-1][0]
    if best:
        model.model.load_state_dict(best["state"])
    model.model.to("cpu").eval()
    model.n_beams = beam
    t0 = time.perf_counter()
    ranks = cornac_ranks(model, test, iid, order, tiebreak)
    seconds = time.perf_counter() - t0
    return {
        "metrics": summarize(ranks, beam, split.n_items),  # only its beam is ranked
        "tokenizer_seconds": timings["_tokenize"],
        "epoch_seconds": (timings["_fit_seq2seq"] - timings["validation"]) / epochs,
        "users_per_second": len(test.targets) / seconds,
        "params": sum(p.numel() for p in model.model.parameters()),
        "epochs": epochs,
        **({"best_epoch": best["epoch"], "valid_curve": curve} if best else {}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20, help="seq2seq training epochs, both sides (no early stopping; not with --preset)")
    p.add_argument("--rq-epochs", type=int, default=200, help="RQ-VAE epochs, both sides (not with --preset)")
    p.add_argument("--beam", type=int, default=20, help="test beam, both sides (not with --preset)")
    p.add_argument("--preset", default="", help="both sides at our tiger's declared preset (e.g. cpu), trained to early stopping")
    p.add_argument("--ours-record", type=Path, default=None,
                   help="with --preset: our side's metrics and epochs from this `bench run` record of tiger at the preset and seed")  # fmt: skip
    p.add_argument("--valid-users", type=int, default=2000,
                   help="with --preset: cornac validates on this seeded sample of validation users (its own val_sample default; 0 = all)")
    p.add_argument("--timing-epochs", type=int, default=2, help="with --ours-record: epochs of our model trained here to time it")
    p.add_argument("--users", type=int, default=0, help="evaluate a seeded random subset of this many test users (0 = all)")
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--small", action="store_true", help="a small transformer on both sides (CPU smoke run; not TIGER's size)")
    p.add_argument("--output", default=None, help="also write the table as markdown here")
    p.add_argument("--json", default=None, help="also write {ours, cornac} with recall@10, ndcg@10, seconds_per_epoch, test_users_per_second, epochs")
    args = p.parse_args(argv)
    if args.ours_record and not args.preset:
        p.error("--ours-record needs --preset (the record's settings)")
    if args.preset and args.small:
        p.error("--small and --preset both set the model's size: give one")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    paths = Paths.resolve(data_dir=args.data_dir)
    dataset = load_dataset(args.dataset, paths.data_dir, cache_dir=paths.cache_dir)
    split = leave_one_out(dataset)
    test, rows_ = split.test, None
    if args.users:
        rows_ = np.sort(np.random.default_rng(args.seed).choice(len(test.targets), min(args.users, len(test.targets)), replace=False))
        test = test.subset(rows_)
    data = TrainData(split.train, split.n_users, split.n_items, dataset.item_text, dataset.item_value, dataset.name, dataset.item_ids,
                     cache_dir=paths.cache_dir)
    emb, emb_info = item_embeddings(data, TextConfig(), device)

    ours = (lambda: ours_from_record(args.ours_record, split, rows_, args, device)) if args.ours_record else (lambda: run_ours(split, test, args, device))
    rows, results = [], {}
    for key, side, run in (("ours", "ours (tiger)", ours), ("cornac", "cornac 3.0.1 TIGER", lambda: run_cornac(split, test, emb, args, device))):
        r = results[key] = run()
        m = r["metrics"]
        rows.append([side, f"{m['recall@10']:.4f}", f"{m['ndcg@10']:.4f}", f"{m['recall@20']:.4f}", str(r["epochs"]), f"{r['tokenizer_seconds']:.1f}",
                     f"{r['epoch_seconds']:.1f}", f"{r['users_per_second']:.1f}", f"{r['params']:,}"])  # fmt: skip
        print(side, m, flush=True)
    epoch_s = results["ours"]["epoch_seconds"], results["cornac"]["epoch_seconds"]
    users_s = results["ours"]["users_per_second"], results["cornac"]["users_per_second"]
    headers = ["", "recall@10", "ndcg@10", "recall@20", "epochs", "tokenizer s", "s / epoch", "test users / s", "params"]
    table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu_name()}), {torch.get_num_threads()} thread(s)"
    if args.preset:
        c = preset_settings(args.preset)
        how = (f"our tiger's `{args.preset}` preset on both sides (d_model {c['d_model']}, {c['layers']}+{c['layers']} layers, {c['heads']} heads, "
               f"d_ff {c['d_ff']}, batch {c['batch_size']}, lr {c['lr']}, {c['rq_epochs']} RQ-VAE epochs), trained to early stopping "
               f"(validation every {c['eval_every']} epochs at beam {c['valid_beam']}, patience {c['patience']}, "
               f"limit {c['epochs']} epochs; best validation kept; ours on all validation users, cornac on "
               f"{args.valid_users or 'all'} of them, as its one-user-at-a-time scoring is slow), test beam {c['beam']}")  # fmt: skip
        if args.ours_record:
            how += (f"; ours = the harness record `{args.ours_record}` (its metrics and epochs; its seconds per epoch and test users / s "
                    f"measured in this process on a model trained {args.timing_epochs} epochs at the same settings)")  # fmt: skip
    else:
        how = (f"beam {args.beam}, {args.epochs} seq2seq epochs (last epoch kept), {args.rq_epochs} RQ-VAE epochs, "
               f"{'SMALL transformer ' + str(SMALL) if args.small else 'TIGER-sized transformer'}")  # fmt: skip
    summary = (f"{args.dataset}, {len(test.targets):,} test users, {how}, seed {args.seed}, embeddings {emb_info['encoder_source']} ({emb.shape[1]} dims), {hw}. "
               f"Epoch time ratio cornac/ours {epoch_s[1] / epoch_s[0]:.1f}x; test throughput ratio ours/cornac {users_s[0] / users_s[1]:.1f}x.")  # fmt: skip
    print(table)
    print(summary)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(f"<!-- Generated by `{cmd}`. Do not edit by hand. -->\n\n# TIGER: ours vs cornac 3.0.1\n\n"
                                     f"{summary}\n\n{table}\n")  # fmt: skip
    if args.json:
        out = {k: _summary(r) for k, r in results.items()}
        out["setup"] = {"command": cmd, "dataset": args.dataset, "test_users": len(test.targets), "seed": args.seed, "preset": args.preset,
                        "device": hw, "cornac_best_epoch": results["cornac"].get("best_epoch"),
                        "cornac_valid_curve": results["cornac"].get("valid_curve")}  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
