"""The command line: clear one-line errors with exit code 2 and nothing written, config
files and overrides, ``list``, ``leaderboard`` and ``compare``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.config import apply_overrides, load_config_file, merge_overrides, parse_set_options
from bench.errors import UserError
from bench.metrics import METRIC_KEYS, summarize
from bench.results import record_path, write_record
from methods import METHODS

pytestmark = pytest.mark.usefixtures("single_thread")


def cli(capsys, *args: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, err: str, *fragments: str) -> str:
    """Exit 2 and exactly one line on stderr, starting 'error:', holding every fragment."""
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.chdir(tmp_path)  # anything written relative to the cwd stays in tmp_path
    (tmp_path / "data").mkdir()
    return {"data": tmp_path / "data", "cache": tmp_path / "cache", "results": tmp_path / "results", "root": tmp_path}


def run_args(d: dict[str, Path], *extra: str) -> list[str]:
    return ["run", "--data-dir", str(d["data"]), "--cache-dir", str(d["cache"]), "--results-dir", str(d["results"]),
            "--no-download", "--quiet", "--device", "cpu", *extra]  # fmt: skip


def written(d: dict[str, Path]) -> list[Path]:
    return [p for key in ("results", "cache") if d[key].exists() for p in d[key].rglob("*") if p.is_file()]


# ---- bad input: exit 2, one line, nothing written ----------------------------------------
def test_unknown_method_in_process(capsys, dirs) -> None:
    rc, out, err = cli(capsys, *run_args(dirs, "--methods", "pop,sasrc", "--datasets", "ml-1m"))
    assert_user_error(rc, err, "unknown method 'sasrc'", "Did you mean 'sasrec'")
    assert not dirs["results"].exists() and written(dirs) == []


def test_unknown_method_real_exit_code(dirs) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *run_args(dirs, "--methods", "sasrc")],
        capture_output=True, text=True, cwd=dirs["root"], timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'sasrec'" in lines[0], proc.stderr
    assert not dirs["results"].exists() and written(dirs) == []


def test_unknown_dataset(capsys, dirs) -> None:
    rc, _, err = cli(capsys, *run_args(dirs, "--methods", "pop", "--datasets", "beuaty"))
    assert_user_error(rc, err, "unknown dataset 'beuaty'", "Did you mean 'beauty'")
    assert written(dirs) == []


@pytest.mark.parametrize(
    "option, fragments",
    [
        ("sasrec.hiden=32", ("hiden", "Did you mean 'hidden'")),  # unknown field
        ("sasrec.hidden=abc", ("sasrec.hidden", "int", "'abc'")),  # bad type
        ("sasrec.epochs=2.5", ("sasrec.epochs", "int")),  # not an integer
        ("sasrec.dropout=lots", ("sasrec.dropout", "float")),
        ("sasrec.hidden", ("SECTION.FIELD=VALUE",)),  # bad syntax
        ("hidden=32", ("SECTION.FIELD=VALUE",)),
        ("sasrc.hidden=32", ("sasrc", "Did you mean 'sasrec'")),  # unknown section
    ],
)
def test_bad_set_option(capsys, dirs, option: str, fragments: tuple[str, ...]) -> None:
    rc, _, err = cli(capsys, *run_args(dirs, "--methods", "sasrec", "--datasets", "ml-1m", "--set", option))
    assert_user_error(rc, err, *fragments)
    assert written(dirs) == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seeds", "0,x"], "--seeds"),
        (["--select-metric", "ndcg@7"], "--select-metric"),
        (["--device", "tpu"], "--device"),
        (["--methods", " , "], "--methods"),
        (["--tag", "CPU small"], "--tag"),
        (["--tag", "mask-history"], "--tag"),
    ],
)
def test_other_bad_options(capsys, dirs, args: list[str], fragment: str) -> None:
    argv = run_args(dirs, "--methods", "pop", "--datasets", "ml-1m")
    argv = argv[: argv.index("--device")] + argv[argv.index("--device") + 2 :] + args
    rc, _, err = cli(capsys, *argv)
    assert_user_error(rc, err, fragment)
    assert written(dirs) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(capsys, dirs) -> None:
    argv = [a for a in run_args(dirs, "--methods", "pop", "--datasets", "ml-1m") if a != "cpu"]
    argv[argv.index("--device") + 1 : argv.index("--device") + 1] = ["cuda"]
    rc, _, err = cli(capsys, *argv)
    assert_user_error(rc, err, "--device cuda", "no CUDA")
    assert written(dirs) == []


def test_missing_data_offline(capsys, dirs) -> None:
    rc, _, err = cli(capsys, *run_args(dirs, "--methods", "pop", "--datasets", "ml-1m"))
    line = assert_user_error(rc, err, "'ml-1m' is not available", "--data-dir")
    assert "downloading is off" in line
    assert written(dirs) == [] and not dirs["results"].exists()


def test_data_dir_that_does_not_exist(capsys, dirs) -> None:
    argv = run_args(dirs, "--methods", "pop", "--datasets", "beauty")
    argv[argv.index("--data-dir") + 1] = str(dirs["root"] / "nowhere")
    rc, _, err = cli(capsys, *argv)
    assert_user_error(rc, err, "nowhere", "does not exist")
    assert written(dirs) == []


@pytest.mark.parametrize("damage", ["truncated-json", "bad-line"])
def test_malformed_local_file_names_the_file(capsys, dirs, damage: str) -> None:
    folder = dirs["data"] / "beauty"
    folder.mkdir()
    maps = json.dumps({"id2user": {"1": "U1", "2": "U2"}, "id2item": {"1": "A", "2": "B", "3": "C"}}, indent=1)
    if damage == "truncated-json":
        (folder / "sequential_data.txt").write_text("1 1 2 3\n2 3 2 1\n")
        (folder / "datamaps.json").write_text(maps[: len(maps) // 2])
        expected = ("datamaps.json", "not valid JSON")
    else:
        (folder / "sequential_data.txt").write_text("1 1 2 3\n2\n")
        (folder / "datamaps.json").write_text(maps)
        expected = ("sequential_data.txt line 2",)
    rc, _, err = cli(capsys, *run_args(dirs, "--methods", "pop", "--datasets", "beauty"))
    assert_user_error(rc, err, *expected)
    assert not dirs["results"].exists() and not (dirs["cache"] / "canonical").exists()


def test_interrupt_exits_130(capsys, dirs, registered_tiny, monkeypatch) -> None:
    import bench.grid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.grid, "run_one", interrupted)
    d = dict(dirs, data=registered_tiny["data"])
    rc, _, err = cli(capsys, *run_args(d, "--methods", "pop", "--datasets", "tinyds"))
    assert rc == 130 and "interrupted" in err
    assert not dirs["results"].exists()


# ---- list, run, config -------------------------------------------------------------------
def test_list(capsys, dirs) -> None:
    rc, out, _ = cli(capsys, "list", "--data-dir", dirs["data"])
    assert rc == 0
    for name in METHODS.names() + ["beauty", "ml-1m", "yelp"]:
        assert name in out
    assert "22,363" in out  # counts of beauty


def test_run_with_config_file_and_set_override(capsys, dirs, registered_tiny) -> None:
    d = dict(dirs, data=registered_tiny["data"])
    config = dirs["root"] / "tiny.toml"
    config.write_text(
        "[sasrec]\nhidden = 8\nlayers = 1\nmax_len = 6\nepochs = 2\neval_every = 1\nbatch_size = 16\n\n[mf]\ndim = 8\nepochs = 1\n"
    )
    rc, out, err = cli(capsys, *run_args(d, "--methods", "pop,sasrec", "--datasets", "tinyds", "--seeds", "0,1",
                                         "--config", config, "--set", "sasrec.hidden=16", "--leaderboard", dirs["root"] / "lb.md"))  # fmt: skip
    assert rc == 0, err
    assert "4 run(s) written, 0 skipped" in out
    rec = json.loads(record_path(dirs["results"], "tinyds", "sasrec", 1).read_text())
    assert rec["config"]["hidden"] == 16  # --set wins over the file
    assert rec["config"]["epochs"] == 2 and rec["config"]["max_len"] == 6  # the file applies
    assert rec["protocol"]["history_cap"] == 6 and rec["efficiency"]["epochs_run"] <= 2
    main_table = table((dirs["root"] / "lb.md").read_text(), "tinyds")
    assert sorted(main_table) == ["pop", "sasrec"] and main_table["sasrec"]["n"] == "2"  # one row over both seeds

    rc, out, _ = cli(capsys, *run_args(d, "--methods", "pop", "--datasets", "tinyds", "--seeds", "0,1"))
    assert rc == 0 and "0 run(s) written, 2 skipped" in out and "2 exist and will be skipped" in out


def test_tagged_runs_are_kept_apart(capsys, dirs, registered_tiny) -> None:
    d = dict(dirs, data=registered_tiny["data"])
    board = dirs["root"] / "lb.md"
    rc, out, err = cli(capsys, *run_args(d, "--methods", "pop", "--datasets", "tinyds", "--tag", "cpu-small", "--leaderboard", board))
    assert rc == 0, err
    rec = json.loads(record_path(dirs["results"], "tinyds", "pop", 0, "cpu-small").read_text())
    assert rec["protocol"]["tag"] == "cpu-small" and rec["protocol"]["variant"] == "cpu-small"
    assert not record_path(dirs["results"], "tinyds", "pop", 0).exists()
    text = board.read_text()
    assert "## tinyds@cpu-small" in text and "Tagged runs (cpu-small)" in text
    rc, out, err = cli(capsys, *run_args(d, "--methods", "pop", "--datasets", "tinyds", "--tag", "cpu-small", "--mask-history"))
    assert rc == 0 and record_path(dirs["results"], "tinyds", "pop", 0, "mask-history+cpu-small").is_file()


@pytest.mark.parametrize(
    "text, fragment",
    [("[sasrec]\nhidden = \n", "not valid TOML"), ("[sasrc]\nhidden = 8\n", "Did you mean 'sasrec'"),
     ("hidden = 8\n", "one table per section"), ("[sasrec]\nhidden = 'big'\n", "sasrec.hidden")],
)  # fmt: skip
def test_bad_config_file(capsys, dirs, text: str, fragment: str) -> None:
    config = dirs["root"] / "bad.toml"
    config.write_text(text)
    rc, _, err = cli(capsys, *run_args(dirs, "--methods", "sasrec", "--datasets", "ml-1m", "--config", config))
    assert_user_error(rc, err, fragment)
    rc, _, err = cli(capsys, *run_args(dirs, "--methods", "sasrec", "--config", dirs["root"] / "absent.toml"))
    assert_user_error(rc, err, "absent.toml", "no such file")
    assert written(dirs) == []


def test_config_coercion_and_layering(tmp_path: Path) -> None:
    @dataclass
    class C:
        beam: int | None = None
        k: int = 3
        lr: float = 0.1
        flag: bool = False
        name: str = "x"
        ks: tuple[int, ...] = (5, 10)

    assert apply_overrides(C(), {"beam": "20", "k": "1e3", "lr": "2e-4", "flag": "yes", "ks": "1,2"}, "c") == C(20, 1000, 2e-4, True, "x", (1, 2))
    assert apply_overrides(C(beam=5), {"beam": "none"}, "c").beam is None
    for bad in ("2.5", "2.5e0", True, "ten"):
        with pytest.raises(UserError, match=r"option c\.k: expected a value of type int"):
            apply_overrides(C(), {"k": bad}, "c")
    with pytest.raises(UserError, match="option c.flag"):
        apply_overrides(C(), {"flag": "maybe"}, "c")
    assert parse_set_options(["a.x=1", "b.y = 2 ", "a.z=p=q"]) == {"a": {"x": "1", "z": "p=q"}, "b": {"y": "2"}}
    assert merge_overrides({"a": {"x": 1, "y": 1}}, {"a": {"y": 2}, "b": {"z": 3}}) == {"a": {"x": 1, "y": 2}, "b": {"z": 3}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"sasrec": {"hidden": 32}}))
    assert load_config_file(path) == {"sasrec": {"hidden": 32}}


# ---- leaderboard -------------------------------------------------------------------------
def fake_record(results: Path, dataset: str, method: str, seed: int, metrics: dict, ranks=None, fingerprint="fp1", gpu=None) -> Path:
    ranks = np.zeros(10, dtype=np.int64) if ranks is None else ranks
    hardware = {"device": "cuda" if gpu else "cpu", **({"gpu": gpu} if gpu else {})}
    record = {
        "dataset": dataset, "method": method, "seed": seed, "metrics": metrics,
        "protocol": {"history_cap": 50}, "efficiency": {"device": gpu or "CPU (test)", "epoch_seconds_mean": 1.5, "test_users_per_second": 1000.0},
        "dataset_info": {"users": 10, "items": 20, "interactions": 100},
        "provenance": {"data_fingerprint": fingerprint, "hardware": hardware},
    }  # fmt: skip
    path = record_path(results, dataset, method, seed)
    write_record(path, record, ranks, fingerprint)
    return path


def metrics_of(value: float, **changes) -> dict:
    m = {k: value for k in METRIC_KEYS}
    m.update(changes)
    return m


def table(text: str, dataset: str) -> dict[str, dict[str, str]]:
    """The markdown table of ``dataset`` as {method: {column: cell}}."""
    section = text.split(f"## {dataset}\n", 1)[1].split("\n## ", 1)[0]
    first = section[section.index("\n|") + 1 :].split("\n\n", 1)[0]  # the main table; supplementary tables follow it
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in first.splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    return {r[0]: dict(zip(header, r)) for r in body}


@pytest.fixture
def board(tmp_path: Path) -> Path:
    res = tmp_path / "res"
    fake_record(res, "beauty", "alpha", 0, metrics_of(0.1))
    fake_record(res, "beauty", "alpha", 1, metrics_of(0.3))
    fake_record(res, "beauty", "beta", 0, metrics_of(0.25, **{"hit@100": 0.99}))
    fake_record(res, "beauty", "beta", 1, metrics_of(0.25, **{"hit@100": None}))  # missing for one seed
    fake_record(res, "beauty", "gamma", 0, {k: v for k, v in metrics_of(0.05).items() if k != "recall@20"})  # key absent
    fake_record(res, "beauty", "gamma", 1, metrics_of(0.05))
    fake_record(res, "ml-1m", "alpha", 0, metrics_of(0.5), gpu="NVIDIA H100")
    return res


def test_leaderboard_cells(capsys, board: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "lb.md"
    rc, _, _ = cli(capsys, "leaderboard", "--results-dir", board, "--output", out_file)
    assert rc == 0
    text = out_file.read_text()
    beauty = table(text, "beauty")
    assert list(beauty) == ["beta", "alpha", "gamma"]  # by mean ndcg@10
    assert beauty["alpha"]["n"] == "2" and beauty["gamma"]["n"] == "2"
    assert beauty["alpha"]["ndcg@10"] == "0.2000 ± 0.1414"  # mean ± sample std
    assert beauty["beta"]["ndcg@10"] == "**0.2500 ± 0.0000**"  # best mean in bold
    assert not beauty["alpha"]["ndcg@10"].startswith("**")
    # a metric missing in any seed is "—" and never averaged over the seeds that have it
    assert beauty["beta"]["hit@100"] == "—" and beauty["gamma"]["recall@20"] == "—"
    assert beauty["alpha"]["hit@100"] == "**0.2000 ± 0.1414**"  # beta's 0.99 does not win
    assert beauty["gamma"]["recall@10"] == "0.0500 ± 0.0000"
    assert beauty["alpha"]["s/epoch"] == "—" and beauty["alpha"]["device"].startswith("CPU only")
    ml = table(text, "ml-1m")
    assert ml["alpha"]["n"] == "1" and ml["alpha"]["ndcg@10"] == "**0.5000**"
    assert ml["alpha"]["s/epoch"] == "1.50" and ml["alpha"]["device"] == "NVIDIA H100"


def test_leaderboard_is_deterministic_and_check(capsys, board: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "lb.md"
    rc, _, err = cli(capsys, "leaderboard", "--results-dir", board, "--output", out_file, "--check")
    assert rc == 1 and "stale" in err  # absent
    assert cli(capsys, "leaderboard", "--results-dir", board, "--output", out_file)[0] == 0
    first = out_file.read_text()
    # the same records written in another order render identically
    other = tmp_path / "res2"
    for path in sorted(board.rglob("*.json"), reverse=True):
        target = other / path.relative_to(board)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.with_name(path.name.replace(".json", ".ranks.npz")), target.with_name(target.name.replace(".json", ".ranks.npz")))
        shutil.copy(path, target)
    assert cli(capsys, "leaderboard", "--results-dir", other, "--output", tmp_path / "lb2.md")[0] == 0
    # the banner names the records' directory (it says where the board comes from); the rest is identical
    assert (tmp_path / "lb2.md").read_text() == first.replace(f"from {board.as_posix()}/", f"from {other.as_posix()}/")
    assert f"from {board.as_posix()}/" in first.splitlines()[0]
    assert cli(capsys, "leaderboard", "--results-dir", board, "--output", out_file)[0] == 0
    assert out_file.read_text() == first
    assert cli(capsys, "leaderboard", "--results-dir", board, "--output", out_file, "--check")[0] == 0

    fake_record(board, "beauty", "delta", 0, metrics_of(0.9))  # a new record makes it stale
    rc, _, err = cli(capsys, "leaderboard", "--results-dir", board, "--output", out_file, "--check")
    assert rc == 1 and "stale" in err
    assert cli(capsys, "leaderboard", "--results-dir", board, "--output", out_file)[0] == 0
    assert cli(capsys, "leaderboard", "--results-dir", board, "--output", out_file, "--check")[0] == 0
    assert "| delta" in out_file.read_text() and not list(tmp_path.glob("*.tmp"))


def test_leaderboard_renders_a_minimal_record(capsys, tmp_path: Path) -> None:
    """A record with only the fields load_records requires still renders."""
    write_record(record_path(tmp_path / "res", "d", "m", 0), {"dataset": "d", "method": "m", "seed": 0, "metrics": {"ndcg@10": 0.1}}, np.zeros(3), "fp")
    fake_record(tmp_path / "res", "d", "n", 0, metrics_of(0.2))
    rc, _, err = cli(capsys, "leaderboard", "--results-dir", tmp_path / "res", "--output", tmp_path / "lb.md")
    assert rc == 0, err
    cells = table((tmp_path / "lb.md").read_text(), "d")
    assert cells["m"]["ndcg@10"] == "0.1000" and cells["m"]["recall@10"] == "—" and cells["n"]["ndcg@10"] == "**0.2000**"


def test_leaderboard_names_settings_that_differ_from_the_defaults(capsys, tmp_path: Path) -> None:
    from dataclasses import asdict

    from methods import METHODS

    res = tmp_path / "res"
    defaults = asdict(METHODS.get("mf").Config())
    capped = {**defaults, "epochs": 7}
    old = {k: v for k, v in defaults.items() if k != "init_std"} | {"lr": 0.005, "gone": 1}
    sasrec = asdict(METHODS.get("sasrec").Config())
    before_option = {k: v for k, v in sasrec.items() if k != "group_by_length"}  # made before the option: declared as False
    runs = (("pop", 0, asdict(METHODS.get("pop").Config())), ("mf", 0, capped), ("mf", 1, old), ("sasrec", 0, sasrec),
            ("sasrec", 1, before_option))  # fmt: skip
    for method, seed, config in runs:
        path = fake_record(res, "d", method, seed, metrics_of(0.1 + seed))
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "config": config}))
    fake_record(res, "d", "unregistered", 0, metrics_of(0.2))
    assert cli(capsys, "leaderboard", "--results-dir", res, "--output", tmp_path / "lb.md")[0] == 0
    cells = table((tmp_path / "lb.md").read_text(), "d")
    assert cells["pop"]["config ≠ defaults"] == "defaults"
    # seeds made with different settings are never averaged: one row per setting, each naming its own
    assert "mf" not in cells and "sasrec" not in cells
    assert cells["mf (settings 1 of 2)"]["config ≠ defaults"] == "epochs=7"
    assert cells["mf (settings 2 of 2)"]["config ≠ defaults"] == "gone=1 (no longer an option), init_std unrecorded, lr=0.005"
    assert cells["mf (settings 1 of 2)"]["n"] == cells["mf (settings 2 of 2)"]["n"] == "1"
    assert cells["unregistered"]["config ≠ defaults"] == "method not registered"
    assert cells["sasrec (settings 1 of 2)"]["config ≠ defaults"] == "defaults"
    assert cells["sasrec (settings 2 of 2)"]["config ≠ defaults"] == "group_by_length=False (made before the option)"
    assert "Seeds made with different settings are never averaged: `mf`, `sasrec`" in (tmp_path / "lb.md").read_text()


def test_leaderboard_lists_supplementary_history_masked_metrics(capsys, tmp_path: Path) -> None:
    res = tmp_path / "res"
    for seed, masked in ((0, 0.5), (1, 0.7), (2, None)):
        path = fake_record(res, "d", "mf", seed, metrics_of(0.1))
        record = json.loads(path.read_text())
        if masked is not None:
            record["test_metrics_history_masked"] = metrics_of(masked)
        path.write_text(json.dumps(record))
    fake_record(res, "d", "pop", 0, metrics_of(0.2))
    assert cli(capsys, "leaderboard", "--results-dir", res, "--output", tmp_path / "lb.md")[0] == 0
    text = (tmp_path / "lb.md").read_text()
    section = text.split("History-masked test metrics", 1)[1]
    rows = [[c.strip() for c in line.strip("|\n").split("|")] for line in section.splitlines() if line.startswith("| ")]
    assert rows[1:] == [["mf", "2 of 3", "0.6000 ± 0.1414", "0.6000 ± 0.1414", "0.6000 ± 0.1414", "0.6000 ± 0.1414", "0.1000 ± 0.0000"]]


def test_leaderboard_missing_results_dir(capsys, tmp_path: Path) -> None:
    rc, _, err = cli(capsys, "leaderboard", "--results-dir", tmp_path / "none", "--output", tmp_path / "lb.md")
    assert_user_error(rc, err, "does not exist")


# ---- compare -----------------------------------------------------------------------------
N_USERS = 200


def base_ranks(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 30, size=N_USERS)


def write_set(root: Path, ranks_by_key: dict[tuple[str, int], np.ndarray], fingerprint: str = "fp1") -> Path:
    for (method, seed), ranks in ranks_by_key.items():
        fake_record(root, "beauty", method, seed, summarize(ranks), ranks=ranks, fingerprint=fingerprint)
    return root


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    return write_set(tmp_path / "base", {("sasrec", 0): base_ranks(0), ("sasrec", 1): base_ranks(1), ("pop", 0): base_ranks(2)})


def test_compare_identical_passes(capsys, baseline: Path, tmp_path: Path) -> None:
    cand = tmp_path / "cand"
    shutil.copytree(baseline, cand)
    rc, out, _ = cli(capsys, "compare", "--baseline", baseline, "--candidate", cand)
    assert rc == 0 and "PASS: 3 baseline record(s) compared" in out and "REGRESSION" not in out


def test_compare_real_drop_fails(capsys, baseline: Path, tmp_path: Path) -> None:
    worse = base_ranks(0).copy()
    hits = np.flatnonzero((worse >= 1) & (worse <= 10))
    worse[hits] = 0  # every top-10 hit lost: a large, paired, significant drop
    cand = write_set(tmp_path / "cand", {("sasrec", 0): worse, ("sasrec", 1): base_ranks(1), ("pop", 0): base_ranks(2)})
    rc, out, _ = cli(capsys, "compare", "--baseline", baseline, "--candidate", cand)
    assert rc == 1 and "REGRESSION" in out and out.rstrip().endswith("FAIL: 3 baseline record(s) compared")
    regressions = [line for line in out.splitlines() if "REGRESSION" in line]
    assert all(line.split()[:3] == ["beauty", "sasrec", "0"] for line in regressions)
    assert any(" ndcg@10 " in line for line in regressions)


def test_compare_drop_that_is_not_real_passes(capsys, baseline: Path, tmp_path: Path) -> None:
    """Beyond a zero tolerance, but one user out of 200 changed: the paired test says no."""
    changed = base_ranks(0).copy()
    user = int(np.flatnonzero(changed == 1)[0]) if (changed == 1).any() else 0
    changed[user] = 0
    cand = write_set(tmp_path / "cand", {("sasrec", 0): changed, ("sasrec", 1): base_ranks(1), ("pop", 0): base_ranks(2)})
    rc, out, _ = cli(capsys, "compare", "--baseline", baseline, "--candidate", cand, "--tol", "*=0")
    assert rc == 0 and "REGRESSION" not in out


def test_compare_missing_record_and_changed_data_fail(capsys, baseline: Path, tmp_path: Path) -> None:
    cand = write_set(tmp_path / "cand", {("sasrec", 0): base_ranks(0), ("pop", 0): base_ranks(2)})
    rc, out, _ = cli(capsys, "compare", "--baseline", baseline, "--candidate", cand)
    assert rc == 1 and "MISSING" in out
    moved = write_set(tmp_path / "moved", {("sasrec", 0): base_ranks(0), ("sasrec", 1): base_ranks(1), ("pop", 0): base_ranks(2)}, fingerprint="fp2")
    rc, out, _ = cli(capsys, "compare", "--baseline", baseline, "--candidate", moved)
    assert rc == 1 and "DATA CHANGED" in out


@pytest.mark.parametrize("tol, fragment", [("ndcg@10", "METRIC=VALUE"), ("ndcg@10=abc", "not a number"), ("ndcg@7=0.1", "unknown metric")])
def test_compare_bad_tolerance(capsys, baseline: Path, tol: str, fragment: str) -> None:
    rc, _, err = cli(capsys, "compare", "--baseline", baseline, "--candidate", baseline, "--tol", tol)
    assert_user_error(rc, err, fragment)


def test_compare_tolerance_applies(capsys, baseline: Path, tmp_path: Path) -> None:
    worse = base_ranks(0).copy()
    worse[np.flatnonzero((worse >= 1) & (worse <= 10))] = 0
    cand = write_set(tmp_path / "cand", {("sasrec", 0): worse, ("sasrec", 1): base_ranks(1), ("pop", 0): base_ranks(2)})
    rc, _, _ = cli(capsys, "compare", "--baseline", baseline, "--candidate", cand, "--tol", "*=1")
    assert rc == 0  # a drop within a (huge) tolerance is accepted


def test_compare_empty_baseline(capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    rc, _, err = cli(capsys, "compare", "--baseline", tmp_path / "empty", "--candidate", tmp_path / "empty")
    assert_user_error(rc, err, "holds no result records")
