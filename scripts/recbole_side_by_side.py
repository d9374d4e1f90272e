#!/usr/bin/env python
"""Peer comparison: RecBole 1.2.1's SASRec and ours (``sasrec-ce``) on the same ml-100k split.

What it does
------------
1. Loads our canonical ml-100k (``bench.data.registry.load_dataset``) and our leave-one-out
   split (``bench.split.leave_one_out``).
2. Writes that dataset as RecBole atomic files, ``<tmp>/bench-ml-100k/bench-ml-100k.inter``
   (``user_id:token item_id:token timestamp:float``), with our remapped integer ids and each
   user's chronological *position* as the timestamp, so RecBole's sort reproduces our order
   exactly (no ties within a user are possible).  RecBole is configured with
   ``eval_args = {split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}`` and no
   filtering of any kind.
3. Checks that RecBole's split is ours: its test and validation (user, target) pairs must
   equal ``leave_one_out(dataset).test`` / ``.valid`` (mapped back through
   ``field2id_token``), the test and validation histories must be our histories cut to the
   last 50 items, and its training targets must be exactly our training targets.  A mismatch
   aborts the run.
4. Trains RecBole's SASRec (its own ``Trainer``: early stopping, best checkpoint, test
   evaluation with RecBole's evaluator) and ours (``bench.runner.run_one``), and prints one
   table: test NDCG@10 and Recall@10, seconds per training epoch, epochs, batch size, device,
   plus the ratio of seconds per epoch (RecBole / ours).  RecBole's trained model is also
   scored with *our* metric code (same seeded tie-break as the harness) as a cross-check of
   the two evaluators.

Protocol notes
--------------
* Masking: RecBole's full-sort evaluation does not mask history items for sequential models
  (``FullSortEvalDataLoader`` returns ``history_index = None`` when
  ``MODEL_TYPE == SEQUENTIAL``; only the padding item 0 is set to -inf in
  ``Trainer._full_sort_batch_eval``).  Our protocol does not mask either, so both rank the
  full catalog including already-seen items.
* Both select the checkpoint on validation NDCG@10, validate every ``--eval-every`` epochs and
  stop after ``--patience`` validations without improvement (RecBole: ``stopping_step =
  patience - 1`` because it stops when the counter *exceeds* ``stopping_step``; it also
  counts a tie as an improvement, ours does not).
* Ties in the ranking: ours uses a seeded random tie-break; RecBole's evaluator uses
  ``torch.topk`` order.  With continuous scores ties are practically absent.

Training differences that cannot be configured away
---------------------------------------------------
* Training examples.  RecBole *augments*: every training prefix becomes one sample
  (history = up to 50 previous items, target = next item) and the loss is taken at the last
  position only, so an epoch is ~97k padded length-50 sequences in batches of
  ``train_batch_size`` samples (RecBole's default 2048, kept here).  Ours cuts each user's
  training sequence into windows of up to 50 targets and takes the loss at *every* position,
  so an epoch is ~2.5k windows in batches of 128 windows (up to 6,400 targets).  Both see
  every training target exactly once per epoch; RecBole recomputes each prefix from scratch,
  which is why its epochs are far more expensive.  The batch sizes are therefore not
  comparable and both are reported (samples for RecBole, windows for ours).
* Block.  RecBole's SASRec is a BERT-style post-LN transformer (embedding LayerNorm +
  dropout, attention -> dropout -> residual -> LayerNorm, FFN -> dropout -> residual ->
  LayerNorm) on left-aligned sequences with positions counted from the oldest item, N(0, 0.02)
  initialisation, and a softmax that includes the padding item.  Ours follows the paper's
  pre-LN layout on right-aligned sequences (the most recent item always sits at the last
  position), Xavier initialisation, and a softmax over real items only.
* Optimiser: both Adam with lr 1e-3 and no weight decay; ours uses betas (0.9, 0.98) as in
  the SASRec paper, RecBole's ``learner: adam`` uses PyTorch's default (0.9, 0.999).
* Matched: hidden 64, 2 layers, 1 head, feed-forward inner size 64, ReLU, LayerNorm eps 1e-8,
  dropout 0.5 (hidden and attention), max length 50, full softmax cross-entropy.

Running it
----------
    pip install recbole==1.2.1 --no-deps
    pip install "pandas<3" colorlog texttable scikit-learn tensorboard pyyaml colorama
    python scripts/recbole_side_by_side.py --device cpu --output peers/recbole_sasrec_ml-100k_cpu.md
    python scripts/recbole_side_by_side.py --device cuda --output peers/recbole_sasrec_ml-100k_cuda.md

Without ``--epochs`` the CPU run caps both trainings at ``CPU_DEFAULT_EPOCHS`` (5) epochs, about
12 minutes on this 2-core machine (RecBole's epoch is ~2 minutes there), and a CUDA run uses
our default (200, with early stopping).  On a CPU shared with other jobs pass ``--threads 1``:
two torch threads competing with another process were ~5x slower than one.

Compatibility fixes for RecBole 1.2.1 on numpy 2 / torch >= 2.6 / scipy >= 1.12 are applied
by :func:`patch_recbole` (see DESIGN.md section 7).  Exit code 2 with a one-line error when
recbole or a dependency its import needs is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

DATASET = "ml-100k"
RB_DATASET = "bench-ml-100k"  # the RecBole dataset name (and folder) of our exported copy
OURS = "sasrec-ce"
MAX_LEN = 50
RECBOLE_BATCH = 2048  # RecBole's default train_batch_size (samples = prefixes)
CPU_DEFAULT_EPOCHS = 5  # RecBole needs ~2 min per epoch on one core of this machine
GPU_DEFAULT_EPOCHS = 200  # ours' default; early stopping usually ends it sooner

# import name -> pip requirement; what `import recbole.{config,data,model,trainer,utils}` needs
# beyond this project's own dependencies (torch, numpy, scipy, tqdm)
PEER_DEPS = {
    "recbole": "recbole==1.2.1 (with --no-deps)",
    "pandas": "pandas<3",
    "colorlog": "colorlog",
    "texttable": "texttable",
    "sklearn": "scikit-learn",
    "tensorboard": "tensorboard",
    "yaml": "pyyaml",
    "colorama": "colorama",
}


def missing_dependencies() -> list[str]:
    missing = [req for mod, req in PEER_DEPS.items() if importlib.util.find_spec(mod) is None]
    if "pandas<3" not in missing:
        import pandas

        if int(pandas.__version__.split(".")[0]) >= 3:
            missing.append(f"pandas<3 (found {pandas.__version__})")
    return missing


# ---- compatibility ------------------------------------------------------------------------
NUMPY_ALIASES = {
    # removed in numpy 2; RecBole's Config.compatibility_settings reads np.float_, np.complex_
    # and np.unicode_ (an AttributeError on numpy 2) and then sets np.float, np.int, ... itself
    "float_": "float64",
    "complex_": "complex128",
    "unicode_": "str_",
    "string_": "bytes_",
    "bool8": "bool_",
    "int0": "intp",
    "uint0": "uintp",
    "object0": "object_",
}


class _NullWriter:
    """Stands in for the tensorboard SummaryWriter RecBole's Trainer opens in ./log_tensorboard."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def patch_recbole() -> types.SimpleNamespace:
    """Make RecBole 1.2.1 importable and correct on numpy 2 / torch >= 2.6 / recent scipy.

    Returns the RecBole pieces the script uses.  Fixes (DESIGN.md section 7):

    * numpy aliases removed in numpy 2 (``np.float_``, ``np.complex_``, ``np.unicode_``,
      ``np.bool8``, ...), set before any recbole module is imported;
    * ``torch.load(weights_only=False)`` for the best-checkpoint reload in
      ``Trainer.evaluate`` (the checkpoint pickles RecBole's Config; torch >= 2.6 defaults to
      ``weights_only=True``), scoped to ``recbole.trainer.trainer``;
    * ``scipy.sparse.dok_matrix._update`` (removed in scipy 1.12; used by RecBole's graph
      models, not by SASRec) restored as a dict update;
    * autograd anomaly mode, which ``recbole.model.sequential_recommender.sine`` switches on
      at import (making every backward pass much slower), switched off again;
    * RecBole's Trainer tensorboard writer replaced by a no-op (no ./log_tensorboard).
    """
    # RecBole's own deprecation noise (pandas chained fillna, torch.cuda.amp.GradScaler)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
    for alias, target in NUMPY_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, target))

    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FutureWarnings from np.object / np.str aliases
        import recbole.trainer.trainer as rb_trainer
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.model.sequential_recommender import SASRec
        from recbole.utils import init_logger, init_seed
    torch.autograd.set_detect_anomaly(False)

    class _TorchForRecBole(types.ModuleType):
        """``torch`` as seen by recbole.trainer.trainer: ``load`` defaults to weights_only=False."""

        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def load(*args, **kwargs):
            kwargs.setdefault("weights_only", False)
            return torch.load(*args, **kwargs)

    if rb_trainer.torch is torch:  # not yet patched
        rb_trainer.torch = _TorchForRecBole("torch")
    rb_trainer.get_tensorboard = lambda logger: _NullWriter()
    return types.SimpleNamespace(
        Config=Config,
        create_dataset=create_dataset,
        data_preparation=data_preparation,
        SASRec=SASRec,
        Trainer=rb_trainer.Trainer,
        init_logger=init_logger,
        init_seed=init_seed,
    )


# ---- helpers ------------------------------------------------------------------------------
@contextlib.contextmanager
def working_directory(path: Path):
    """RecBole writes ./log/ (and reads sys.argv); keep both away from the caller."""
    old_cwd, old_argv = os.getcwd(), sys.argv
    old_cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.chdir(path)
    sys.argv = [old_argv[0]]  # Config parses --key=value arguments from sys.argv
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        if old_cvd is None:  # Config._init_device overwrites CUDA_VISIBLE_DEVICES
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old_cvd


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_atomic_files(dataset, folder: Path) -> Path:
    """``<folder>/<RB_DATASET>/<RB_DATASET>.inter``: our ids, position within the user as time."""
    out = folder / RB_DATASET
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{RB_DATASET}.inter"
    lengths = dataset.lengths()
    users = np.repeat(np.arange(dataset.n_users), lengths)
    position = np.arange(dataset.n_interactions) - np.repeat(dataset.offsets[:-1], lengths)
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in zip(users.tolist(), dataset.items.tolist(), position.tolist()))
    return path


def recbole_config(rb, data_path: Path, device: torch.device, seed: int, epochs: int, eval_every: int, patience: int, verbose: bool):
    cuda = device.type == "cuda"
    config_dict = {
        # environment
        "data_path": str(data_path),
        "checkpoint_dir": str(data_path / "saved"),
        "use_gpu": cuda,
        "gpu_id": os.environ.get("CUDA_VISIBLE_DEVICES", "0") if cuda else "",
        "seed": seed,
        "reproducibility": True,
        "state": "INFO" if verbose else "WARNING",
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
        "worker": 0,
        # data: our atomic file, no filtering of any kind
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "rm_dup_inter": None,
        "val_interval": None,
        "filter_inter_by_user_or_item": False,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": MAX_LEN,
        # split and evaluation
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "valid_metric_bigger": True,
        "eval_batch_size": 4096,
        # model: matched to ours (methods/sasrec.py) as far as the architectures allow
        "n_layers": 2,
        "n_heads": 1,
        "hidden_size": 64,
        "inner_size": 64,
        "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5,
        "hidden_act": "relu",
        "layer_norm_eps": 1e-8,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        # training
        "learner": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "train_batch_size": RECBOLE_BATCH,
        "epochs": epochs,
        "eval_step": eval_every,
        "stopping_step": patience - 1,  # RecBole stops when the counter exceeds stopping_step
        "shuffle": True,
    }
    config = rb.Config(model="SASRec", dataset=RB_DATASET, config_dict=config_dict)
    config["device"] = device
    return config


def _tokens_to_ours(tokens: np.ndarray) -> np.ndarray:
    """RecBole internal id -> our id (index 0 is RecBole's [PAD], mapped to -1)."""
    return np.array([-1] + [int(t) for t in tokens[1:]], dtype=np.int64)


def check_split(split, rb_datasets, user_map: np.ndarray, item_map: np.ndarray) -> dict:
    """Assert that RecBole's train / valid / test are our leave-one-out split; return counts."""
    train_ds, valid_ds, test_ds = rb_datasets
    out = {}
    for name, ours, ds in (("test", split.test, test_ds), ("valid", split.valid, valid_ds)):
        feat = ds.inter_feat
        users = user_map[feat["user_id"].numpy()]
        targets = item_map[feat["item_id"].numpy()]
        hist = item_map[feat["item_id_list"].numpy()]
        hist_len = feat["item_length"].numpy()
        ours_pairs = dict(zip(ours.input.users.tolist(), ours.targets.tolist()))
        rb_pairs = dict(zip(users.tolist(), targets.tolist()))
        if len(rb_pairs) != len(users):
            raise AssertionError(f"RecBole's {name} set holds a user more than once")
        if rb_pairs != ours_pairs:
            diff = sorted(set(rb_pairs.items()) ^ set(ours_pairs.items()))[:5]
            raise AssertionError(f"RecBole's {name} (user, target) pairs differ from ours, e.g. {diff}")
        row_of = {u: k for k, u in enumerate(ours.input.users.tolist())}
        for r, u in enumerate(users.tolist()):
            mine = ours.input.history[row_of[u]][-MAX_LEN:]
            theirs = hist[r, : hist_len[r]]
            if not np.array_equal(mine, theirs):
                raise AssertionError(f"RecBole's {name} history of user {u} differs from ours (cut to {MAX_LEN})")
        out[f"{name}_pairs"] = len(rb_pairs)
    # training: the targets are every training item but each user's first, once each
    feat = train_ds.inter_feat
    rb_train = np.stack([user_map[feat["user_id"].numpy()], item_map[feat["item_id"].numpy()]], 1)
    rows, items = split.train.user_item_pairs()
    first = np.zeros(len(rows), dtype=bool)
    first[split.train.offsets[:-1][split.train.lengths > 0]] = True
    ours_train = np.stack([rows, items], 1)[~first]
    a = rb_train[np.lexsort(rb_train.T[::-1])]
    b = ours_train[np.lexsort(ours_train.T[::-1])]
    if a.shape != b.shape or not np.array_equal(a, b):
        raise AssertionError(f"RecBole's training targets differ from ours ({len(a)} vs {len(b)} (user, target) pairs)")
    out["train_samples"] = len(a)
    return out


@torch.no_grad()
def harness_metrics(model, test_data, split, item_map: np.ndarray, user_map: np.ndarray, seed: int, device: torch.device) -> dict:
    """RecBole's trained model scored by our metric code, with the harness's tie-break."""
    from bench.metrics import ranks_from_scores, summarize, tiebreak_order
    from bench.runner import derive_seed

    n = split.n_items
    ours_to_rb = np.empty(n, dtype=np.int64)
    ours_to_rb[item_map[1:]] = np.arange(1, n + 1)
    cols = torch.from_numpy(ours_to_rb).to(device)
    tiebreak = tiebreak_order(n, derive_seed(seed, split.dataset.name, "tiebreak")).to(device)
    item_map_t = torch.from_numpy(item_map).to(device)
    model.eval()
    ranks = []
    for interaction, _, _, _ in test_data:
        interaction = interaction.to(device)
        scores = model.full_sort_predict(interaction)[:, cols]
        targets = item_map_t[interaction["item_id"]]
        ranks.append(ranks_from_scores(scores, targets, tiebreak).cpu().numpy())
    ranks = np.concatenate(ranks)
    if len(ranks) != len(split.test.targets):
        raise AssertionError("RecBole's test loader did not yield every test user once")
    return summarize(ranks)


def run_recbole(rb, dataset, split, tmp: Path, device: torch.device, seed: int, epochs: int, eval_every: int, patience: int, verbose: bool) -> dict:
    write_atomic_files(dataset, tmp)
    with working_directory(tmp):
        config = recbole_config(rb, tmp, device, seed, epochs, eval_every, patience, verbose)
        rb.init_seed(config["seed"], config["reproducibility"])
        rb.init_logger(config)
        rb_dataset = rb.create_dataset(config)
        train_data, valid_data, test_data = rb.data_preparation(config, rb_dataset)
        user_map = _tokens_to_ours(rb_dataset.field2id_token["user_id"])
        item_map = _tokens_to_ours(rb_dataset.field2id_token["item_id"])
        split_check = check_split(split, (train_data._dataset, valid_data._dataset, test_data._dataset), user_map, item_map)

        rb.init_seed(config["seed"], config["reproducibility"])
        model = rb.SASRec(config, train_data._dataset).to(device)
        trainer = rb.Trainer(config, model)
        epoch_seconds: list[float] = []
        curve: list[tuple[int, float]] = []
        train_epoch = trainer._train_epoch

        def timed_train_epoch(*args, **kwargs):
            synchronize(device)
            t0 = time.perf_counter()
            out = train_epoch(*args, **kwargs)
            synchronize(device)
            epoch_seconds.append(time.perf_counter() - t0)
            return out

        trainer._train_epoch = timed_train_epoch
        synchronize(device)
        t0 = time.perf_counter()
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=verbose,
                    callback_fn=lambda epoch, score: curve.append((epoch + 1, float(score))))
        synchronize(device)
        fit_seconds = time.perf_counter() - t0
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        best_epoch, best = 0, -float("inf")
        for epoch, score in curve:  # RecBole keeps the later checkpoint on a tie
            if score >= best:
                best_epoch, best = epoch, score
        cross = harness_metrics(model, test_data, split, item_map, user_map, seed, device)
    return {
        "ndcg@10": float(test["ndcg@10"]),
        "recall@10": float(test["recall@10"]),
        "harness": cross,
        "epoch_seconds_mean": float(np.mean(epoch_seconds)),
        "epochs_run": len(epoch_seconds),
        "best_epoch": best_epoch,
        "best_valid": best,
        "fit_seconds": fit_seconds,
        "batch": f"{RECBOLE_BATCH} samples",
        "params": int(sum(p.numel() for p in model.parameters())),
        "split_check": split_check,
    }


def run_ours(split, tmp: Path, device_name: str, seed: int, epochs: int, eval_every: int, patience: int) -> dict:
    from bench.runner import RunConfig, run_one
    from methods import METHODS

    cls = METHODS.get(OURS)
    overrides = {OURS: {"epochs": epochs, "eval_every": eval_every, "patience": patience, "max_len": MAX_LEN}}
    cfg = RunConfig(results_dir=tmp / "results", device=device_name, progress=False, overwrite=True, overrides=overrides)
    record = json.loads(run_one(cls, split, seed, cfg).read_text())
    eff = record["efficiency"]
    return {
        "ndcg@10": record["metrics"]["ndcg@10"],
        "recall@10": record["metrics"]["recall@10"],
        "epoch_seconds_mean": eff["epoch_seconds_mean"],
        "epochs_run": eff["epochs_run"],
        "best_epoch": eff["best_epoch"],
        "best_valid": record["training"].get("best_valid"),
        "fit_seconds": eff["fit_seconds"],
        "batch": f"{record['config']['batch_size']} windows",
        "params": eff["params_total"],
        "device_name": eff["device"],
    }


# ---- output -------------------------------------------------------------------------------
def render(rows: list[dict], fmt: str) -> str:
    from tabulate import tabulate

    headers = ["method", "implementation", "test NDCG@10", "test Recall@10", "s / epoch", "epochs (best)", "train batch", "device"]
    body = [
        [r["method"], r["implementation"], f"{r['ndcg@10']:.4f}", f"{r['recall@10']:.4f}", f"{r['epoch_seconds_mean']:.2f}",
         f"{r['epochs_run']} ({r['best_epoch']})", r["batch"], r["device"]]
        for r in rows
    ]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def markdown_report(rows, rec, ours, args, command, device_name, epochs, capped) -> str:
    from bench.provenance import git_info, package_versions

    ratio = rec["epoch_seconds_mean"] / ours["epoch_seconds_mean"]
    versions = package_versions()
    git = git_info()
    cap = (
        f"Both trainings were capped at {epochs} epochs to keep the CPU run short, so neither model is fully trained "
        "and the quality columns are not converged numbers."
        if capped
        else f"Up to {epochs} epochs with early stopping."
    )
    lines = [
        "<!-- generated by scripts/recbole_side_by_side.py; do not edit by hand, re-run the command below -->",
        "",
        f"# RecBole {versions.get('recbole', '?')} SASRec vs ours (`{OURS}`) on {DATASET}",
        "",
        "```",
        command,
        "```",
        "",
        render(rows, "github"),
        "",
        (f"Test metrics on the identical leave-one-out split ({rec['split_check']['test_pairs']} test users, full-catalog "
        f"ranking, no history masking). {cap} Validation every {args.eval_every} epochs, stop after {args.patience} "
        f"validations without improvement, best checkpoint on validation NDCG@10. Seconds per epoch: training pass "
        f"only (no validation), mean over the epochs run; RecBole / ours = {ratio:.1f}x."),
    ]
    if device_name.startswith("CPU"):
        lines.append(
            f"Timings on a shared 2-core CPU ({torch.get_num_threads()} torch thread(s)) while other work was running: "
            "expect noise of tens of percent; only the order of magnitude of the ratio is meaningful."
        )
    h = rec["harness"]
    lines += [
        "",
        (f"- Split check: passed. RecBole's test and validation (user, target) pairs equal `leave_one_out(dataset)` "
        f"({rec['split_check']['test_pairs']} / {rec['split_check']['valid_pairs']}), its histories equal ours cut to "
        f"the last {MAX_LEN} items, and its {rec['split_check']['train_samples']:,} training samples have exactly our "
        "training targets."),
        (f"- RecBole's model scored by our metric code (seeded tie-break): NDCG@10 {h['ndcg@10']:.4f}, "
        f"Recall@10 {h['recall@10']:.4f} (RecBole's evaluator: {rec['ndcg@10']:.4f} / {rec['recall@10']:.4f})."),
        (f"- Parameters: RecBole {rec['params']:,}, ours {ours['params']:,}. Best validation NDCG@10: RecBole "
        f"{rec['best_valid']:.4f}, ours {ours['best_valid']:.4f}. Fit time incl. validation: RecBole "
        f"{rec['fit_seconds']:.0f} s, ours {ours['fit_seconds']:.0f} s."),
        ("- Train batch: RecBole trains one sample per prefix (augmentation, loss at the last position), ours one "
        "window of up to 50 targets per row (loss at every position); both see every training target once per epoch. "
        "Other unmatched details (post-LN vs pre-LN block, initialisation, Adam betas) are listed in the script's docstring."),
        (f"- Versions: recbole {versions.get('recbole')}, torch {versions.get('torch')}, numpy {versions.get('numpy')}, "
        f"scipy {versions.get('scipy')}, pandas {versions.get('pandas')}; code {(git.get('git_sha') or '?')[:10]}"
        f"{' (dirty)' if git.get('git_dirty') else ''}; seed {args.seed}; device {device_name}."),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epoch cap for both (default: {CPU_DEFAULT_EPOCHS} on CPU, {GPU_DEFAULT_EPOCHS} on CUDA)")
    p.add_argument("--eval-every", type=int, default=5, help="validate every N epochs, both implementations (default 5, ours' default)")
    p.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping (default 5, ours' default)")
    p.add_argument("--output", type=Path, default=None, help="also write the table as Markdown to this file")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for both (default: torch's default); on a shared CPU 1 avoids oversubscription")
    p.add_argument("--verbose", action="store_true", help="show RecBole's INFO log")
    args = p.parse_args(argv)

    missing = missing_dependencies()
    if missing:
        print(f"error: RecBole peer dependencies missing: {', '.join(missing)}; install with: "
              f"pip install recbole==1.2.1 --no-deps && pip install -e '.[peer]'", file=sys.stderr)
        return 2
    from bench.errors import UserError
    from bench.provenance import command_line, hardware
    from bench.runner import resolve_device

    try:
        device = resolve_device(args.device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    epochs = args.epochs or (GPU_DEFAULT_EPOCHS if device.type == "cuda" else CPU_DEFAULT_EPOCHS)
    capped = args.epochs is not None or device.type != "cuda"
    eval_every = min(args.eval_every, epochs)
    if epochs < 1 or eval_every < 1 or args.patience < 1:
        print("error: --epochs, --eval-every and --patience must be positive", file=sys.stderr)
        return 2
    if epochs % eval_every:
        print(f"error: --epochs {epochs} is not a multiple of --eval-every {eval_every} (RecBole validates only "
              "every eval_every epochs, so the last epochs would go unvalidated)", file=sys.stderr)
        return 2
    args.eval_every = eval_every
    if args.threads is not None:
        if args.threads < 1:
            print("error: --threads must be positive", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    command = command_line()

    rb = patch_recbole()
    from bench.data.registry import load_dataset
    from bench.split import leave_one_out

    dataset = load_dataset(DATASET)
    split = leave_one_out(dataset)
    with tempfile.TemporaryDirectory(prefix="recbole-side-by-side-") as tmp:
        tmp = Path(tmp)
        print(f"[1/2] RecBole SASRec on {device} (up to {epochs} epochs) ...", file=sys.stderr, flush=True)
        rec = run_recbole(rb, dataset, split, tmp, device, args.seed, epochs, eval_every, args.patience, args.verbose)
        print(f"      split check passed: {rec['split_check']}", file=sys.stderr, flush=True)
        print(f"[2/2] ours ({OURS}) on {device} (up to {epochs} epochs) ...", file=sys.stderr, flush=True)
        ours = run_ours(split, tmp, str(device), args.seed, epochs, eval_every, args.patience)
    device_name = ours["device_name"] or hardware(device)["device_name"]
    rows = [
        {"method": "SASRec (CE)", "implementation": "RecBole", "device": device_name, **rec},
        {"method": "SASRec (CE)", "implementation": f"ours ({OURS})", "device": device_name, **ours},
    ]
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(markdown_report(rows, rec, ours, args, command, device_name, epochs, capped))
    h = rec["harness"]
    print(f"RecBole model scored by our metrics: NDCG@10 {h['ndcg@10']:.4f}, Recall@10 {h['recall@10']:.4f}")
    if capped:
        print(f"Epochs capped at {epochs} for both: quality numbers are not converged.")
    print(render(rows, "simple"))
    print(f"seconds per epoch, RecBole / ours: {rec['epoch_seconds_mean'] / ours['epoch_seconds_mean']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
