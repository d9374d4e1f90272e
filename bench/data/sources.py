"""Source parsers: each reads one on-disk format and returns a :class:`RawData`.

Every parser keeps the source's original id strings (ASIN, business id, reviewerID,
MovieLens ids, LC-Rec's 0-based integers), orders each user's items oldest first with a
*stable* sort on the timestamp (ties keep file order; formats without timestamps are
already chronological), and collects the item text fields the format carries.
Malformed or truncated input is a :class:`UserError` that names the file and the line.

Formats:

* P5 preprocessed: ``sequential_data.txt`` + ``datamaps.json`` (+ ``items.csv``)   :func:`load_p5`
* LC-Rec / LETTER JSON: ``X.inter.json`` (+ ``X.item.json``)                       :func:`load_lcrec_json`
* MovieLens: local CSV copy, GroupLens zips, RecBole atomic files  :func:`load_movielens_csv`,
  :func:`load_movielens_zip`, :func:`load_recbole_atomic`
* raw Amazon 2014 5-core (+ Python-literal metadata)                                 :func:`load_amazon2014`
* raw Amazon 2018 5-core, with LC-Rec's preprocessing                                 :func:`load_amazon2018`
* raw Yelp Open Dataset, with S3-Rec/P5's preprocessing                               :func:`load_yelp`
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import html
import io
import json
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from bench.data.canonical import RawData
from bench.errors import UserError

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
AMAZON_TEXT_FIELDS = ("title", "brand", "categories", "description")
YELP_DATE_RANGE = ("2019-01-01 00:00:00", "2019-12-31 00:00:00")  # S3-Rec/P5, inclusive string bounds
K_CORE = 5


# ---- shared helpers ----------------------------------------------------------------------
def hash_files(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of ``paths`` in the given order (each prefixed by its size)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def k_core(sequences: dict[str, list[str]], k: int = K_CORE) -> dict[str, list[str]]:
    """Repeatedly drop items with fewer than ``k`` interactions and users left with fewer than ``k``.

    Interactions are counted with repeats; the result (the maximal k-core) does not depend on
    the order of the deletions. Each user's order is kept.
    """
    total = sum(len(s) for s in sequences.values())
    while True:
        item_count = Counter(i for seq in sequences.values() for i in seq)
        kept = {u: [i for i in seq if item_count[i] >= k] for u, seq in sequences.items()}
        sequences = {u: seq for u, seq in kept.items() if len(seq) >= k}
        new_total = sum(len(s) for s in sequences.values())
        if new_total == total:
            return sequences
        total = new_total


def _bad(label: object, number: int, message: str) -> UserError:
    return UserError(f"{label} line {number}: {message}")


def _open_text(path: Path, encoding: str = "utf-8", newline: str | None = None) -> IO[str]:
    """Open a plain or ``.gz`` text file; a missing file is a UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline=newline)
    return open(path, encoding=encoding, newline=newline)


def _lines(label: object, stream: IO[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, line)``; a truncated or corrupt stream names the line."""
    number = 0
    try:
        with stream:
            for number, line in enumerate(stream, 1):
                yield number, line
    except (EOFError, OSError, zlib.error, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise _bad(label, number + 1, f"cannot read ({exc}); the file is truncated or corrupt") from None


def _load_json(path: Path) -> Any:
    """A whole-file JSON document; invalid or truncated JSON names the line."""
    text = "".join(line for _, line in _lines(path, _open_text(path)))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, exc.lineno, f"not valid JSON ({exc.msg}); the file is truncated or corrupt") from None


def _json_lines(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """JSON objects, one per line, each checked for the ``required`` fields."""
    for number, line in _lines(path, _open_text(path)):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(path, number, f"not valid JSON ({exc.msg}); the file is truncated or corrupt") from None
        if not isinstance(record, dict):
            raise _bad(path, number, "expected a JSON object")
        missing = [key for key in required if key not in record]
        if missing:
            raise _bad(path, number, f"missing field {missing[0]!r}")
        yield number, record


def _csv_rows(
    label: object, stream: IO[str], required: tuple[str, ...], delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL
) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """The header's column positions and the data rows ``(line number, cells)`` of a CSV file."""
    reader = csv.reader((line for _, line in _lines(label, stream)), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if header is None:
        raise UserError(f"{label}: the file is empty")
    columns = {name.strip(): k for k, name in enumerate(header)}
    missing = [name for name in required if name not in columns]
    if missing:
        raise _bad(label, 1, f"missing column {missing[0]!r} (header: {','.join(header)})")

    def rows() -> Iterator[tuple[int, list[str]]]:
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                raise _bad(label, reader.line_num, f"expected {len(header)} columns, got {len(cells)}")
            yield reader.line_num, cells

    return columns, rows()


def _to_number(text: str, label: object, number: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _bad(label, number, f"{what} {text!r} is not a number") from None


def _chronological(events: Iterable[tuple[str, str, Any]]) -> dict[str, list[str]]:
    """Group ``(user, item, time)`` by user in file order, then sort each user's items by time.

    The sort is stable: interactions with equal timestamps keep their file order.
    """
    by_user: dict[str, list[tuple[Any, str]]] = {}
    for user, item, time in events:
        by_user.setdefault(user, []).append((time, item))
    return {user: [item for _, item in sorted(timed, key=lambda e: e[0])] for user, timed in by_user.items()}


def _clean(text: object) -> str:
    """Unescape HTML entities and collapse whitespace; lists are joined with ', '."""
    if isinstance(text, list):
        parts = [_clean(t) for t in text]
        return ", ".join(p for p in parts if p)
    return " ".join(html.unescape(str(text or "")).split())


# ---- P5 preprocessed ---------------------------------------------------------------------
def load_p5(sequences: Path, datamaps: Path, items: Path | None = None) -> RawData:
    """P5's ``sequential_data.txt`` (``user item item ...``, P5 ids, chronological) and ``datamaps.json``.

    Users and items get their original ids from ``id2user``/``id2item`` (reviewerID, ASIN or
    Yelp business id). ``items.csv`` (``item_id`` = P5 id, then text columns) adds item text.
    """
    maps = _load_json(datamaps)
    id2user = maps.get("id2user") if isinstance(maps, dict) else None
    id2item = maps.get("id2item") if isinstance(maps, dict) else None
    if not isinstance(id2user, dict) or not isinstance(id2item, dict):
        raise UserError(f"{datamaps}: expected P5 datamaps with 'id2user' and 'id2item' maps")
    seqs: dict[str, list[str]] = {}
    for number, line in _lines(sequences, _open_text(sequences)):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise _bad(sequences, number, "expected 'user item item ...'")
        user = id2user.get(tokens[0])
        if user is None:
            raise _bad(sequences, number, f"user {tokens[0]!r} is not in {datamaps.name} id2user")
        if user in seqs:
            raise _bad(sequences, number, f"user {tokens[0]!r} appears twice")
        unknown = [t for t in tokens[1:] if t not in id2item]
        if unknown:
            raise _bad(sequences, number, f"item {unknown[0]!r} is not in {datamaps.name} id2item")
        seqs[user] = [id2item[t] for t in tokens[1:]]
    item_text: dict[str, dict[str, str]] = {}
    fields: tuple[str, ...] = ()
    paths = [sequences, datamaps]
    if items is not None:
        item_text, fields = _p5_item_text(items, id2item)
        paths.append(items)
    return RawData(
        sequences=seqs,
        item_text=item_text,
        text_fields=fields,
        source=f"P5 preprocessed copy {sequences.parent}",
        source_digest=hash_files(paths),
    )


def _p5_item_text(path: Path, id2item: dict[str, str]) -> tuple[dict[str, dict[str, str]], tuple[str, ...]]:
    """``items.csv``: ``item_id`` (P5 id), optionally the original id column, then text columns."""
    columns, rows = _csv_rows(path, _open_text(path, newline=""), ("item_id",))
    id_column = next((c for c in ("asin", "business_id") if c in columns), None)
    fields = tuple(c for c in columns if c not in ("item_id", id_column))
    text: dict[str, dict[str, str]] = {}
    for number, cells in rows:
        p5_id = cells[columns["item_id"]]
        original = id2item.get(p5_id)
        if original is None:
            raise _bad(path, number, f"item_id {p5_id!r} is not in datamaps id2item")
        if id_column is not None and cells[columns[id_column]] != original:
            raise _bad(
                path, number, f"{id_column} {cells[columns[id_column]]!r} != datamaps id2item[{p5_id}] {original!r}"
            )
        text[original] = {f: cells[columns[f]].strip() for f in fields}
    return text, fields


# ---- LC-Rec / LETTER JSON ----------------------------------------------------------------
def load_lcrec_json(inter: Path, item: Path | None = None) -> RawData:
    """LC-Rec/LETTER ``X.inter.json`` (``{"user": [item, ...]}``, 0-based, chronological).

    ``X.item.json`` (``{"item": {"title": .., "description": .., ...}}``) adds item text.
    """
    data = _load_json(inter)
    if not isinstance(data, dict):
        raise UserError(f"{inter}: expected a JSON object {{user: [item, ...]}}")
    seqs: dict[str, list[str]] = {}
    for user, items in data.items():
        if not isinstance(items, list) or not items or not all(isinstance(i, (int, str)) for i in items):
            raise UserError(f"{inter}: user {user!r}: expected a non-empty list of item ids")
        seqs[str(user)] = [str(i) for i in items]
    item_text: dict[str, dict[str, str]] = {}
    fields: dict[str, None] = {}  # ordered set
    if item is not None:
        meta = _load_json(item)
        if not isinstance(meta, dict) or not all(isinstance(v, dict) for v in meta.values()):
            raise UserError(f"{item}: expected a JSON object {{item: {{field: text}}}}")
        for item_id, info in meta.items():
            fields.update(dict.fromkeys(info))
            item_text[str(item_id)] = {k: _clean(v) for k, v in info.items()}
    return RawData(
        sequences=seqs,
        item_text=item_text,
        text_fields=tuple(fields),
        source=f"LC-Rec/LETTER JSON {inter}",
        source_digest=hash_files([inter] + ([item] if item is not None else [])),
    )


# ---- MovieLens ---------------------------------------------------------------------------
def load_movielens_csv(ratings: Path, movies: Path | None = None) -> RawData:
    """Local CSV copy: ``ratings.csv`` (user_id,item_id,rating,timestamp), ``movies.csv`` (item_id,title,genres)."""
    columns, rows = _csv_rows(ratings, _open_text(ratings, newline=""), ("user_id", "item_id", "timestamp"))
    u, i, t = columns["user_id"], columns["item_id"], columns["timestamp"]
    seqs = _chronological((c[u], c[i], _to_number(c[t], ratings, n, "timestamp")) for n, c in rows)
    item_text: dict[str, dict[str, str]] = {}
    if movies is not None:
        columns, rows = _csv_rows(movies, _open_text(movies, newline=""), ("item_id", "title", "genres"))
        i, title, genres = columns["item_id"], columns["title"], columns["genres"]
        item_text = {c[i]: {"title": c[title].strip(), "genres": c[genres].replace("|", ", ")} for _, c in rows}
    return RawData(
        sequences=seqs,
        item_text=item_text,
        text_fields=("title", "genres") if movies is not None else (),
        source=f"MovieLens CSV copy {ratings.parent}",
        source_digest=hash_files([ratings] + ([movies] if movies is not None else [])),
    )


def load_movielens_zip(archive: Path) -> RawData:
    """A GroupLens archive: ``ml-1m.zip`` (ratings.dat, movies.dat) or ``ml-100k.zip`` (u.data, u.item)."""
    if not archive.is_file():
        raise UserError(f"{archive}: no such file")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{archive}: not a readable zip archive ({exc}); delete it and download it again") from None
    with zf:
        names = set(zf.namelist())
        if "ml-1m/ratings.dat" in names and "ml-1m/movies.dat" in names:
            seqs, item_text, fields = _ml1m_members(archive, zf)
        elif "ml-100k/u.data" in names and "ml-100k/u.item" in names:
            seqs, item_text, fields = _ml100k_members(archive, zf)
        else:
            raise UserError(f"{archive}: expected ml-1m/ratings.dat + movies.dat or ml-100k/u.data + u.item inside")
    return RawData(
        sequences=seqs,
        item_text=item_text,
        text_fields=fields,
        source=f"GroupLens archive {archive}",
        source_digest=hash_files([archive]),
    )


def _member(archive: Path, zf: zipfile.ZipFile, name: str) -> Iterator[tuple[int, str]]:
    return _lines(f"{archive}:{name}", io.TextIOWrapper(zf.open(name), encoding="latin-1"))


def _ml1m_members(archive: Path, zf: zipfile.ZipFile) -> tuple[dict, dict, tuple[str, ...]]:
    def events() -> Iterator[tuple[str, str, float]]:
        label = f"{archive}:ml-1m/ratings.dat"
        for number, line in _member(archive, zf, "ml-1m/ratings.dat"):
            parts = line.rstrip("\r\n").split("::")
            if len(parts) != 4:
                raise _bad(label, number, "expected 'UserID::MovieID::Rating::Timestamp'")
            yield parts[0], parts[1], _to_number(parts[3], label, number, "timestamp")

    seqs = _chronological(events())
    item_text = {}
    for number, line in _member(archive, zf, "ml-1m/movies.dat"):
        parts = line.rstrip("\r\n").split("::")
        if len(parts) != 3:
            raise _bad(f"{archive}:ml-1m/movies.dat", number, "expected 'MovieID::Title::Genres'")
        item_text[parts[0]] = {"title": parts[1].strip(), "genres": parts[2].replace("|", ", ")}
    return seqs, item_text, ("title", "genres")


def _ml100k_members(archive: Path, zf: zipfile.ZipFile) -> tuple[dict, dict, tuple[str, ...]]:
    def events() -> Iterator[tuple[str, str, float]]:
        label = f"{archive}:ml-100k/u.data"
        for number, line in _member(archive, zf, "ml-100k/u.data"):
            parts = line.split()
            if len(parts) != 4:
                raise _bad(label, number, "expected 'user item rating timestamp' (tab-separated)")
            yield parts[0], parts[1], _to_number(parts[3], label, number, "timestamp")

    seqs = _chronological(events())
    item_text = {}
    for number, line in _member(archive, zf, "ml-100k/u.item"):
        parts = line.rstrip("\r\n").split("|")
        if len(parts) != 5 + len(ML100K_GENRES):
            raise _bad(f"{archive}:ml-100k/u.item", number, f"expected {5 + len(ML100K_GENRES)} '|'-separated fields")
        title, year = _split_year(parts[1].strip(), parts[2])
        genres = ", ".join(g for g, flag in zip(ML100K_GENRES, parts[5:], strict=True) if flag.strip() == "1")
        item_text[parts[0]] = {"title": title, "year": year, "genres": genres}
    return seqs, item_text, ("title", "year", "genres")


def _split_year(title: str, release_date: str) -> tuple[str, str]:
    """``("Toy Story (1995)", "01-Jan-1995")`` -> ``("Toy Story", "1995")`` (as in RecBole's ml-100k.item)."""
    match = re.fullmatch(r"(.*?)\s*\((\d{4})\)", title)
    if match:
        return match.group(1), match.group(2)
    return title, release_date.strip()[-4:]


RECBOLE_TEXT_NAMES = {"movie_title": "title", "release_year": "year", "class": "genres"}


def load_recbole_atomic(inter: Path, item: Path | None = None) -> RawData:
    """RecBole atomic files (tab-separated, header ``name:type``), e.g. ``ml-100k.inter`` / ``ml-100k.item``.

    The ``.inter`` file needs ``user_id``, ``item_id`` and ``timestamp`` columns. Every other
    column of the ``.item`` file is item text (ml-100k's movie_title/release_year/class are
    named title/year/genres).
    """
    columns, rows = _atomic_rows(inter, ("user_id", "item_id", "timestamp"))
    u, i, t = columns["user_id"], columns["item_id"], columns["timestamp"]
    seqs = _chronological((c[u], c[i], _to_number(c[t], inter, n, "timestamp")) for n, c in rows)
    item_text: dict[str, dict[str, str]] = {}
    fields: tuple[str, ...] = ()
    if item is not None:
        columns, rows = _atomic_rows(item, ("item_id",))
        text_columns = [c for c in columns if c != "item_id"]
        fields = tuple(RECBOLE_TEXT_NAMES.get(c, c) for c in text_columns)
        for _, cells in rows:
            text = {RECBOLE_TEXT_NAMES.get(c, c): cells[columns[c]].strip() for c in text_columns}
            if "genres" in text:
                text["genres"] = ", ".join(text["genres"].split())
            item_text[cells[columns["item_id"]]] = text
    return RawData(
        sequences=seqs,
        item_text=item_text,
        text_fields=fields,
        source=f"RecBole atomic files {inter.parent}",
        source_digest=hash_files([inter] + ([item] if item is not None else [])),
    )


def _atomic_rows(path: Path, required: tuple[str, ...]) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """Column positions (by name without the ``:type`` suffix) and rows of a tab-separated atomic file."""
    typed, rows = _csv_rows(path, _open_text(path, newline=""), (), delimiter="\t", quoting=csv.QUOTE_NONE)
    columns = {name.split(":")[0]: k for name, k in typed.items()}
    missing = [name for name in required if name not in columns]
    if missing:
        raise _bad(path, 1, f"missing column '{missing[0]}:...' (header: {' '.join(typed)})")
    return columns, rows


# ---- raw Amazon --------------------------------------------------------------------------
def load_amazon2014(reviews: Path, meta: Path | None = None) -> RawData:
    """Amazon 2014 ``reviews_<Cat>_5.json.gz`` and ``meta_<Cat>.json.gz`` (Python-literal lines).

    The 5-core review file is used as is (it matches the P5/S3-Rec counts); each user's
    reviews are sorted by ``unixReviewTime`` (stable). Metadata gives title, brand,
    categories (all levels, de-duplicated), description, and price as the item value.
    """
    seqs = _chronological(_amazon_events(reviews))
    item_text: dict[str, dict[str, str]] = {}
    prices: dict[str, float] = {}
    if meta is not None:
        wanted = {i for seq in seqs.values() for i in seq}
        for info in _python_literal_lines(meta, wanted):
            asin = info["asin"]
            categories = [c for path in info.get("categories") or [] for c in path]
            item_text[asin] = {
                "title": _clean(info.get("title")),
                "brand": _clean(info.get("brand")),
                "categories": _clean(list(dict.fromkeys(categories))),
                "description": _clean(info.get("description")),
            }
            if isinstance(info.get("price"), (int, float)):
                prices[asin] = float(info["price"])
    return _amazon_raw(seqs, item_text, prices, meta, reviews, "Amazon 2014")


def _amazon_events(reviews: Path) -> Iterator[tuple[str, str, int]]:
    for number, record in _json_lines(reviews, ("reviewerID", "asin", "unixReviewTime")):
        if not isinstance(record["unixReviewTime"], int):
            raise _bad(reviews, number, f"unixReviewTime {record['unixReviewTime']!r} is not an integer")
        yield str(record["reviewerID"]), str(record["asin"]), record["unixReviewTime"]


def _python_literal_lines(path: Path, wanted: set[str]) -> Iterator[dict]:
    """Amazon 2014 metadata: one Python dict literal per line (parsed with ``ast.literal_eval``).

    Lines whose leading ``'asin'`` is not in ``wanted`` are skipped without being parsed.
    """
    prefix = re.compile(r"\{'asin': '([^']*)'")
    for number, line in _lines(path, _open_text(path)):
        match = prefix.match(line)
        if (match and match.group(1) not in wanted) or not line.strip():
            continue
        try:
            info = ast.literal_eval(line)
        except (ValueError, SyntaxError) as exc:
            raise _bad(
                path, number, f"not a Python dict literal ({exc.__class__.__name__}); the file is truncated or corrupt"
            ) from None
        if not isinstance(info, dict) or "asin" not in info:
            raise _bad(path, number, "missing field 'asin'")
        if info["asin"] in wanted:
            yield info


def load_amazon2018(reviews: Path, meta: Path | None = None) -> RawData:
    """Amazon 2018 ``<Cat>_5.json.gz`` and ``meta_<Cat>.json.gz`` (JSON lines), preprocessed as LC-Rec does.

    LC-Rec/LETTER's ``amazon18_data_process.py``: sort each user's reviews by
    ``unixReviewTime`` (stable here), keep the first interaction per (user, item), keep items
    that have metadata, then 5-core. Metadata gives title, brand, category, description and
    price (``"$12.99"``; ranges and missing prices give no value).
    """
    seqs = {u: list(dict.fromkeys(seq)) for u, seq in _chronological(_amazon_events(reviews)).items()}
    item_text: dict[str, dict[str, str]] = {}
    prices: dict[str, float] = {}
    if meta is not None:
        for _, info in _json_lines(meta, ("asin",)):
            asin = str(info["asin"])
            categories = []
            for category in info.get("category") or []:
                if "<" in str(category):  # HTML fragments end the real category path
                    break
                categories.append(category)
            item_text[asin] = {
                "title": _clean(info.get("title")),
                "brand": _clean(info.get("brand")),
                "categories": _clean(categories),
                "description": _clean(info.get("description")),
            }
            price = re.fullmatch(r"\$\s*([\d,]+(?:\.\d+)?)", str(info.get("price") or "").strip())
            if price:
                prices[asin] = float(price.group(1).replace(",", ""))
        seqs = {u: [i for i in seq if i in item_text] for u, seq in seqs.items()}
    seqs = k_core(seqs)
    kept = {i for seq in seqs.values() for i in seq}
    item_text = {i: t for i, t in item_text.items() if i in kept}
    prices = {i: p for i, p in prices.items() if i in kept}
    return _amazon_raw(seqs, item_text, prices, meta, reviews, "Amazon 2018")


def _amazon_raw(
    seqs: dict[str, list[str]], item_text: dict, prices: dict[str, float], meta: Path | None, reviews: Path, what: str
) -> RawData:
    return RawData(
        sequences=seqs,
        item_text=item_text,
        item_value=prices,
        value_field="price" if prices else None,
        text_fields=AMAZON_TEXT_FIELDS if meta is not None else (),
        source=f"{what} raw files {reviews.parent}",
        source_digest=hash_files([reviews] + ([meta] if meta is not None else [])),
    )


# ---- raw Yelp ----------------------------------------------------------------------------
def load_yelp(reviews: Path, business: Path | None = None) -> RawData:
    """Yelp Open Dataset review/business JSON lines, preprocessed as S3-Rec (and so P5) does.

    S3-Rec's ``data_process.py``: keep reviews dated 2019-01-01 00:00:00 .. 2019-12-31 00:00:00
    (inclusive string comparison), sort each user's reviews by date (stable), 5-core counting
    repeat visits. Business name and categories are the item text. The Yelp dataset is
    re-released over time, so a newer release may not give P5's counts.
    """
    low, high = YELP_DATE_RANGE

    def events() -> Iterator[tuple[str, str, str]]:
        for number, line in _lines(reviews, _open_text(reviews)):
            if "2019-" not in line:  # cheap pre-filter: a kept review's date contains "2019-"
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _bad(reviews, number, f"not valid JSON ({exc.msg}); the file is truncated or corrupt") from None
            missing = [k for k in ("user_id", "business_id", "date") if k not in record]
            if missing:
                raise _bad(reviews, number, f"missing field {missing[0]!r}")
            date = str(record["date"])
            if low <= date <= high:
                yield str(record["user_id"]), str(record["business_id"]), date

    seqs = k_core(_chronological(events()))
    item_text: dict[str, dict[str, str]] = {}
    if business is not None:
        kept = {i for seq in seqs.values() for i in seq}
        for _, info in _json_lines(business, ("business_id",)):
            if info["business_id"] in kept:
                item_text[info["business_id"]] = {
                    "name": _clean(info.get("name")),
                    "categories": _clean(info.get("categories")),
                }
    return RawData(
        sequences=seqs,
        item_text=item_text,
        text_fields=("name", "categories") if business is not None else (),
        source=f"Yelp Open Dataset raw files {reviews.parent}",
        source_digest=hash_files([reviews] + ([business] if business is not None else [])),
    )
