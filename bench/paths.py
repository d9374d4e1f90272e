"""Where a run reads and writes: resolved once, by the command line (or a script's own entry
point), from its options and the environment; everything below takes the resolved paths and
never reads the environment for them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "BENCH_DATA_DIR"
CACHE_DIR_ENV = "BENCH_CACHE_DIR"


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The data directory: the argument, else ``$BENCH_DATA_DIR``, else None (no local data)."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    return Path(chosen) if chosen is not None else None


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """The cache directory (canonical data, downloads, text embeddings): the argument, else
    ``$BENCH_CACHE_DIR``, else ``./datasets/cache`` in the current working directory."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.cwd() / "datasets" / "cache")


def default_cache_dir() -> Path:
    """The cache directory when none is given: ``$BENCH_CACHE_DIR``, else ``./datasets/cache``."""
    return resolve_cache_dir(None)


@dataclass(frozen=True)
class Paths:
    """The run's directories, resolved: ``data_dir`` None means there is no local data directory."""

    results_dir: Path
    cache_dir: Path
    data_dir: Path | None = None

    @classmethod
    def resolve(cls, results_dir: str | Path = "runs", data_dir: str | Path | None = None,
                cache_dir: str | Path | None = None) -> Paths:  # fmt: skip
        """The options given (None: not given), completed from the environment and the defaults."""
        return cls(Path(results_dir), resolve_cache_dir(cache_dir), resolve_data_dir(data_dir))
