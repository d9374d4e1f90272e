"""Item values and the value-weighted metrics (docs/protocol.md, "Value metrics").

Item value, per dataset, one kind only (never real and simulated in one table):

* **real**: where the data carries a price (the Amazon metadata's ``price``, parsed into
  ``Dataset.item_value``), an item's value is ``log1p(price)``; items without a price have
  none (NaN) and count with weight 0 in the value metrics; the record gives the share of
  items (and of test targets) that have one;
* **simulated** otherwise: a declared, seeded stand-in for an advertiser's eCPM,
  :class:`SimulatedValueModel` -- a log-normal bid per item with a per-category effect
  where the items have categories (``log v_i = mu + c_cat(i) + e_i``).  The draws depend
  only on the model's parameters, its seed and the dataset's name, never on a run's seed,
  so every method and every seed of a table is scored with the same values.

Value metrics, from a user's target rank (1-based in the top 100, 0 = absent) and the
target's value ``v_t`` (weight 0 when it has none), summed over the evaluated users u:

* ``hr@K``        = mean_u 1[rank <= K]  (every user; equals the harness's recall@K);
* ``value_hr@K``  = sum_u v_t 1[rank <= K] / sum_u v_t;
* ``wndcg@K``     = sum_u v_t 1[rank <= K] / log2(rank + 1) / sum_u v_t;

for K in :data:`VALUE_CUTOFFS` (10 and 100).  They are the benchmark's own definitions
(UniVA's are not public).  Everything derives from a record's committed ranks file, so
:func:`add_value_metrics` adds them to an existing record without retraining.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.errors import UserError
from bench.metrics import MAX_RANK

VALUE_CUTOFFS = (10, MAX_RANK)
VALUE_METRIC_KEYS = tuple(f"{m}@{k}" for m in ("hr", "value_hr", "wndcg") for k in VALUE_CUTOFFS)
CATEGORY_FIELDS = ("categories", "category")  # item-text fields read as a category path "root,top,sub,..."
SECTION = "value_metrics"  # the record's section


@dataclass(frozen=True)
class SimulatedValueModel:
    """A seeded log-normal bid per item standing in for an advertiser's eCPM.

    ``log v_i = mu + c_k + e_i`` with ``c_k ~ N(0, sigma_category^2)`` drawn once per
    top-level category k (in sorted name order; items without a category get c = 0) and
    ``e_i ~ N(0, sigma_item^2)`` per item (in item index order), from a generator seeded by
    ``(seed, dataset name)``.
    """

    mu: float = 0.0
    sigma_category: float = 0.5
    sigma_item: float = 1.0
    seed: int = 0

    name = "lognormal-bid-per-item-with-category-effect"

    def __post_init__(self):
        if self.sigma_category < 0 or self.sigma_item < 0:
            raise UserError(f"simulated value model: sigmas must be >= 0, got {self.sigma_category}, {self.sigma_item}")

    def draw(self, dataset: str, category: np.ndarray, n_categories: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), zlib.crc32(dataset.encode())]))
        effect = rng.normal(0.0, self.sigma_category, size=n_categories)
        noise = rng.normal(0.0, self.sigma_item, size=len(category))
        shift = np.concatenate([effect, [0.0]])[np.where(category >= 0, category, n_categories)]  # none: 0
        log_v = self.mu + shift + noise
        return np.exp(log_v)

    def describe(self) -> dict[str, Any]:
        return {"kind": "simulated", "model": self.name, "formula": "v_i = exp(mu + c_category(i) + e_i)",
                "params": {k: v for k, v in dataclasses.asdict(self).items() if k != "seed"}, "seed": int(self.seed)}  # fmt: skip


@dataclass
class ItemValues:
    values: np.ndarray  # (n_items,) float64, NaN = the item has no value
    category: np.ndarray  # (n_items,) int64 index into ``categories``, -1 = unknown
    categories: list[str]  # top-level category names, sorted
    source: dict[str, Any]  # ``value_source`` for the record

    @property
    def kind(self) -> str:
        return self.source["kind"]

    @property
    def known(self) -> np.ndarray:
        return np.isfinite(self.values)

    def weights(self, items: np.ndarray) -> np.ndarray:
        """Values of ``items`` with 0 for an item that has none (its user weighs nothing)."""
        v = self.values[np.asarray(items, dtype=np.int64)]
        return np.where(np.isfinite(v), v, 0.0)


def top_level_categories(item_text: dict[str, list[str]], n_items: int) -> tuple[np.ndarray, list[str]]:
    """Each item's top-level category from its category path (``"Root,Top,Sub"``): a leading
    component that every categorised item shares (the catalog's root, e.g. "Industrial &
    Scientific") is skipped.  Returns (per-item index, -1 = none; sorted names)."""
    field = next((f for f in CATEGORY_FIELDS if f in item_text), None)
    if field is None:
        return np.full(n_items, -1, dtype=np.int64), []
    paths = [[p.strip() for p in str(t).split(",") if p.strip()] for t in item_text[field]]
    depth = 0
    while True:  # skip the components every categorised item has in common
        heads = {tuple(p[: depth + 1]) for p in paths if p}
        if len(heads) != 1 or not all(len(p) > depth + 1 for p in paths if p):
            break
        depth += 1
    top = [p[depth] if len(p) > depth else "" for p in paths]
    names = sorted({t for t in top if t})
    index = {n: k for k, n in enumerate(names)}
    return np.array([index.get(t, -1) for t in top], dtype=np.int64), names


def item_values(dataset: str, n_items: int, item_text: dict[str, list[str]], item_value: np.ndarray | None,
                model: SimulatedValueModel | None = None) -> ItemValues:  # fmt: skip
    """Real values (log1p of the price) where the dataset has any, otherwise ``model``'s."""
    category, names = top_level_categories(item_text, n_items)
    real = item_value is not None and np.isfinite(np.asarray(item_value, dtype=np.float64)).any()
    if real:
        price = np.asarray(item_value, dtype=np.float64)
        if len(price) != n_items:
            raise ValueError(f"dataset {dataset!r}: item_value has {len(price)} entries, the catalog {n_items} items")
        values = np.where(np.isfinite(price) & (price >= 0), np.log1p(np.clip(price, 0, None)), np.nan)
        source = {"kind": "real", "field": "price", "transform": "log1p(price)",
                  "items_with_value": float(np.isfinite(values).mean()) if n_items else 0.0}  # fmt: skip
    else:
        model = model or SimulatedValueModel()
        values = model.draw(dataset, category, len(names))
        source = {**model.describe(), "items_with_value": 1.0}
    source["categories"] = len(names)
    source["items_with_category"] = float((category >= 0).mean()) if n_items else 0.0
    return ItemValues(values, category, names, source)


def dataset_values(dataset, model: SimulatedValueModel | None = None) -> ItemValues:
    """Item values of a :class:`bench.data.canonical.Dataset`."""
    return item_values(dataset.name, dataset.n_items, dataset.item_text, dataset.item_value, model)


def train_values(data, model: SimulatedValueModel | None = None) -> ItemValues:
    """The same item values from a method's :class:`bench.method.TrainData` (item attributes only)."""
    return item_values(data.dataset, data.n_items, data.item_text, data.item_value, model)


# ---- metrics -------------------------------------------------------------------------------
def value_metrics(ranks: np.ndarray, target_values: np.ndarray, cutoffs: tuple[int, ...] = VALUE_CUTOFFS,
                  list_depth: int | None = None, n_items: int | None = None) -> dict[str, float | None]:  # fmt: skip
    """HR@K, ValueHR@K and wNDCG@K from per-user target ranks (1-based, 0 = absent) and the
    targets' values (NaN or 0 = no weight).  A value metric is None when no target has value;
    every metric at K is None when ranked lists of ``list_depth`` could not reach K although
    the catalog could (as :func:`bench.metrics.summarize`: Hit@100 from a beam of 20 is missing)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    v = np.asarray(target_values, dtype=np.float64)
    if ranks.shape != v.shape:
        raise ValueError(f"ranks {ranks.shape} and target values {v.shape} differ in shape")
    v = np.where(np.isfinite(v), v, 0.0)
    if (v < 0).any():
        raise ValueError("target values must be >= 0")
    total = v.sum()
    hit = ranks > 0
    gain = np.zeros(len(ranks))
    gain[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    out: dict[str, float | None] = {}
    for k in cutoffs:
        if list_depth is not None and list_depth < min(k, n_items if n_items is not None else k):
            out[f"hr@{k}"] = out[f"value_hr@{k}"] = out[f"wndcg@{k}"] = None
            continue
        inside = hit & (ranks <= k)
        out[f"hr@{k}"] = float(inside.mean()) if len(ranks) else None
        out[f"value_hr@{k}"] = float((v * inside).sum() / total) if total > 0 else None
        out[f"wndcg@{k}"] = float((v * np.where(inside, gain, 0.0)).sum() / total) if total > 0 else None
    return {key: out[key] for key in (f"{m}@{k}" for m in ("hr", "value_hr", "wndcg") for k in cutoffs)}


def value_section(split, ranks: np.ndarray, list_depth: int | None = None, model: SimulatedValueModel | None = None) -> dict[str, Any] | None:
    """The record's ``value_metrics`` section for the test ranks of ``split`` (a
    :class:`bench.split.Split`), in the order of ``split.test`` users; ``list_depth``: for a
    method that outputs ranked lists, the longest de-duplicated list (the harness's
    ``EvalOutput.list_depth``).  The values do not depend on the run's seed (see the module
    doc); None when the test set is empty."""
    ranks = np.asarray(ranks, dtype=np.int64)
    targets = split.test.targets
    if len(ranks) != len(targets):
        raise ValueError(f"{len(ranks)} ranks for {len(targets)} test users of {split.dataset.name!r}")
    if len(targets) == 0:
        return None
    values = dataset_values(split.dataset, model)
    w = values.weights(targets)
    return {
        "metrics": value_metrics(ranks, w, list_depth=list_depth, n_items=split.n_items),
        "value_source": values.source,
        "users": int(len(targets)),
        "users_with_target_value": int((w > 0).sum()),
        "definitions": "hr@K = mean 1[rank<=K]; value_hr@K = sum v_t 1[rank<=K] / sum v_t; "
                       "wndcg@K = sum v_t 1[rank<=K] / log2(rank+1) / sum v_t (docs/protocol.md)",
    }  # fmt: skip


def add_value_metrics(record, split, model: SimulatedValueModel | None = None, overwrite: bool = False) -> bool:
    """Add the ``value_metrics`` section to an existing :class:`bench.results.Record` from its
    committed ranks file and the split's test targets, and rewrite its JSON.  Returns False
    when the record already has one (and ``overwrite`` is off)."""
    from bench.results import ranks_path, rewrite_record

    if SECTION in record.data and not overwrite:
        return False
    if record.data["dataset"] != split.dataset.name:
        raise UserError(f"{record.path}: a record of {record.data['dataset']!r}, not of {split.dataset.name!r}")
    with np.load(ranks_path(record.path)) as z:
        stored = str(z["fingerprint"]) if "fingerprint" in z.files else None
    fingerprint = stored or record.data.get("provenance", {}).get("data_fingerprint")
    if fingerprint != split.dataset.fingerprint:
        raise UserError(f"{record.path}: its ranks were made on data {fingerprint}, the loaded {split.dataset.name!r} is "
                        f"{split.dataset.fingerprint}; value metrics would pair ranks with the wrong targets")  # fmt: skip
    depth = record.data.get("generation", {}).get("list_depth") if record.data.get("protocol", {}).get("output") == "lists" else None
    section = value_section(split, record.ranks(), depth, model)
    if section is None:
        return False
    record.data[SECTION] = section
    rewrite_record(record.path, record.data)
    return True


def source_key(source: dict[str, Any]) -> str:
    """A stable string naming a value source, for keeping different sources apart in tables."""
    return json.dumps({k: v for k, v in source.items() if k in ("kind", "model", "params", "seed", "field", "transform")}, sort_keys=True)
