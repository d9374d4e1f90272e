"""Shared command-line plumbing for the measurement scripts under ``scripts/``: the dataset
options every one of them takes, and the split they load from them (as a run does)."""

from __future__ import annotations

import argparse

from bench.data.registry import load_dataset
from bench.paths import Paths
from bench.runner import RunConfig
from bench.split import Split, leave_one_out


def add_dataset_arguments(parser: argparse.ArgumentParser, dataset: str = "scientific", preset: str = "cpu") -> None:
    """``--dataset``, ``--data-dir``, ``--cache-dir``, ``--preset`` and ``--threads``."""
    parser.add_argument("--dataset", default=dataset)
    parser.add_argument("--data-dir", default=None, help="folder holding <dataset>/ source files (default: $BENCH_DATA_DIR)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--preset", default=preset)
    parser.add_argument("--threads", type=int, default=1)


def load_split(args: argparse.Namespace) -> tuple[Split, RunConfig]:
    """The leave-one-out split of ``args.dataset`` and the run settings that located it (the
    directories resolved as a run resolves them: the options, else the environment, else the
    defaults)."""
    paths = Paths.resolve(data_dir=args.data_dir, cache_dir=args.cache_dir)
    settings = RunConfig(data_dir=paths.data_dir, cache_dir=paths.cache_dir)
    return leave_one_out(load_dataset(args.dataset, data_dir=settings.data_dir, cache_dir=settings.cache_dir)), settings
