"""The dataset registry: what each dataset is, where its files can come from, and loading.

:func:`load_dataset` takes the first source that exists, in this order:

1. ``local``: the dataset's folder in the data directory (``--data-dir`` or ``$BENCH_DATA_DIR``),
   in any of the dataset's accepted layouts (e.g. a P5 copy or the raw Amazon files);
2. ``recbole``: the copy shipped inside the installed ``recbole`` package (ml-100k);
3. ``download``: the canonical raw files, from the download cache or downloaded into it.

The parsed, id-remapped dataset is cached under ``<cache>/canonical/<name>-<key>/`` where the
key hashes the canonical version, the source kind and format, the source files' sha256 and
the permutation seed; a cache hit skips parsing. The counts are checked on every load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bench.data import sources
from bench.data.canonical import CANONICAL_VERSION, Dataset, RawData, canonicalize
from bench.data.download import DownloadError, fetch
from bench.errors import UserError, did_you_mean
from bench.paths import CACHE_DIR_ENV, DATA_DIR_ENV, default_cache_dir, resolve_data_dir  # noqa: F401 (re-exported)


class DatasetUnavailable(UserError):
    """No copy of the dataset can be had offline and it cannot be downloaded."""


class Counts(NamedTuple):
    users: int
    items: int
    interactions: int


@dataclass
class Layout:
    """One accepted set of files: the format, its parser, and which file feeds which parser argument."""

    format: str
    parser: Callable[..., RawData]
    files: dict[str, str]  # parser argument -> file name
    optional: tuple[str, ...] = ()  # arguments whose file may be absent (passed as None)
    text: tuple[str, ...] = ()  # arguments whose file carries item text (titles, descriptions, ...)

    def match(self, folder: Path) -> dict[str, Path | None] | None:
        """The parser's arguments for the files in ``folder``, or None if a required file is missing."""
        args: dict[str, Path | None] = {}
        for arg, name in self.files.items():
            path = folder / name
            if path.is_file():
                args[arg] = path
            elif arg in self.optional:
                args[arg] = None
            else:
                return None
        return args

    def inputs(self, args: dict[str, Path | None]) -> frozenset[str]:
        """What the matched files offer beyond interactions (see :data:`INPUTS`)."""
        return frozenset({"item_text"} if any(args.get(a) is not None for a in self.text) else ())

    def describe(self) -> str:
        """E.g. ``sequential_data.txt + datamaps.json (+ items.csv)``."""
        required = [n for a, n in self.files.items() if a not in self.optional]
        optional = [n for a, n in self.files.items() if a in self.optional]
        return " + ".join(required) + "".join(f" (+ {n})" for n in optional)


@dataclass
class RemoteFile:
    url: str
    md5: str | None = None  # published checksum, when there is one
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass
class DatasetSpec:
    name: str
    description: str
    counts: Counts | None  # expected users / items / interactions
    folder: str  # the dataset's subfolder in the data directory
    layouts: tuple[Layout, ...]  # accepted local file sets, in order of preference
    remote: tuple[RemoteFile, ...] = ()  # canonical raw files, parsed with raw_layout
    raw_layout: Layout | None = None
    recbole_layout: Layout | None = None  # the copy shipped in the recbole package
    manual: str = ""  # where to get the files by hand when there is no download
    homepage: str = ""
    citation: str = ""

    def __post_init__(self) -> None:
        if self.remote and (
            self.raw_layout is None or {f.name for f in self.remote} != set(self.raw_layout.files.values())
        ):
            raise ValueError(f"dataset {self.name!r}: the remote files must be exactly raw_layout's files")


class Source(NamedTuple):
    kind: str  # "local", "recbole", "download-cache" or "download"
    folder: Path
    layout: Layout
    args: dict[str, Path | None]


# ---- the datasets ------------------------------------------------------------------------
AMAZON14_URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
AMAZON18_URL = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"
AMAZON14_CITATION = (
    "J. McAuley, C. Targett, Q. Shi, A. van den Hengel. Image-based recommendations on styles and "
    "substitutes. SIGIR 2015; preprocessing: S3-Rec (Zhou et al., CIKM 2020) / P5 (Geng et al., RecSys 2022)"
)
AMAZON18_CITATION = (
    "J. Ni, J. Li, J. McAuley. Justifying recommendations using distantly-labeled reviews and "
    "fine-grained aspects. EMNLP 2019; "
    "preprocessing: LC-Rec (Zheng et al., ICDE 2024) / LETTER (Wang et al., CIKM 2024)"
)
YELP_CITATION = "Yelp Open Dataset; preprocessing: S3-Rec (Zhou et al., CIKM 2020) / P5 (Geng et al., RecSys 2022)"
MOVIELENS_CITATION = "F. M. Harper, J. A. Konstan. The MovieLens Datasets: History and Context. ACM TiiS 5(4), 2015"

P5_LAYOUT = Layout(
    "P5 preprocessed",
    sources.load_p5,
    {"sequences": "sequential_data.txt", "datamaps": "datamaps.json", "items": "items.csv"},
    optional=("items",),
    text=("items",),
)


def _amazon2014(name: str, category: str, counts: Counts) -> DatasetSpec:
    raw = Layout(
        "Amazon 2014 5-core",
        sources.load_amazon2014,
        {"reviews": f"reviews_{category}_5.json.gz", "meta": f"meta_{category}.json.gz"},
        optional=("meta",),
        text=("meta",),
    )
    return DatasetSpec(
        name=name,
        description=f"Amazon 2014 '{category.replace('_', ' ')}' 5-core reviews (P5/S3-Rec split)",
        counts=counts,
        folder=name,
        layouts=(P5_LAYOUT, raw),
        remote=tuple(RemoteFile(AMAZON14_URL + f) for f in raw.files.values()),
        raw_layout=raw,
        homepage="http://jmcauley.ucsd.edu/data/amazon/",
        citation=AMAZON14_CITATION,
    )


def _amazon2018(name: str, prefix: str, category: str, counts: Counts) -> DatasetSpec:
    lcrec = [
        Layout(
            "LC-Rec/LETTER JSON",
            sources.load_lcrec_json,
            {"inter": f"{prefix}.inter{suffix}.json", "item": f"{prefix}.item.json"},
            optional=("item",),
            text=("item",),
        )
        for suffix in ("", ".lcrec")
    ]
    raw = Layout(
        "Amazon 2018 5-core",
        sources.load_amazon2018,
        {"reviews": f"{category}_5.json.gz", "meta": f"meta_{category}.json.gz"},
        optional=("meta",),
        text=("meta",),
    )
    return DatasetSpec(
        name=name,
        description=f"Amazon 2018 '{category.replace('_', ' ')}' 5-core reviews (LC-Rec/LETTER preprocessing)",
        counts=counts,
        folder=name,
        layouts=(*lcrec, raw),
        remote=(
            RemoteFile(f"{AMAZON18_URL}categoryFilesSmall/{category}_5.json.gz"),
            RemoteFile(f"{AMAZON18_URL}metaFiles2/meta_{category}.json.gz"),
        ),
        raw_layout=raw,
        homepage="https://nijianmo.github.io/amazon/",
        citation=AMAZON18_CITATION,
    )


def _movielens(
    name: str, md5: str, counts: Counts, layouts: tuple[Layout, ...], recbole: Layout | None = None
) -> DatasetSpec:
    archive = Layout("GroupLens zip", sources.load_movielens_zip, {"archive": f"{name}.zip"}, text=("archive",))
    return DatasetSpec(
        name=name,
        description=f"MovieLens {name[3:].upper()} ratings as chronological sequences, no filtering",
        counts=counts,
        folder=name,
        layouts=(*layouts, archive),
        remote=(RemoteFile(f"{GROUPLENS_URL}{name}.zip", md5=md5),),
        raw_layout=archive,
        recbole_layout=recbole,
        homepage="https://grouplens.org/datasets/movielens/",
        citation=MOVIELENS_CITATION,
    )


ML100K_ATOMIC = Layout(
    "RecBole atomic files",
    sources.load_recbole_atomic,
    {"inter": "ml-100k.inter", "item": "ml-100k.item"},
    optional=("item",),
    text=("item",),
)
ML1M_CSV = Layout(
    "MovieLens CSV copy",
    sources.load_movielens_csv,
    {"ratings": "ratings.csv", "movies": "movies.csv"},
    optional=("movies",),
    text=("movies",),
)
YELP_RAW = Layout(
    "Yelp Open Dataset",
    sources.load_yelp,
    {"reviews": "yelp_academic_dataset_review.json", "business": "yelp_academic_dataset_business.json"},
    optional=("business",),
    text=("business",),
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _movielens(
            "ml-100k",
            "0e33842e24a9c977be4e0107933c0723",
            Counts(943, 1682, 100000),
            (ML100K_ATOMIC,),
            recbole=ML100K_ATOMIC,
        ),
        _movielens("ml-1m", "c4d9eecfca2ab87c1945afe126590906", Counts(6040, 3706, 1000209), (ML1M_CSV,)),
        _amazon2014("beauty", "Beauty", Counts(22363, 12101, 198502)),
        _amazon2014("sports", "Sports_and_Outdoors", Counts(35598, 18357, 296337)),
        _amazon2014("toys", "Toys_and_Games", Counts(19412, 11924, 167597)),
        _amazon2018("instruments", "Instruments", "Musical_Instruments", Counts(24772, 9922, 206153)),
        _amazon2018("scientific", "Scientific", "Industrial_and_Scientific", Counts(8317, 4344, 58492)),
        DatasetSpec(
            name="yelp",
            description="Yelp Open Dataset reviews of 2019, 5-core (P5/S3-Rec split)",
            counts=Counts(30431, 20033, 316354),
            folder="yelp",
            layouts=(P5_LAYOUT, YELP_RAW),
            manual="the Yelp Open Dataset is a manual download under Yelp's dataset terms: https://www.yelp.com/dataset",
            homepage="https://www.yelp.com/dataset",
            citation=YELP_CITATION,
        ),
    )
}


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise did_you_mean(name, DATASETS, "dataset")
    return DATASETS[name]


# ---- where the data is -------------------------------------------------------------------
# The functions below take the data and cache directories resolved (bench.paths.Paths, built by
# the command line): ``data_dir`` None means no local data directory; nothing here reads the
# environment.
def _recbole_folder(name: str) -> Path | None:
    """``recbole/dataset_example/<name>`` of the installed recbole package (found without importing it)."""
    spec = importlib.util.find_spec("recbole")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "dataset_example" / name
        if folder.is_dir():
            return folder
    return None


def _find(spec: DatasetSpec, data_dir: Path | None, cache_dir: Path) -> Source | None:
    """The first source that is there without network, in resolution order."""
    if data_dir is not None:
        if not data_dir.is_dir():
            raise UserError(f"data directory {data_dir} does not exist (from --data-dir or ${DATA_DIR_ENV})")
        folder = data_dir / spec.folder
        if folder.is_dir():
            for layout in spec.layouts:
                args = layout.match(folder)
                if args is not None:
                    return Source("local", folder, layout, args)
            raise UserError(
                f"{folder} holds none of the file sets accepted for dataset {spec.name!r}: {_accepted(spec)}"
            )
    if spec.recbole_layout is not None:
        folder = _recbole_folder(spec.name)
        args = spec.recbole_layout.match(folder) if folder is not None else None
        if args is not None:
            return Source("recbole", folder, spec.recbole_layout, args)
    if spec.raw_layout is not None:
        folder = cache_dir / "downloads" / spec.name
        args = spec.raw_layout.match(folder)
        if args is not None:
            return Source("download-cache", folder, spec.raw_layout, args)
    return None


def locate(name: str, data_dir: Path | None = None, *, cache_dir: Path) -> tuple[str, str] | None:
    """Where ``name`` can be had without network: ``(kind, folder)`` or None.

    kind is ``"local"`` (the data directory), ``"recbole"`` (the recbole package's copy) or
    ``"download-cache"`` (raw files downloaded earlier).
    """
    source = _find(get_spec(name), data_dir, cache_dir)
    return (source.kind, str(source.folder)) if source is not None else None


# What a dataset copy may offer beyond interactions, and what a method may need (``Method.needs``).
INPUTS = {"item_text": "item text (titles, descriptions, categories)"}


def dataset_inputs(name: str, data_dir: Path | None = None, *, cache_dir: Path) -> tuple[frozenset[str], str] | None:
    """What the copy of ``name`` that a run would read offers beyond interactions, and where it is,
    from which of its layout's files exist (nothing is parsed): ``({"item_text"}, "the local copy (P5 preprocessed)
    in DIR")``.  Without a copy here, the files a download would bring.  None when there is neither."""
    spec = get_spec(name)
    source = _find(spec, data_dir, cache_dir)
    if source is not None:
        return source.layout.inputs(source.args), f"the {source.kind} copy ({source.layout.format}) in {source.folder}"
    if spec.remote and spec.raw_layout is not None:
        return spec.raw_layout.inputs({arg: Path(file) for arg, file in spec.raw_layout.files.items()}), "its download"
    return None


def _accepted(spec: DatasetSpec) -> str:
    return " or ".join(layout.describe() for layout in spec.layouts)


def _unavailable(spec: DatasetSpec, reason: str) -> DatasetUnavailable:
    remedy = f"pass --data-dir DIR (or set ${DATA_DIR_ENV}) where DIR/{spec.folder}/ holds {_accepted(spec)}"
    remedy += f"; {spec.manual}" if spec.manual else ", or allow the download (needs internet access)"
    return DatasetUnavailable(f"dataset {spec.name!r} is not available: {reason}. To fix: {remedy}")


def _download(spec: DatasetSpec, cache_dir: Path, allowed: bool) -> Source:
    """The raw files in ``<cache>/downloads/<name>/``, fetched (and verified) as needed."""
    if not spec.remote:
        raise _unavailable(spec, "no local copy was found and it has no download")
    folder = cache_dir / "downloads" / spec.name
    try:
        for remote in spec.remote:
            fetch(remote.url, folder, sha256=remote.sha256, md5=remote.md5, allow_download=allowed)
    except DownloadError as exc:
        raise _unavailable(spec, f"no local copy was found and {exc.url} cannot be downloaded ({exc.reason})") from None
    args = spec.raw_layout.match(folder) if spec.raw_layout is not None else None
    assert args is not None, "DatasetSpec.__post_init__ ties the remote files to raw_layout"
    return Source("download", folder, spec.raw_layout, args)


# ---- loading -----------------------------------------------------------------------------
def check_counts(spec: DatasetSpec, dataset: Dataset) -> None:
    """A UserError naming the dataset and both counts when they differ from the spec's."""
    found = Counts(dataset.n_users, dataset.n_items, dataset.n_interactions)
    if spec.counts is not None and found != spec.counts:
        raise UserError(
            f"dataset {spec.name!r}: expected {_fmt(spec.counts)}, found {_fmt(found)} "
            f"in {dataset.source}; use a copy with the benchmark's preprocessing"
        )


def _fmt(counts: Counts) -> str:
    return f"{counts.users:,} users / {counts.items:,} items / {counts.interactions:,} interactions"


def _cache_key(source: Source, digest: str, permutation_seed: int) -> str:
    text = json.dumps([CANONICAL_VERSION, source.kind, source.layout.format, digest, permutation_seed])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical_folder(spec: DatasetSpec, source: Source, cache: Path, permutation_seed: int) -> Path:
    digest = sources.hash_files(p for p in source.args.values() if p is not None)
    return cache / "canonical" / f"{spec.name}-{_cache_key(source, digest, permutation_seed)}"


def canonical_cache(name: str, data_dir: Path | None = None, *, cache_dir: Path, permutation_seed: int = 0) -> Path | None:
    """The canonical cache folder of ``name`` when it exists already (nothing is parsed), else None."""
    spec = get_spec(name)
    source = _find(spec, data_dir, cache_dir)
    if source is None:
        return None
    folder = _canonical_folder(spec, source, cache_dir, permutation_seed)
    return folder if (folder / "meta.json").is_file() else None


def _read_cache(folder: Path) -> Dataset | None:
    if not (folder / "meta.json").is_file():
        return None
    try:
        return Dataset.load(folder)
    except (OSError, ValueError, KeyError):  # a damaged cache entry is rebuilt
        return None


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    *,
    cache_dir: Path,
    download: bool = True,
    permutation_seed: int = 0,
) -> Dataset:
    """The canonical dataset ``name``: from the canonical cache, else parsed from its source.

    ``data_dir`` None: no local data directory. Sources in order: local data directory > recbole package copy > download cache >
    download (when ``download``). Raises DatasetUnavailable when none works, and a UserError
    when the counts differ from the registry's.
    """
    spec = get_spec(name)
    source = _find(spec, data_dir, cache_dir)
    if source is None or source.kind == "download-cache":
        source = _download(spec, cache_dir, download)  # fetch() verifies the cached files
    target = _canonical_folder(spec, source, cache_dir, permutation_seed)
    cached = _read_cache(target)
    if cached is not None:
        check_counts(spec, cached)
        return cached
    raw = source.layout.parser(**source.args)
    if not raw.sequences:
        raise UserError(f"dataset {spec.name!r}: {raw.source} holds no interactions")
    dataset = canonicalize(spec.name, raw, permutation_seed)
    check_counts(spec, dataset)  # before saving: the cache holds only datasets that passed
    dataset.save(target)
    return dataset
