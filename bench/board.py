"""Boards: named selections of leaderboard cells, declared as data in ``boards/<name>.toml``.

A board is to this benchmark what a named benchmark is to MTEB (a named selection of tasks):
the cells of a curated leaderboard, group by group, as datasets x methods x seeds at the
defaults or under one preset or tag.  ``python -m bench run --board main`` runs the cells that
have no record, with the claims, ``--jobs``, executors and plan of any run; ``bench leaderboard``
prints each declared table's coverage; ``bench list --boards`` lists the boards.

A cell is done when its own record exists or a record at equivalent settings does
(:func:`equivalent_settings`: a classical method's ``cpu`` preset resolves to its defaults, so
one record counts for both tables), and it is a declared gap, left out with its reason, where
the dataset's copy lacks an input the method needs (``Method.needs``, e.g. item text).

The file::

    description = "what the board is for"
    results_dir = "results"            # where its records live (the default of `run --board`)

    [[group]]
    name = "classical"                 # optional; names the group in errors
    datasets = ["beauty", "sports"]
    methods = ["pop", "mf"]
    seeds = [0, 1, 2]
    preset = "cpu"                     # optional: a preset every method declares; or tag = "..."
    note = "why these cells"           # optional
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from bench.errors import UserError, did_you_mean
from bench.results import Record, is_complete, table_name
from bench.runner import RunConfig, RunSpec

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"
BOARD_KEYS = ("description", "results_dir", "group")
GROUP_KEYS = ("name", "datasets", "methods", "seeds", "preset", "tag", "note")


@dataclass(frozen=True)
class Group:
    name: str
    datasets: tuple[str, ...]
    methods: tuple[str, ...]  # registered names (aliases resolved)
    seeds: tuple[int, ...]
    preset: str = ""
    tag: str = ""
    note: str = ""

    def settings(self, base: RunConfig) -> RunConfig:
        """``base`` (the grid's settings) with this group's preset and tag."""
        return replace(base, preset=self.preset, tag=self.tag)

    def table(self, dataset: str) -> str:
        return table_name(dataset, self.settings(RunConfig()).variant)


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    seed: int
    group: Group

    @property
    def table(self) -> str:
        return self.group.table(self.dataset)


@dataclass(frozen=True)
class Board:
    name: str
    path: Path
    description: str
    results_dir: str
    groups: tuple[Group, ...]

    def cells(self) -> list[Cell]:
        return [Cell(d, m, s, g) for g in self.groups for d in g.datasets for m in g.methods for s in g.seeds]

    def specs(self, base: RunConfig) -> list[RunSpec]:
        """One run per cell; each carries its group's settings (``base`` with the group's preset or tag)."""
        return [RunSpec(c.dataset, c.method, c.seed, c.group.settings(base)) for c in self.cells()]


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load_board(name: str) -> Board:
    """The board ``boards/<name>.toml`` (or a ``.toml`` path), checked: every dataset, method and
    preset exists, and no cell is declared twice.  Bad input is a UserError naming file and field."""
    path = Path(name) if name.endswith(".toml") else BOARDS_DIR / f"{name}.toml"
    if not path.is_file():
        if name.endswith(".toml"):
            raise UserError(f"board file {path}: no such file")
        raise UserError(f"{did_you_mean(name, board_names(), 'board')} (A board is a file boards/<name>.toml in {BOARDS_DIR.parent}.)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    _known_keys(data, BOARD_KEYS, f"{path}")
    raw_groups = data.get("group")
    if not isinstance(raw_groups, list) or not raw_groups or not all(isinstance(g, dict) for g in raw_groups):
        raise UserError(f"{path}: expected one or more [[group]] tables (datasets, methods, seeds)")
    groups = tuple(_group(g, f"{path}: [[group]] {i + 1}") for i, g in enumerate(raw_groups))
    seen: dict[tuple[str, str, int], str] = {}
    for g in groups:
        for d in g.datasets:
            for m in g.methods:
                for s in g.seeds:
                    key = (g.table(d), m, s)
                    if key in seen:
                        raise UserError(f"{path}: cell {key[0]} {m} seed {s} is declared by group {seen[key]!r} and again by group {g.name!r}")
                    seen[key] = g.name
    return Board(path.stem, path, _text(data, "description", f"{path}"), _text(data, "results_dir", f"{path}") or "results", groups)


def _known_keys(table: dict, keys: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in keys:
            raise UserError(f"{where}: {did_you_mean(key, keys, 'field')}")


def _text(table: dict, key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise UserError(f"{where}: field {key!r}: expected a string, got {value!r}")
    return value


def _names(table: dict, key: str, where: str) -> list:
    value = table.get(key)
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: field {key!r}: expected a non-empty list, got {value!r}")
    return list(dict.fromkeys(value))


def _group(raw: dict, where: str) -> Group:
    from bench.cli import _tag
    from bench.config import resolve_config
    from bench.data.registry import get_spec
    from methods import METHODS

    name = _text(raw, "name", where)
    where = f"{where}" + (f" ({name!r})" if name else "")
    _known_keys(raw, GROUP_KEYS, where)
    datasets, methods, seeds = (_names(raw, k, where) for k in ("datasets", "methods", "seeds"))
    preset, tag = _text(raw, "preset", where), _text(raw, "tag", where)
    try:
        for d in datasets:
            if not isinstance(d, str):
                raise UserError(f"expected a dataset name, got {d!r}")
            get_spec(d)
    except UserError as exc:
        raise UserError(f"{where}: field 'datasets': {exc}") from None
    try:
        if not all(isinstance(m, str) for m in methods):
            raise UserError(f"expected method names, got {methods!r}")
        methods = list(dict.fromkeys(METHODS.canonical(m) for m in methods))
    except UserError as exc:
        raise UserError(f"{where}: field 'methods': {exc}") from None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise UserError(f"{where}: field 'seeds': expected non-negative integers, got {seeds!r}")
    try:
        for m in methods:
            resolve_config(METHODS.get(m), preset)
    except UserError as exc:
        raise UserError(f"{where}: field 'preset': {exc}") from None
    try:
        _tag(tag)
    except UserError as exc:
        raise UserError(f"{where}: field 'tag': {exc}") from None
    return Group(name or where.rsplit(": ", 1)[-1], tuple(datasets), tuple(methods), tuple(seeds), preset, tag, _text(raw, "note", where))


# ---- identical settings ----------------------------------------------------------------------
def equivalent_settings(method: str, settings: RunConfig) -> list[RunConfig]:
    """The settings other than ``settings`` under which ``method`` runs the identical configuration:
    ``settings`` with another of the method's declared presets, or the defaults, that resolves to
    the same config (a classical method's ``cpu`` preset is its defaults).  A record made under one
    counts for the others' tables: the leaderboard shows it there, marked, and a board does not
    run it again.  The one definition both use."""
    from bench.config import resolve_config
    from methods import METHODS

    cls = METHODS.get(method)
    overrides = settings.overrides.get(cls.name, {})
    config = resolve_config(cls, settings.preset, overrides)
    return [replace(settings, preset=p) for p in ("", *sorted(cls.presets))
            if p != settings.preset and resolve_config(cls, p, overrides) == config]  # fmt: skip


def equivalent_record(spec: RunSpec) -> Path | None:
    """A complete record of ``spec``'s run made at equivalent settings (not its own path), or None."""
    for other in equivalent_settings(spec.method, spec.settings):
        path = replace(spec, settings=other).path
        if is_complete(path):
            return path
    return None


def record_settings(record: Record) -> RunConfig | None:
    """The variant settings a record was made under, from its ``protocol`` section (None when they
    do not reproduce its variant, e.g. a record older than these fields)."""
    p = record.data.get("protocol", {})
    settings = RunConfig(results_dir=record.path.parents[2], mask_history=bool(p.get("history_masking")), preset=p.get("preset") or "",
                         tag=p.get("tag") or "", eval_users=int(p.get("eval_users") or 0))  # fmt: skip
    return settings if settings.variant == p.get("variant", "") else None


# ---- declared gaps ---------------------------------------------------------------------------
def recorded_inputs(records: list[Record]) -> frozenset[str] | None:
    """What a dataset offered beyond interactions, as its records say (``dataset_info.text_fields``),
    so that a board's gaps read the same on every machine; None when no record says."""
    infos = [r.data["dataset_info"] for r in records if r.data.get("dataset_info")]
    if not infos:
        return None
    return frozenset({"item_text"} if any(i.get("text_fields") for i in infos) else ())


def gap_reason(method: str, provides: frozenset[str], where: str) -> str | None:
    """Why ``method`` cannot run on a dataset offering ``provides`` (``where`` names the copy), or None."""
    from bench.data.registry import INPUTS
    from methods import METHODS

    missing = METHODS.get(method).missing_inputs(provides)
    return f"needs {', '.join(INPUTS.get(n, n) for n in missing)}, which {where} lacks" if missing else None


def boards_for(results_dir: Path) -> list[Board]:
    """The boards whose records live in ``results_dir`` (their ``results_dir``, from the current directory)."""
    return [b for b in map(load_board, board_names()) if Path(b.results_dir).resolve() == Path(results_dir).resolve()]


def cells_by_table(boards: list[Board]) -> dict[str, list[Cell]]:
    out: dict[str, list[Cell]] = defaultdict(list)
    for board in boards:
        for cell in board.cells():
            out[cell.table].append(cell)
    return dict(out)
