"""Data layer tests on tiny files written here in the real formats (no real data is committed)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.data import registry, sources
from bench.data.canonical import Dataset, canonicalize
from bench.data.download import fetch
from bench.data.registry import DatasetSpec, DatasetUnavailable, Layout, load_dataset
from bench.errors import UserError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_gz(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def write_p5(folder: Path, rows: list[list[int]], titles: bool = True) -> Path:
    """A P5 copy: user u (1-based) with P5 item ids ``rows[u-1]``; item k is ASIN ``B{k:04d}``."""
    n_items = max(max(r) for r in rows)
    write(folder / "sequential_data.txt", "".join(f"{u} {' '.join(map(str, r))}\n" for u, r in enumerate(rows, 1)))
    maps = {
        "id2user": {str(u): f"U{u:03d}" for u in range(1, len(rows) + 1)},
        "id2item": {str(k): f"B{k:04d}" for k in range(1, n_items + 1)},
    }
    write(folder / "datamaps.json", json.dumps(maps))
    if titles:
        lines = ["item_id,asin,title"] + [f'{k},B{k:04d},"Item {k}, deluxe"' for k in range(1, n_items + 1)]
        write(folder / "items.csv", "\n".join(lines) + "\n")
    return folder


P5_ROWS = [[1, 2, 3], [2, 4, 1, 5], [3, 5]]


# ---- parsers -----------------------------------------------------------------------------
def test_p5_parser_maps_to_original_ids_and_reads_titles(tmp_path: Path) -> None:
    folder = write_p5(tmp_path / "beauty", P5_ROWS)
    raw = sources.load_p5(folder / "sequential_data.txt", folder / "datamaps.json", folder / "items.csv")
    assert raw.sequences == {
        "U001": ["B0001", "B0002", "B0003"],
        "U002": ["B0002", "B0004", "B0001", "B0005"],
        "U003": ["B0003", "B0005"],
    }
    assert raw.text_fields == ("title",)
    assert raw.item_text["B0004"] == {"title": "Item 4, deluxe"}
    assert len(raw.source_digest) == 64 and str(folder) in raw.source


def test_p5_yelp_items_csv_with_business_id(tmp_path: Path) -> None:
    folder = write_p5(tmp_path / "yelp", [[1, 2]], titles=False)
    write(
        folder / "items.csv",
        'item_id,business_id,name,categories\n1,B0001,Cafe,"Food, Coffee"\n2,B0002,Bar,Nightlife\n',
    )
    raw = sources.load_p5(folder / "sequential_data.txt", folder / "datamaps.json", folder / "items.csv")
    assert raw.text_fields == ("name", "categories")
    assert raw.item_text["B0001"] == {"name": "Cafe", "categories": "Food, Coffee"}


def test_lcrec_json(tmp_path: Path) -> None:
    inter = write(tmp_path / "X.inter.json", json.dumps({"0": [0, 1, 2], "1": [2, 0]}))
    item = write(
        tmp_path / "X.item.json",
        json.dumps({"0": {"title": "A &amp; B", "description": "d", "brand": "", "categories": "c1,c2"}}),
    )
    raw = sources.load_lcrec_json(inter, item)
    assert raw.sequences == {"0": ["0", "1", "2"], "1": ["2", "0"]}
    assert raw.text_fields == ("title", "description", "brand", "categories")
    assert raw.item_text["0"]["title"] == "A & B"


def test_movielens_csv_is_chronological_with_stable_ties(tmp_path: Path) -> None:
    ratings = write(
        tmp_path / "ratings.csv",
        "user_id,item_id,rating,timestamp\n1,30,5,200\n1,10,3,100\n1,20,4,200\n1,40,4,150\n2,10,1,5\n",
    )
    movies = write(tmp_path / "movies.csv", 'item_id,title,genres\n10,"Ten, The (1995)",Comedy|Drama\n')
    raw = sources.load_movielens_csv(ratings, movies)
    assert raw.sequences == {"1": ["10", "40", "30", "20"], "2": ["10"]}  # 30 before 20: file order on a tie
    assert raw.item_text["10"] == {"title": "Ten, The (1995)", "genres": "Comedy, Drama"}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_ml1m_zip(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "ml-1m.zip",
        {
            "ml-1m/ratings.dat": b"1::20::5::300\n1::10::3::100\n2::10::4::7\n",
            "ml-1m/movies.dat": "10::Café (1999)::Comedy|Romance\n20::X (2000)::Drama\n".encode("latin-1"),
        },
    )
    raw = sources.load_movielens_zip(archive)
    assert raw.sequences == {"1": ["10", "20"], "2": ["10"]}
    assert raw.item_text["10"] == {"title": "Café (1999)", "genres": "Comedy, Romance"}


def test_ml100k_zip(tmp_path: Path) -> None:
    flags = ["0"] * 19
    flags[5] = flags[8] = "1"  # Comedy, Drama
    u_item = (
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{'|'.join(flags)}\n267|unknown||||{'|'.join(['1'] + ['0'] * 18)}\n"
    )
    archive = _zip(
        tmp_path / "ml-100k.zip",
        {"ml-100k/u.data": b"5\t1\t3\t900\n5\t267\t4\t800\n6\t1\t2\t10\n", "ml-100k/u.item": u_item.encode("latin-1")},
    )
    raw = sources.load_movielens_zip(archive)
    assert raw.sequences == {"5": ["267", "1"], "6": ["1"]}
    assert raw.text_fields == ("title", "year", "genres")
    assert raw.item_text["1"] == {"title": "Toy Story", "year": "1995", "genres": "Comedy, Drama"}
    assert raw.item_text["267"] == {"title": "unknown", "year": "", "genres": "unknown"}


def test_recbole_atomic(tmp_path: Path) -> None:
    inter = write(
        tmp_path / "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n196\t302\t3\t881250949\n196\t1\t3\t100\n",
    )
    item = write(
        tmp_path / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n1\tToy Story\t1995\tAnimation Children's Comedy\n",
    )
    raw = sources.load_recbole_atomic(inter, item)
    assert raw.sequences == {"196": ["1", "242", "302"]}
    assert raw.text_fields == ("title", "year", "genres")
    assert raw.item_text["1"] == {"title": "Toy Story", "year": "1995", "genres": "Animation, Children's, Comedy"}


def _review(user: str, item: str, time: int) -> str:
    return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": time, "overall": 5.0})


def test_amazon2014_raw(tmp_path: Path) -> None:
    reviews = write_gz(
        tmp_path / "reviews_Beauty_5.json.gz",
        [_review("A1", "I2", 50), _review("A1", "I1", 10), _review("A1", "I3", 50), _review("A2", "I1", 1)],
    )
    meta = write_gz(
        tmp_path / "meta_Beauty.json.gz",
        [
            "{'asin': 'I1', 'title': 'Soap &amp; Co', 'price': 3.5, "
            "'categories': [['Beauty', 'Bath'], ['Beauty', 'Soap']], 'brand': 'Acme'}",
            "{'asin': 'I2', 'description': 'Nice.', 'categories': [['Beauty']]}",
            "{'asin': 'NOT_REVIEWED', 'title': 'skipped'}",
            "{'title': 'asin not first', 'asin': 'I3', 'price': 1}",
        ],
    )
    raw = sources.load_amazon2014(reviews, meta)
    assert raw.sequences == {"A1": ["I1", "I2", "I3"], "A2": ["I1"]}
    assert raw.item_text["I1"] == {
        "title": "Soap & Co",
        "brand": "Acme",
        "categories": "Beauty, Bath, Soap",
        "description": "",
    }
    assert raw.item_text["I2"]["description"] == "Nice."
    assert set(raw.item_text) == {"I1", "I2", "I3"}
    assert raw.value_field == "price" and raw.item_value == {"I1": 3.5, "I3": 1.0}


def test_amazon2018_raw_applies_lcrec_preprocessing(tmp_path: Path) -> None:
    users, items = [f"U{u}" for u in range(5)], [f"I{i}" for i in range(5)]
    lines = [_review(u, i, 100 * k + j) for j, u in enumerate(users) for k, i in enumerate(items)]
    lines += [_review("U0", "I0", 999)]  # repeat: only the first (earliest) stays
    lines += [_review("U0", "RARE", 1), _review("FEW", "I0", 1)]  # below 5-core
    lines += [_review(u, "NOMETA", 2) for u in users]  # no metadata: filtered out
    reviews = write_gz(tmp_path / "Musical_Instruments_5.json.gz", lines)
    meta_lines = [
        json.dumps(
            {
                "asin": i,
                "title": f"T {i}",
                "category": ["Music", "Guitars", "</span>junk"],
                "description": ["a", "b"],
                "price": "$1,012.50",
            }
        )
        for i in items
    ]
    meta_lines += [json.dumps({"asin": "RARE", "title": "r", "price": "$5.00 - $9.00"})]
    meta = write_gz(tmp_path / "meta_Musical_Instruments.json.gz", meta_lines)
    raw = sources.load_amazon2018(reviews, meta)
    assert set(raw.sequences) == set(users)
    assert all(seq == items for seq in raw.sequences.values())
    assert raw.item_text["I1"] == {"title": "T I1", "brand": "", "categories": "Music, Guitars", "description": "a, b"}
    assert set(raw.item_text) == set(items) and raw.item_value["I0"] == 1012.5


def test_yelp_raw_applies_p5_preprocessing(tmp_path: Path) -> None:
    def review(u: str, b: str, date: str) -> str:
        return json.dumps({"user_id": u, "business_id": b, "stars": 4, "date": date})

    users, items = [f"U{u}" for u in range(5)], [f"B{i}" for i in range(5)]
    lines = [review(u, b, f"2019-0{k + 1}-01 10:00:00") for u in users for k, b in enumerate(items)]
    lines += [review("U0", "B1", "2018-12-31 23:59:59"), review("U0", "B2", "2019-12-31 00:00:01")]  # outside the range
    lines += [review("U1", "B0", "2019-09-09 00:00:00")]  # a repeat visit counts and stays
    reviews = write(tmp_path / "yelp_academic_dataset_review.json", "\n".join(lines) + "\n")
    business = write(
        tmp_path / "yelp_academic_dataset_business.json",
        json.dumps({"business_id": "B0", "name": "Cafe", "categories": "Food, Coffee"}) + "\n",
    )
    raw = sources.load_yelp(reviews, business)
    assert raw.sequences["U0"] == items
    assert raw.sequences["U1"] == items + ["B0"]
    assert raw.item_text == {"B0": {"name": "Cafe", "categories": "Food, Coffee"}}


# ---- canonical form and loading ----------------------------------------------------------
def test_remap_is_a_permutation_not_following_first_appearance(tmp_path: Path) -> None:
    rows = [[5 * u + k for k in range(1, 6)] for u in range(60)]  # P5 ids grow with time: target = max id
    folder = write_p5(tmp_path / "p5", rows, titles=False)
    ds = canonicalize("p5", sources.load_p5(folder / "sequential_data.txt", folder / "datamaps.json"))
    assert sorted(set(ds.items.tolist())) == list(range(ds.n_items))
    last_is_max = sum(int(ds.sequence(u)[-1] == ds.sequence(u).max()) for u in range(ds.n_users))
    assert last_is_max < 0.5 * ds.n_users  # about 1/5 expected by chance; 100% before remapping
    first_appearance = np.unique(ds.items, return_index=True)[1]
    assert not np.all(np.diff(first_appearance) > 0)


@pytest.fixture
def tiny_spec(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Register dataset 'tiny' (a P5 folder, counts 3/5/9) whose parser counts its calls."""
    calls = {"parse": 0}

    def parser(**kwargs):
        calls["parse"] += 1
        return sources.load_p5(**kwargs)

    layout = Layout("P5 preprocessed", parser, dict(registry.P5_LAYOUT.files), optional=("items",))
    spec = DatasetSpec("tiny", "test", registry.Counts(3, 5, 9), "tiny", (layout,))
    monkeypatch.setitem(registry.DATASETS, "tiny", spec)
    return calls


def test_canonical_cache_round_trip_and_hit(tmp_path: Path, tiny_spec: dict[str, int]) -> None:
    write_p5(tmp_path / "data" / "tiny", P5_ROWS)
    first = load_dataset("tiny", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
    second = load_dataset("tiny", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
    assert tiny_spec["parse"] == 1  # the second load is a cache hit
    assert first.summary() == second.summary()
    for name in ("user_ids", "item_ids", "offsets", "items"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.item_text == second.item_text
    assert [d.name for d in (tmp_path / "cache" / "canonical").iterdir()][0].startswith("tiny-")
    assert registry.locate("tiny", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache") == ("local", str(tmp_path / "data" / "tiny"))
    reloaded = Dataset.load(next((tmp_path / "cache" / "canonical").iterdir()))
    assert reloaded.fingerprint == first.fingerprint
    other_seed = load_dataset("tiny", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", permutation_seed=1)
    assert tiny_spec["parse"] == 2 and other_seed.fingerprint != first.fingerprint


def test_count_mismatch_names_dataset_and_counts(tmp_path: Path) -> None:
    write_p5(tmp_path / "data" / "beauty", P5_ROWS)
    with pytest.raises(
        UserError, match=r"'beauty'.*22,363 users / 12,101 items / 198,502.*found 3 users / 5 items / 9 interactions"
    ):
        load_dataset("beauty", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "canonical").exists()  # nothing cached for a failed check


def test_incomplete_local_folder_lists_accepted_files(tmp_path: Path) -> None:
    write(tmp_path / "data" / "toys" / "sequential_data.txt", "1 1 2\n")
    with pytest.raises(
        UserError,
        match=r"toys.*sequential_data.txt \+ datamaps.json \(\+ items.csv\) or reviews_Toys_and_Games_5.json.gz",
    ):
        load_dataset("toys", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


def test_malformed_p5_line_names_file_and_line(tmp_path: Path) -> None:
    folder = write_p5(tmp_path / "beauty", P5_ROWS)
    write(folder / "sequential_data.txt", "1 1 2\n2\n")
    with pytest.raises(UserError, match=r"beauty/sequential_data.txt line 2: expected 'user item item \.\.\.'"):
        sources.load_p5(folder / "sequential_data.txt", folder / "datamaps.json")


def test_truncated_gzip_names_file_and_line(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "reviews_Beauty_5.json.gz", [_review(f"A{k}", f"I{k}", k) for k in range(2000)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=r"reviews_Beauty_5.json.gz line \d+: .*truncated"):
        sources.load_amazon2014(path)


def test_missing_field_and_truncated_json(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "r.json.gz", [_review("A", "I", 1), json.dumps({"reviewerID": "A", "asin": "I"})])
    with pytest.raises(UserError, match=r"r.json.gz line 2: missing field 'unixReviewTime'"):
        sources.load_amazon2014(path)
    inter = write(tmp_path / "X.inter.json", '{\n "0": [0, 1],\n "1": [2,')
    with pytest.raises(UserError, match=r"X.inter.json line 3: not valid JSON"):
        sources.load_lcrec_json(inter)


# ---- download ----------------------------------------------------------------------------
class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def serve(monkeypatch: pytest.MonkeyPatch, payload: dict[str, bytes]) -> list[str]:
    """Make urlopen answer from ``payload`` (url -> bytes); returns the list of requested urls."""
    requested: list[str] = []

    def urlopen(url, timeout=None):
        requested.append(url)
        return FakeResponse(payload[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


def test_offline_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def urlopen(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    url = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    with pytest.raises(
        UserError, match=rf"cannot download {url} \(no network\); put the files in .*dl or pass --data-dir"
    ):
        fetch(url, tmp_path / "dl")
    with pytest.raises(
        DatasetUnavailable, match=r"'ml-1m' is not available.*no network.*--data-dir DIR.*DIR/ml-1m/ holds ratings.csv"
    ):
        load_dataset("ml-1m", cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetUnavailable, match=r"'yelp'.*https://www.yelp.com/dataset"):
        load_dataset("yelp", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "dl").glob("*"))  # no partial file left behind


def test_checksum_verification_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://example.org/data/file.bin"
    requested = serve(monkeypatch, {url: b"hello"})
    with pytest.raises(
        UserError, match=r"file.bin: checksum mismatch \(expected md5 0+, got 5d41402abc4b2a76b9719d911017c592\)"
    ):
        fetch(url, tmp_path, md5="0" * 32)
    assert not (tmp_path / "file.bin").exists()
    good = hashlib.sha256(b"hello").hexdigest()
    assert fetch(url, tmp_path, sha256=good).read_bytes() == b"hello"
    fetch(url, tmp_path, sha256=good)
    assert len(requested) == 2  # the verified cached copy is reused


def test_trust_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://example.org/data/meta.json.gz"
    payload = {url: b"v1"}
    requested = serve(monkeypatch, payload)
    path = fetch(url, tmp_path)
    assert (tmp_path / "meta.json.gz.sha256").read_text().strip() == hashlib.sha256(b"v1").hexdigest()
    path.write_bytes(b"corrupted")  # a damaged cached copy is downloaded again
    assert fetch(url, tmp_path).read_bytes() == b"v1" and len(requested) == 2
    path.unlink()
    payload[url] = b"v2"  # changed upstream: reported, not used
    with pytest.raises(UserError, match=r"meta.json.gz: checksum mismatch \(expected sha256 .*changed upstream"):
        fetch(url, tmp_path)


def test_download_then_offline_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip(
        tmp_path / "src.zip",
        {"ml-1m/ratings.dat": b"1::20::5::300\n1::10::3::100\n", "ml-1m/movies.dat": b"10::A (1999)::Drama\n"},
    )
    url = "https://example.org/movielens/ml-1m.zip"
    layout = Layout("GroupLens zip", sources.load_movielens_zip, {"archive": "ml-1m.zip"})
    remote = (registry.RemoteFile(url, sha256=hashlib.sha256(archive.read_bytes()).hexdigest()),)
    spec = DatasetSpec("tinyml", "test", registry.Counts(1, 2, 2), "tinyml", (layout,), remote, raw_layout=layout)
    monkeypatch.setitem(registry.DATASETS, "tinyml", spec)
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    requested = serve(monkeypatch, {url: archive.read_bytes()})
    assert registry.locate("tinyml", cache_dir=tmp_path / "cache") is None
    with pytest.raises(DatasetUnavailable, match=r"'tinyml'.*cannot be downloaded \(downloading is off"):
        load_dataset("tinyml", cache_dir=tmp_path / "cache", download=False)
    first = load_dataset("tinyml", cache_dir=tmp_path / "cache")
    assert registry.locate("tinyml", cache_dir=tmp_path / "cache") == (
        "download-cache",
        str(tmp_path / "cache" / "downloads" / "tinyml"),
    )
    second = load_dataset("tinyml", cache_dir=tmp_path / "cache", download=False)
    assert requested == [url] and first.fingerprint == second.fingerprint
    assert [first.item_ids[i] for i in first.sequence(0)] == ["10", "20"]


# ---- registry ----------------------------------------------------------------------------
def test_unknown_dataset_suggests_closest() -> None:
    with pytest.raises(UserError, match=r"unknown dataset 'beuaty'\. Did you mean 'beauty'"):
        registry.get_spec("beuaty")
    assert registry.dataset_names() == [
        "beauty",
        "instruments",
        "ml-100k",
        "ml-1m",
        "scientific",
        "sports",
        "toys",
        "yelp",
    ]


def test_data_and_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "c"))
    assert registry.resolve_data_dir("x") == Path("x")
    assert registry.resolve_data_dir(None) == tmp_path / "env"
    assert registry.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(registry.DATA_DIR_ENV)
    monkeypatch.delenv(registry.CACHE_DIR_ENV)
    assert registry.resolve_data_dir(None) is None
    assert registry.default_cache_dir() == Path.cwd() / "datasets" / "cache"


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="recbole is not installed")
def test_real_ml100k_from_recbole_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    assert registry.locate("ml-100k", cache_dir=tmp_path)[0] == "recbole"
    ds = load_dataset("ml-100k", cache_dir=tmp_path, download=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
    assert ds.text_fields == ("title", "year", "genres")
