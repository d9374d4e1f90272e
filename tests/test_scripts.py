"""The measurement scripts run end to end at a tiny size (their logic, not their numbers)."""

from __future__ import annotations

import subprocess
import sys
import json
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


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_reads_the_epoch_time_of_earlier_code_from_its_records(tmp_path: Path) -> None:
    speed = _load_script("bench_speed")
    rec = tmp_path / "beauty" / "caser" / "seed0.json"
    rec.parent.mkdir(parents=True)
    rec.write_text(json.dumps({"efficiency": {"epoch_seconds_mean": 86.366}, "provenance": {"git_sha": "679a8e4c0ffee"}}))
    assert speed.before_epoch(tmp_path, "beauty", "caser") == "86.37 (679a8e4, fp32)"  # records made before --precision were fp32
    assert speed.before_epoch(tmp_path, "beauty", "hgn") == "-"


def test_cornac_side_by_side_takes_only_a_record_of_the_same_settings(tmp_path: Path, tiny_split) -> None:
    """--ours-record: a record made at other settings, another seed or on other data is refused,
    naming what differs (our side's numbers must come from the run being compared)."""
    import argparse
    import json

    sbs = _load_script("cornac_tiger_side_by_side")
    config = json.loads(json.dumps(sbs.preset_settings("cpu")))
    assert config["beam"] == 100 and config["rq_epochs"] == 500  # tiger's declared cpu preset
    args = argparse.Namespace(preset="cpu", seed=0, timing_epochs=1)
    record = {"method": "tiger", "seed": 0, "config": {**config, "d_model": 128},
              "provenance": {"data_fingerprint": "0000"}, "metrics": {}, "dataset": tiny_split.dataset.name}  # fmt: skip
    path = tmp_path / "seed0.json"
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit) as err:
        sbs.ours_from_record(path, tiny_split, None, args, "cpu")
    message = str(err.value)
    assert "d_model: record 128, preset 64" in message and "data fingerprint" in message
    record.update(config=config, seed=1, provenance={"data_fingerprint": tiny_split.dataset.fingerprint})
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="asked tiger seed 0") as err:
        sbs.ours_from_record(path, tiny_split, None, args, "cpu")
    assert "d_model" not in str(err.value) and "fingerprint" not in str(err.value)
