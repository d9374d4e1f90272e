"""scripts/recbole_side_by_side.py: the table of compared methods and how rows are chosen
(the RecBole runs themselves are too slow for the test suite)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from methods import METHODS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "recbole_side_by_side.py"


@pytest.fixture(scope="module")
def sbs():
    spec = importlib.util.spec_from_file_location("recbole_side_by_side", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_peer_table_covers_the_classical_baselines(sbs) -> None:
    assert [p.ours for p in sbs.PEERS] == ["mf", "caser", "sasrec-ce", "bert4rec", "lightgcn"]
    assert [p.recbole for p in sbs.PEERS] == ["BPR", "Caser", "SASRec", "BERT4Rec", "LightGCN"]
    assert {p.ours for p in sbs.PEERS if not p.sequential} == {"mf", "lightgcn"}


def test_select_peers(sbs) -> None:
    assert [p.ours for p in sbs.select_peers("lightgcn, mf")] == ["mf", "lightgcn"]  # table order
    assert sbs.select_peers(None) == sbs.PEERS
    with pytest.raises(ValueError, match="--methods: gru4rec not compared"):
        sbs.select_peers("mf,gru4rec")


def test_ours_overrides_set_only_fields_the_config_has(sbs) -> None:
    peer = next(p for p in sbs.PEERS if p.ours == "sasrec-ce")
    assert sbs.ours_overrides(peer, 7, 1, 3) == {"epochs": 7, "eval_every": 1, "patience": 3, "max_len": 50}
    fake = dataclasses.replace(peer, ours="ials", ours_overrides={})
    fields = {f.name for f in dataclasses.fields(METHODS.get("ials").Config)}
    assert set(sbs.ours_overrides(fake, 7, 1, 3)) == {"eval_every", "patience"} <= fields  # ials has no `epochs`
    assert sbs.history_length(peer) == 50 and sbs.history_length(sbs.PEERS[0]) is None


def test_unregistered_methods_are_skipped_with_a_line(sbs, monkeypatch, capsys) -> None:
    ghost = sbs.Peer("Ghost", "ghost-method", "Ghost", True)
    monkeypatch.setattr(sbs, "PEERS", [ghost])
    if sbs.missing_dependencies():
        pytest.skip("RecBole peer dependencies are not installed")
    assert sbs.main(["--methods", "ghost-method", "--device", "cpu", "--epochs", "1", "--eval-every", "1"]) == 2
    err = capsys.readouterr().err
    assert "skip  Ghost: our `ghost-method` is not registered" in err and "none of the selected methods is registered" in err


def _run(ndcg: float, seconds: float) -> dict:
    return {"ndcg@10": ndcg, "recall@10": 2 * ndcg, "epoch_seconds_mean": seconds, "epochs_run": 10, "best_epoch": 5,
            "batch": "2048 pairs", "params": 1000}


def test_table_rows_aggregate_seeds(sbs) -> None:
    peer = sbs.PEERS[0]
    one = sbs.table_rows([{"peer": peer, "seed": 0, "recbole": _run(0.1, 4.0), "ours": _run(0.2, 1.0)}])
    assert one[0][3:7] == ["0.1000", "0.2000", "4.00", ""] and one[1][3:7] == ["0.2000", "0.4000", "1.00", "4.0x"]
    three = sbs.table_rows([{"peer": peer, "seed": s, "recbole": _run(0.1 + 0.01 * s, 4.0 + s), "ours": _run(0.2, 1.0)} for s in range(3)])
    assert len(three) == 2
    assert three[0][3] == "0.1100 ± 0.0100" and three[0][5] == "5.00" and three[1][6] == "5.0x"
    assert three[1][3] == "0.2000 ± 0.0000" and three[1][7] == "10 (5), 10 (5), 10 (5)"


def test_parse_seeds(sbs) -> None:
    assert sbs.parse_seeds("0,1, 2") == [0, 1, 2]
    for bad in ("0,x", "1,1", ","):
        with pytest.raises(ValueError, match="--seeds"):
            sbs.parse_seeds(bad)


def test_bad_options_exit_2(sbs, capsys) -> None:
    assert sbs.main(["--methods", "nope"]) == 2
    assert "--methods: nope not compared" in capsys.readouterr().err


def test_run_ours_trains_and_reads_back_our_record(sbs, tiny_split, tmp_path) -> None:
    """Our side of a row goes through the harness that writes records (no RecBole needed)."""
    peer = next(p for p in sbs.PEERS if p.ours == "lightgcn")
    peer = dataclasses.replace(peer, ours_overrides={"dim": 8, "batch_size": 32})
    row = sbs.run_ours(peer, tiny_split, tmp_path, "cpu", 0, 2, 1, 1)
    assert row["epochs_run"] == 2 and 0.0 <= row["recall@10"] <= 1.0 and row["params"] > 0
    assert row["batch"] == "32 pairs"
    record = next((tmp_path / "results").rglob("seed0.json"))
    assert "mask-history" in str(record)  # a general method is scored with the history masked, as RecBole does
