#!/usr/bin/env python
"""Peer comparison: RecBole 1.2.1's classical models and ours on the identical split (ml-100k by default).

One row pair per method in ``PEERS`` (RecBole's BPR, Caser, SASRec, BERT4Rec, LightGCN
against our ``mf``, ``caser``, ``sasrec-ce``, ``bert4rec``, ``lightgcn``); a method of ours
that is not registered is skipped with a line that says so.

What it does
------------
1. Loads our canonical dataset (``--dataset``, default ml-100k; others from ``--data-dir`` or
   ``$BENCH_DATA_DIR``; ``bench.data.registry.load_dataset``) and our leave-one-out
   split (``bench.split.leave_one_out``).
2. Writes that dataset as RecBole atomic files, ``<tmp>/bench-<name>/bench-<name>.inter``
   (``user_id:token item_id:token timestamp:float``), with our remapped integer ids and each
   user's chronological *position* as the timestamp, so RecBole's sort reproduces our order
   exactly (no ties within a user are possible).  RecBole is configured with
   ``eval_args = {split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}`` and no
   filtering of any kind.
3. Checks, per method, that RecBole's split is ours: its test and validation (user, target)
   pairs must equal ``leave_one_out(dataset).test`` / ``.valid`` (mapped back through
   ``field2id_token``); for sequential models the test and validation histories must be our
   histories cut to the method's history length and the training targets exactly our
   training targets (every training item but each user's first); for general models
   (BPR, LightGCN) the training interactions must be exactly ours.  A mismatch aborts.
4. Trains RecBole's model (its own ``Trainer``: early stopping, best checkpoint, test
   evaluation with RecBole's evaluator) and ours (``bench.runner.execute``) with the same
   epoch cap, validation interval and patience, and prints one table: test NDCG@10 and
   Recall@10, seconds per training epoch, epochs, batch size, device, and the ratio of
   seconds per epoch (RecBole / ours).  RecBole's trained model is also scored with *our*
   metric code (same seeded tie-break as the harness) as a cross-check of the evaluators.

Protocol notes
--------------
* Masking.  RecBole's full-sort evaluation masks a user's earlier items for *general*
  recommenders (``repeatable = False``, its default: ``FullSortEvalDataLoader`` passes the
  training items, plus the validation item at test time, as ``history_index``) but not for
  sequential ones (``history_index = None``).  Ours therefore runs general methods (mf,
  lightgcn) with ``--mask-history`` (which removes exactly those items) and sequential ones
  without; the table says which.
* Both select the checkpoint on validation NDCG@10, validate every ``--eval-every`` epochs and
  stop after ``--patience`` validations without improvement (RecBole: ``stopping_step =
  patience - 1`` because it stops when the counter *exceeds* ``stopping_step``; it also
  counts a tie as an improvement, ours does not).
* Ties in the ranking: ours uses a seeded random tie-break; RecBole's evaluator uses
  ``torch.topk`` order.  With continuous scores ties are practically absent.

Hyperparameters
---------------
Each side uses its own defaults except where a row of ``PEERS`` matches them (the rows'
``recbole`` dicts and ``ours`` overrides).  SASRec is matched as far as the architectures
allow: hidden 64, 2 layers, 1 head, feed-forward 64, ReLU, LayerNorm eps 1e-8, dropout 0.5,
max length 50, full softmax cross-entropy, Adam lr 1e-3.  Differences that cannot be
configured away:

* SASRec training examples.  RecBole *augments*: every training prefix becomes one sample
  (history = up to 50 previous items, target = next item) and the loss is taken at the last
  position only (~97k padded sequences per epoch in batches of 2048 samples).  Ours cuts
  each user's training sequence into windows of up to 50 targets with the loss at *every*
  position (~2.5k windows in batches of 128).  Both see every training target once per
  epoch; RecBole recomputes each prefix from scratch, which is why its epochs cost more.
* SASRec block: RecBole's is BERT-style post-LN on left-aligned sequences, N(0, 0.02)
  initialisation, a softmax that includes the padding item, Adam betas (0.9, 0.999); ours is
  the paper's pre-LN on right-aligned sequences, Xavier initialisation, a softmax over real
  items, betas (0.9, 0.98).
* BPR / LightGCN: RecBole's regulariser for LightGCN is ``1e-5 * (||u0|| + ||p0|| + ||n0||) / B``
  (un-squared norms, ``EmbLoss(require_pow=False)``), ours the paper's
  ``reg * (||u0||^2 + ||p0||^2 + ||n0||^2) / (2B)``; RecBole's BPR has no regulariser and
  Xavier-normal initialisation.  Both draw one uniform negative per training pair.

Running it
----------
    pip install recbole==1.2.1 --no-deps
    pip install "pandas<3" colorlog texttable scikit-learn tensorboard pyyaml colorama
    python scripts/recbole_side_by_side.py --device cpu --threads 1 --methods mf,lightgcn --seeds 0,1,2 --output peers/x.md
    python scripts/recbole_side_by_side.py --device cuda --output peers/recbole_ml-100k_cuda.md
    python scripts/recbole_side_by_side.py --dataset beauty --data-dir ../shared/data --methods mf --epochs 200 --output peers/x.md

Without ``--epochs`` a CPU run caps every training at ``CPU_DEFAULT_EPOCHS`` (5) epochs
(RecBole's SASRec epoch is ~2 minutes on one core of a small machine), and a CUDA run uses
``GPU_DEFAULT_EPOCHS`` (200, with early stopping).  On a CPU shared with other jobs pass
``--threads 1``: two torch threads competing with another process were ~5x slower than one.

Compatibility fixes for RecBole 1.2.1 on numpy 2 / torch >= 2.6 / scipy >= 1.12 are applied
by :func:`patch_recbole`, in one place (see docs/protocol.md §8).  Exit code 2 with a
one-line error when recbole or a dependency its import needs is missing, or an option is bad.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("bench") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATASET = "ml-100k"
DEFAULT_MAX_LEN = 50  # history length for a sequential method whose Config has no max_len
RECBOLE_BATCH = 2048  # RecBole's default train_batch_size
CPU_DEFAULT_EPOCHS = 5  # RecBole's SASRec needs ~2 min per epoch on one core of this machine
GPU_DEFAULT_EPOCHS = 200  # ours' default; early stopping usually ends it sooner


@dataclass(frozen=True)
class Peer:
    """One compared method: RecBole's model and our registered method."""

    label: str  # row label
    ours: str  # our registered method name
    recbole: str  # RecBole model class name
    sequential: bool  # RecBole's model type; decides the split check and history masking
    recbole_config: dict = field(default_factory=dict)  # model settings on top of RecBole's defaults
    ours_overrides: dict = field(default_factory=dict)  # config overrides on top of our defaults
    batch_unit: str = "pairs"  # what one element of a RecBole training batch is
    ours_batch_unit: str = "pairs"  # ... and of ours


SASREC_MATCHED = {
    "n_layers": 2, "n_heads": 1, "hidden_size": 64, "inner_size": 64, "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5, "hidden_act": "relu", "layer_norm_eps": 1e-8, "loss_type": "CE",
    "MAX_ITEM_LIST_LENGTH": 50,
}  # fmt: skip

PEERS: list[Peer] = [
    Peer("MF (BPR)", "mf", "BPR", False),
    Peer("Caser", "caser", "Caser", True, {"loss_type": "CE"}, batch_unit="samples", ours_batch_unit="sequences"),
    Peer("SASRec (CE)", "sasrec-ce", "SASRec", True, SASREC_MATCHED, {"max_len": 50}, batch_unit="samples", ours_batch_unit="windows"),
    Peer("BERT4Rec", "bert4rec", "BERT4Rec", True, {"loss_type": "CE"}, batch_unit="samples", ours_batch_unit="sequences"),
    Peer("LightGCN", "lightgcn", "LightGCN", False),
]

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

    Returns the RecBole pieces the script uses.  Fixes (docs/protocol.md §8):

    * numpy aliases removed in numpy 2 (``np.float_``, ``np.complex_``, ``np.unicode_``,
      ``np.bool8``, ...), set before any recbole module is imported;
    * ``torch.load(weights_only=False)`` for the best-checkpoint reload in
      ``Trainer.evaluate`` (the checkpoint pickles RecBole's Config; torch >= 2.6 defaults to
      ``weights_only=True``), scoped to ``recbole.trainer.trainer``;
    * ``scipy.sparse.dok_matrix._update`` (removed in scipy 1.12; used by RecBole's graph
      models such as LightGCN to build the adjacency) restored as a dict update;
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
        import recbole.model.general_recommender  # noqa: F401  (imported here, before anomaly mode is reset)
        import recbole.model.sequential_recommender  # noqa: F401
        import recbole.trainer.trainer as rb_trainer
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, get_trainer, init_logger, init_seed
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
        get_model=get_model,
        get_trainer=get_trainer,
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


def rb_name(dataset) -> str:
    """The RecBole dataset name (and folder) of our exported copy of ``dataset``."""
    return f"bench-{dataset.name}"


def write_atomic_files(dataset, folder: Path) -> Path:
    """``<folder>/bench-<name>/bench-<name>.inter``: our ids, position within the user as time."""
    out = folder / rb_name(dataset)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{rb_name(dataset)}.inter"
    if path.exists():
        return path
    lengths = dataset.lengths()
    users = np.repeat(np.arange(dataset.n_users), lengths)
    position = np.arange(dataset.n_interactions) - np.repeat(dataset.offsets[:-1], lengths)
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in zip(users.tolist(), dataset.items.tolist(), position.tolist()))
    return path


def history_length(peer: Peer) -> int | None:
    """The history length both sides use for a sequential peer (None for general ones)."""
    if not peer.sequential:
        return None
    if "max_len" in peer.ours_overrides:
        return int(peer.ours_overrides["max_len"])
    from methods import METHODS

    default = getattr(METHODS.get(peer.ours).Config(), "max_len", None)
    return int(default) if default else DEFAULT_MAX_LEN


def recbole_config(rb, peer: Peer, dataset_name: str, data_path: Path, device: torch.device, seed: int, epochs: int, eval_every: int,
                   patience: int, verbose: bool):
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
        # split and evaluation
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "valid_metric_bigger": True,
        "eval_batch_size": 4096,
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
    if peer.sequential:
        config_dict["MAX_ITEM_LIST_LENGTH"] = history_length(peer)
        config_dict["train_neg_sample_args"] = None  # full softmax (loss_type CE)
    config_dict.update(peer.recbole_config)
    config = rb.Config(model=peer.recbole, dataset=dataset_name, config_dict=config_dict)
    config["device"] = device
    return config


def _tokens_to_ours(tokens: np.ndarray) -> np.ndarray:
    """RecBole internal id -> our id (index 0 is RecBole's [PAD], mapped to -1)."""
    return np.array([-1] + [int(t) for t in tokens[1:]], dtype=np.int64)


def _sorted_pairs(pairs: np.ndarray) -> np.ndarray:
    return pairs[np.lexsort(pairs.T[::-1])]


def check_split(split, rb_datasets, user_map: np.ndarray, item_map: np.ndarray, max_len: int | None) -> dict:
    """Assert that RecBole's train / valid / test are our leave-one-out split; return counts.

    ``max_len`` is the history length of a sequential model (RecBole's datasets then hold
    histories and augmented training samples); ``None`` for a general model."""
    train_ds, valid_ds, test_ds = rb_datasets
    out = {}
    for name, ours, ds in (("test", split.test, test_ds), ("valid", split.valid, valid_ds)):
        feat = ds.inter_feat
        users = user_map[feat["user_id"].numpy()]
        targets = item_map[feat["item_id"].numpy()]
        ours_pairs = dict(zip(ours.input.users.tolist(), ours.targets.tolist()))
        rb_pairs = dict(zip(users.tolist(), targets.tolist()))
        if len(rb_pairs) != len(users):
            raise AssertionError(f"RecBole's {name} set holds a user more than once")
        if rb_pairs != ours_pairs:
            diff = sorted(set(rb_pairs.items()) ^ set(ours_pairs.items()))[:5]
            raise AssertionError(f"RecBole's {name} (user, target) pairs differ from ours, e.g. {diff}")
        if max_len is not None:
            hist = item_map[feat["item_id_list"].numpy()]
            hist_len = feat["item_length"].numpy()
            row_of = {u: k for k, u in enumerate(ours.input.users.tolist())}
            for r, u in enumerate(users.tolist()):
                mine = ours.input.history[row_of[u]][-max_len:]
                theirs = hist[r, : hist_len[r]]
                if not np.array_equal(mine, theirs):
                    raise AssertionError(f"RecBole's {name} history of user {u} differs from ours (cut to {max_len})")
        out[f"{name}_pairs"] = len(rb_pairs)
    feat = train_ds.inter_feat
    rb_train = np.stack([user_map[feat["user_id"].numpy()], item_map[feat["item_id"].numpy()]], 1)
    rows, items = split.train.user_item_pairs()
    ours_train = np.stack([rows, items], 1)
    if max_len is not None:  # sequential: the targets are every training item but each user's first
        first = np.zeros(len(rows), dtype=bool)
        first[split.train.offsets[:-1][split.train.lengths > 0]] = True
        ours_train = ours_train[~first]
    a, b = _sorted_pairs(rb_train), _sorted_pairs(ours_train)
    if a.shape != b.shape or not np.array_equal(a, b):
        what = "training targets" if max_len is not None else "training interactions"
        raise AssertionError(f"RecBole's {what} differ from ours ({len(a)} vs {len(b)} (user, item) pairs)")
    out["train_samples"] = len(a)
    return out


@torch.no_grad()
def harness_metrics(model, test_data, split, item_map: np.ndarray, user_map: np.ndarray, seed: int, device: torch.device,
                    mask_history: bool) -> dict:
    """RecBole's trained model scored by our metric code, with the harness's tie-break (and,
    for general models, our history masking)."""
    from bench.metrics import ranks_from_scores, summarize, tiebreak_order
    from bench.runner import derive_seed

    n = split.n_items
    ours_to_rb = np.empty(n, dtype=np.int64)
    ours_to_rb[item_map[1:]] = np.arange(1, n + 1)
    cols = torch.from_numpy(ours_to_rb).to(device)
    tiebreak = tiebreak_order(n, derive_seed(seed, split.dataset.name, "tiebreak")).to(device)
    ev = split.test.input
    target_of = np.full(split.n_users, -1, dtype=np.int64)
    target_of[ev.users] = split.test.targets
    row_of = np.full(split.n_users, -1, dtype=np.int64)
    row_of[ev.users] = np.arange(len(ev.users))
    model.eval()
    ranks = []
    for interaction, _, _, _ in test_data:
        interaction = interaction.to(device)
        users = user_map[interaction["user_id"].cpu().numpy()]
        scores = model.full_sort_predict(interaction).view(len(users), -1)[:, cols].float()
        if mask_history:
            for r, u in enumerate(users.tolist()):
                scores[r, torch.from_numpy(ev.history[int(row_of[u])].astype(np.int64)).to(device)] = -torch.inf
        targets = torch.from_numpy(target_of[users]).to(device)
        ranks.append(ranks_from_scores(scores, targets, tiebreak).cpu().numpy())
    ranks = np.concatenate(ranks)
    if len(ranks) != len(split.test.targets):
        raise AssertionError("RecBole's test loader did not yield every test user once")
    return summarize(ranks)


def run_recbole(rb, peer: Peer, dataset, split, tmp: Path, device: torch.device, seed: int, epochs: int, eval_every: int,
                patience: int, verbose: bool) -> dict:
    write_atomic_files(dataset, tmp)
    with working_directory(tmp):
        config = recbole_config(rb, peer, rb_name(dataset), tmp, device, seed, epochs, eval_every, patience, verbose)
        rb.init_seed(config["seed"], config["reproducibility"])
        rb.init_logger(config)
        rb_dataset = rb.create_dataset(config)
        train_data, valid_data, test_data = rb.data_preparation(config, rb_dataset)
        user_map = _tokens_to_ours(rb_dataset.field2id_token["user_id"])
        item_map = _tokens_to_ours(rb_dataset.field2id_token["item_id"])
        split_check = check_split(split, (train_data._dataset, valid_data._dataset, test_data._dataset), user_map, item_map,
                                  history_length(peer))

        rb.init_seed(config["seed"], config["reproducibility"])
        model = rb.get_model(peer.recbole)(config, train_data._dataset).to(device)
        trainer = rb.get_trainer(config["MODEL_TYPE"], peer.recbole)(config, model)
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
        cross = harness_metrics(model, test_data, split, item_map, user_map, seed, device, mask_history=not peer.sequential)
    return {
        "ndcg@10": float(test["ndcg@10"]),
        "recall@10": float(test["recall@10"]),
        "harness": cross,
        "epoch_seconds_mean": float(np.mean(epoch_seconds)),
        "epochs_run": len(epoch_seconds),
        "best_epoch": best_epoch,
        "best_valid": best,
        "fit_seconds": fit_seconds,
        "batch": f"{config['train_batch_size']} {peer.batch_unit}",
        "params": int(sum(p.numel() for p in model.parameters())),
        "split_check": split_check,
    }


def ours_overrides(peer: Peer, epochs: int, eval_every: int, patience: int) -> dict:
    """Our method's overrides: the row's own, plus the shared epoch cap, validation interval and
    patience for whichever of those fields its Config has."""
    from methods import METHODS

    fields = {f.name for f in dataclasses.fields(METHODS.get(peer.ours).Config)}
    shared = {"epochs": epochs, "eval_every": eval_every, "patience": patience}
    return {**{k: v for k, v in shared.items() if k in fields}, **peer.ours_overrides}


def run_ours(peer: Peer, split, tmp: Path, device_name: str, seed: int, epochs: int, eval_every: int, patience: int) -> dict:
    from bench.runner import RunConfig, execute
    from methods import METHODS

    cls = METHODS.get(peer.ours)
    overrides = {peer.ours: ours_overrides(peer, epochs, eval_every, patience)}
    cfg = RunConfig(results_dir=tmp / "results", device=device_name, progress=False, overwrite=True, overrides=overrides,
                    mask_history=not peer.sequential)
    record = json.loads(execute(cls, split, seed, cfg).read_text())
    eff = record["efficiency"]
    batch = record["config"].get("batch_size")
    return {
        "ndcg@10": record["metrics"]["ndcg@10"],
        "recall@10": record["metrics"]["recall@10"],
        "epoch_seconds_mean": eff["epoch_seconds_mean"],
        "epochs_run": eff["epochs_run"],
        "best_epoch": eff["best_epoch"],
        "best_valid": record["training"].get("best_valid"),
        "fit_seconds": eff["fit_seconds"],
        "batch": f"{batch} {peer.ours_batch_unit}" if batch else "-",
        "params": eff["params_total"],
        "device_name": eff["device"],
    }


# ---- output -------------------------------------------------------------------------------
HEADERS = ["method", "implementation", "history masked", "test NDCG@10", "test Recall@10", "s / epoch", "RecBole / ours",
           "epochs (best)", "train batch", "params"]  # fmt: skip


def mean_std(values: list[float]) -> str:
    """One value as is; several as mean ± sample standard deviation."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def table_rows(results: list[dict]) -> list[list[str]]:
    """Two rows per compared method (RecBole, ours); with several seeds the quality cells are
    mean ± std over them, seconds per epoch the mean, epochs (best) listed per seed."""
    by_peer: dict[str, list[dict]] = {}
    for r in results:
        by_peer.setdefault(r["peer"].label, []).append(r)
    body = []
    for runs in by_peer.values():
        peer = runs[0]["peer"]
        seconds = {side: float(np.mean([r[side]["epoch_seconds_mean"] for r in runs])) for side in ("recbole", "ours")}
        ratio = seconds["recbole"] / seconds["ours"] if seconds["ours"] > 0 else float("nan")
        masked = "no" if peer.sequential else "yes"
        for impl, side, speed in (("RecBole", "recbole", ""), (f"ours ({peer.ours})", "ours", f"{ratio:.1f}x")):
            xs = [r[side] for r in runs]
            body.append([peer.label, impl, masked, mean_std([x["ndcg@10"] for x in xs]), mean_std([x["recall@10"] for x in xs]),
                         f"{seconds[side]:.2f}", speed, ", ".join(f"{x['epochs_run']} ({x['best_epoch']})" for x in xs), xs[0]["batch"],
                         f"{xs[0]['params']:,}"])
    return body


def render(results: list[dict], fmt: str) -> str:
    from tabulate import tabulate

    return tabulate(table_rows(results), headers=HEADERS, tablefmt=fmt, disable_numparse=True)


def markdown_report(results: list[dict], skipped: list[str], args, dataset_name: str, command: str, device_name: str, epochs: int,
                    rb_epochs: int, capped: bool) -> str:
    from bench.provenance import git_info, package_versions

    versions = package_versions()
    git = git_info()
    limits = f"{epochs} epochs" if rb_epochs == epochs else f"{rb_epochs} epochs for RecBole and {epochs} for ours"
    cap = (
        f"Trainings were capped at {limits} to keep the run short; a row whose best epoch is its last epoch was still "
        "improving and is not a converged number."
        if capped
        else f"Up to {limits} with early stopping."
    )
    users = results[0]["recbole"]["split_check"]["test_pairs"] if results else 0
    lines = [
        "<!-- generated by scripts/recbole_side_by_side.py; do not edit by hand, re-run the command below -->",
        "",
        f"# RecBole {versions.get('recbole', '?')} vs ours on {dataset_name}",
        "",
        "```",
        command,
        "```",
        "",
        render(results, "github"),
        "",
        (f"Test metrics on the identical leave-one-out split ({users} test users, full-catalog ranking). History masked: "
         "RecBole masks a user's earlier items for general models and not for sequential ones; ours does the same "
         f"(`--mask-history` for general methods). {cap} Validation every {args.eval_every} epochs, stop after "
         f"{args.patience} validations without improvement, best checkpoint on validation NDCG@10. Seconds per epoch: "
         "training pass only (no validation), mean over the epochs run; RecBole / ours is their ratio."),
    ]
    if device_name.startswith("CPU"):
        lines.append(
            f"Timings on a shared CPU ({torch.get_num_threads()} torch thread(s)) while other work was running: "
            "expect noise of tens of percent; only the order of magnitude of the ratio is meaningful."
        )
    lines.append("")
    for r in results:
        rec, ours, peer = r["recbole"], r["ours"], r["peer"]
        sc, h = rec["split_check"], rec["harness"]
        seed = f" seed {r['seed']}" if len(args.seeds) > 1 else ""
        kind = (f"histories equal ours cut to the last {history_length(peer)} items and its {sc['train_samples']:,} training "
                "samples have exactly our training targets") if peer.sequential else (
                f"its {sc['train_samples']:,} training interactions are exactly ours")
        lines.append(
            f"- {peer.label} (RecBole `{peer.recbole}` vs `{peer.ours}`){seed}: split check passed ({sc['test_pairs']} test / "
            f"{sc['valid_pairs']} validation pairs equal ours; {kind}). RecBole's model scored by our metric code: "
            f"NDCG@10 {h['ndcg@10']:.4f}, Recall@10 {h['recall@10']:.4f}. Best validation NDCG@10: RecBole "
            f"{rec['best_valid']:.4f}, ours {ours['best_valid']:.4f}. Fit time incl. validation: RecBole "
            f"{rec['fit_seconds']:.0f} s, ours {ours['fit_seconds']:.0f} s. RecBole settings beyond its defaults: "
            f"{json.dumps(peer.recbole_config) if peer.recbole_config else 'none'}; ours: "
            f"{json.dumps(peer.ours_overrides) if peer.ours_overrides else 'defaults'} (plus the shared epoch cap)."
        )
    for line in skipped:
        lines.append(f"- Skipped: {line}")
    lines += [
        "",
        (f"Versions: recbole {versions.get('recbole')}, torch {versions.get('torch')}, numpy {versions.get('numpy')}, "
         f"scipy {versions.get('scipy')}, pandas {versions.get('pandas')}; code {(git.get('git_sha') or '?')[:10]}"
         f"{' (dirty)' if git.get('git_dirty') else ''}; seed(s) {', '.join(map(str, args.seeds))}; device {device_name}. Unmatched training details "
         "per model are listed in the script's docstring."),
        "",
    ]
    return "\n".join(lines)


def select_peers(spec: str | None) -> list[Peer]:
    """``--methods`` (our names, comma-separated) -> rows of PEERS, in table order."""
    if not spec:
        return list(PEERS)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    known = {p.ours: p for p in PEERS}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"--methods: {', '.join(unknown)} not compared here; expected some of {', '.join(known)}")
    return [p for p in PEERS if p.ours in wanted]


def parse_seeds(spec: str) -> list[int]:
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {spec!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {spec!r}: expected distinct comma-separated integers, e.g. 0,1,2")
    return seeds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None,
                   help=f"our method names to compare, comma-separated (default: all of {', '.join(x.ours for x in PEERS)})")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"a registered dataset (default {DEFAULT_DATASET}, which ships with recbole)")
    p.add_argument("--data-dir", default=None, help="local data directory for datasets other than ml-100k (or $BENCH_DATA_DIR)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--seed", type=int, default=0, help="one seed for both sides (default 0)")
    p.add_argument("--seeds", default=None, help="several seeds, comma-separated (e.g. 0,1,2): quality cells become mean ± std")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epoch cap for both sides (default: {CPU_DEFAULT_EPOCHS} on CPU, {GPU_DEFAULT_EPOCHS} on CUDA)")
    p.add_argument("--recbole-epochs", type=int, default=None,
                   help="RecBole's own epoch cap when it should differ from --epochs (RecBole's augmented SASRec/Caser/BERT4Rec "
                        "epochs hold many more optimizer steps than ours)")
    p.add_argument("--eval-every", type=int, default=5, help="validate every N epochs, both implementations (default 5, ours' default)")
    p.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping (default 5)")
    p.add_argument("--output", type=Path, default=None, help="also write the table as Markdown (with the command) to this file")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for both (default: torch's default); on a shared CPU 1 avoids oversubscription")
    p.add_argument("--verbose", action="store_true", help="show RecBole's INFO log")
    args = p.parse_args(argv)

    try:
        peers = select_peers(args.methods)
        args.seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = missing_dependencies()
    if missing:
        print(f"error: RecBole peer dependencies missing: {', '.join(missing)}; install with: "
              f"pip install recbole==1.2.1 --no-deps && pip install -e '.[peer]'", file=sys.stderr)
        return 2
    from bench.errors import UserError
    from bench.provenance import command_line, hardware
    from bench.runner import resolve_device
    from methods import METHODS

    try:
        device = resolve_device(args.device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    epochs = args.epochs or (GPU_DEFAULT_EPOCHS if device.type == "cuda" else CPU_DEFAULT_EPOCHS)
    rb_epochs = args.recbole_epochs or epochs
    capped = args.epochs is not None or args.recbole_epochs is not None or device.type != "cuda"
    eval_every = min(args.eval_every, epochs, rb_epochs)
    if min(epochs, rb_epochs, eval_every, args.patience) < 1:
        print("error: --epochs, --recbole-epochs, --eval-every and --patience must be positive", file=sys.stderr)
        return 2
    if epochs % eval_every or rb_epochs % eval_every:
        print(f"error: --epochs {epochs} / --recbole-epochs {rb_epochs} must be multiples of --eval-every {eval_every} "
              "(RecBole validates only every eval_every epochs, so the last epochs would go unvalidated)", file=sys.stderr)
        return 2
    args.eval_every = eval_every
    if args.threads is not None:
        if args.threads < 1:
            print("error: --threads must be positive", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    command = command_line()

    registered = set(METHODS.names())
    skipped = [f"{x.label}: our `{x.ours}` is not registered (methods/__init__.py); RecBole's {x.recbole} not run"
               for x in peers if x.ours not in registered]
    for line in skipped:
        print(f"skip  {line}", file=sys.stderr, flush=True)
    peers = [x for x in peers if x.ours in registered]
    if not peers:
        print("error: none of the selected methods is registered here", file=sys.stderr)
        return 2

    rb = patch_recbole()
    from bench.data.registry import load_dataset
    from bench.paths import Paths
    from bench.split import leave_one_out

    paths = Paths.resolve(data_dir=args.data_dir)
    try:
        dataset = load_dataset(args.dataset, paths.data_dir, cache_dir=paths.cache_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split = leave_one_out(dataset)
    results: list[dict] = []
    device_name = hardware(device)["device_name"]
    with tempfile.TemporaryDirectory(prefix="recbole-side-by-side-") as tmp:
        tmp = Path(tmp)
        for k, peer in enumerate(peers, 1):
            for seed in args.seeds:
                at = f"[{k}/{len(peers)}{f' seed {seed}' if len(args.seeds) > 1 else ''}]"
                print(f"{at} RecBole {peer.recbole} on {device} (up to {rb_epochs} epochs) ...", file=sys.stderr, flush=True)
                rec = run_recbole(rb, peer, dataset, split, tmp / f"{peer.recbole}-{seed}", device, seed, rb_epochs, eval_every,
                                  args.patience, args.verbose)
                print(f"      split check passed: {rec['split_check']}", file=sys.stderr, flush=True)
                print(f"{at} ours ({peer.ours}) on {device} (up to {epochs} epochs) ...", file=sys.stderr, flush=True)
                ours = run_ours(peer, split, tmp / f"{peer.ours}-{seed}", str(device), seed, epochs, eval_every, args.patience)
                device_name = ours["device_name"] or device_name
                results.append({"peer": peer, "seed": seed, "recbole": rec, "ours": ours})
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(markdown_report(results, skipped, args, dataset.name, command, device_name, epochs, rb_epochs, capped))
    for r in results:
        h = r["recbole"]["harness"]
        print(f"{r['peer'].label} seed {r['seed']}: RecBole's model scored by our metrics: NDCG@10 {h['ndcg@10']:.4f}, Recall@10 {h['recall@10']:.4f}")
    if capped:
        print(f"Epochs capped (RecBole {rb_epochs}, ours {epochs}): a row whose best epoch is its last was still improving.")
    print(render(results, "simple"))
    for line in skipped:
        print(f"skipped: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
