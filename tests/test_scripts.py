"""The measurement scripts run end to end at a tiny size (their logic, not their numbers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_gpu_check_logic_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--device", "cpu", "--precision", "fp32",
                           "--output", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    for row in ("tiger: training epoch", "tiger: test pass, beam 20", "tiger: test pass, beam 100", "sasrec-ce: training epoch"):
        assert row in text


@pytest.mark.slow
def test_speed_benchmark_prints_fp32_and_bf16_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "speed.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_speed.py"), "--users", "200", "--methods", "mf,sasrec-ce",
                           "--threads", "1", "--output", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "train inter./s fp32" in text and "train inter./s bf16" in text and "| sasrec-ce" in text
