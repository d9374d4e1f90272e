"""Regression tracking: re-run the quick default suite (ml-100k, seeded, CPU) and compare
it with the stored reference records in tests/reference/quick with `bench compare`.

Regenerate the reference after an intended change of results with::

    python -m bench run --results-dir tests/reference/quick --device cpu --threads 1 --precision fp32 --quiet --overwrite

One thread and fp32 make the CPU arithmetic independent of the machine's core count and bf16 support.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.compare import DEFAULT_TOLERANCE, compare, parse_tolerances
from bench.results import load_records

REFERENCE = Path(__file__).parent / "reference" / "quick"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="the ml-100k copy ships in the recbole wheel"),
]


def test_reference_covers_the_quick_suite():
    from bench.cli import QUICK_DATASETS, QUICK_METHODS, QUICK_TAG

    keys = {r.key for r in load_records(REFERENCE)}
    assert keys == {(f"{QUICK_DATASETS}@{QUICK_TAG}", m, 0) for m in QUICK_METHODS.split(",")}  # its own table: epoch-capped


def _run_and_compare(tmp_path, reference: Path, what: str, *extra: str) -> None:
    """Run the CLI on one thread in fp32 into tmp_path and compare with ``reference``."""
    threads = torch.get_num_threads()
    out = tmp_path / "results"
    argv = ["run", *extra, "--results-dir", str(out), "--device", "cpu", "--threads", "1", "--precision", "fp32", "--quiet",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    try:
        rc = main(argv)
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    ok, table = compare(reference, out, parse_tolerances([]))
    print(table)
    assert ok, f"{what} regressed beyond tolerance {DEFAULT_TOLERANCE}:\n{table}"


def test_quick_suite_matches_reference(tmp_path, capsys):
    _run_and_compare(tmp_path, REFERENCE, "the quick suite")


GENERATIVE_REFERENCE = Path(__file__).parent / "reference" / "tiger-tiny"
GENERATIVE_CONFIG = Path(__file__).parent / "reference" / "tiger_tiny.toml"


def test_tiny_generative_run_matches_reference(tmp_path, capsys):
    """The semantic-ID stack end to end (text embeddings, RQ-VAE, seq2seq, constrained beam) at
    a tiny size on ml-100k.  Regenerate after an intended change with::

        python -m bench run --methods tiger --datasets ml-100k --config tests/reference/tiger_tiny.toml \\
            --results-dir tests/reference/tiger-tiny --device cpu --threads 1 --precision fp32 --quiet --overwrite
    """
    _run_and_compare(tmp_path, GENERATIVE_REFERENCE, "the tiny generative run", "--methods", "tiger", "--datasets", "ml-100k",
                     "--config", str(GENERATIVE_CONFIG))
