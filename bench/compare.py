"""Compare a candidate results directory with a baseline (regression tracking).

A metric regresses when the candidate's value is below the baseline's by more than its
absolute tolerance *and* the drop is real: when both records keep per-user ranks on the
same data, a paired Wilcoxon signed-rank test on the per-user values must give p < 0.05
(a tie on every user counts as no change).  A record missing from the candidate, or a
change of data fingerprint, is a failure too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench.errors import UserError
from bench.metrics import METRIC_KEYS, per_user
from bench.results import load_records

DEFAULT_TOLERANCE = 0.01
ALPHA = 0.05


def parse_tolerances(items: list[str]) -> dict[str, float]:
    tol = {k: DEFAULT_TOLERANCE for k in METRIC_KEYS}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--tol {item!r}: expected METRIC=VALUE, e.g. --tol ndcg@10=0.005")
        try:
            v = float(value)
        except ValueError:
            raise UserError(f"--tol {item!r}: {value!r} is not a number") from None
        if key == "*":
            tol = {k: v for k in tol}
        elif key in tol:
            tol[key] = v
        else:
            raise UserError(f"--tol {item!r}: unknown metric {key!r}; expected one of {', '.join(METRIC_KEYS)} or '*'")
    return tol


def paired_p_value(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    if np.allclose(a, b):
        return 1.0
    return float(wilcoxon(a, b, zero_method="wilcox").pvalue)


def compare(baseline: Path, candidate: Path, tolerances: dict[str, float]) -> tuple[bool, str]:
    base = {r.key: r for r in load_records(baseline)}
    cand = {r.key: r for r in load_records(candidate)}
    if not base:
        raise UserError(f"--baseline {baseline}: holds no result records")
    rows, ok = [], True
    for key in sorted(base):
        b = base[key]
        c = cand.get(key)
        label = list(key)
        if c is None:
            rows.append(label + ["(all)", "", "", "", "", "", "MISSING"])
            ok = False
            continue
        bf = b.data.get("provenance", {}).get("data_fingerprint")
        cf = c.data.get("provenance", {}).get("data_fingerprint")
        same_data = bf == cf
        if not same_data:
            rows.append(label + ["(data)", bf, cf, "", "", "", "DATA CHANGED"])
            ok = False
        try:
            pb, pc = (per_user(b.ranks()), per_user(c.ranks())) if same_data else (None, None)
        except OSError:
            pb = pc = None
        for metric in METRIC_KEYS:
            vb, vc = b.data["metrics"].get(metric), c.data["metrics"].get(metric)
            if vb is None or vc is None:
                status = "ok" if vb is None else "MISSING"
                ok &= status == "ok"
                rows.append(label + [metric, vb, vc, "", tolerances[metric], "", status])
                continue
            delta = vc - vb
            p = paired_p_value(pb[metric], pc[metric]) if pb is not None else None
            regressed = delta < -tolerances[metric] and (p is None or p < ALPHA)
            status = "REGRESSION" if regressed else ("improved" if delta > tolerances[metric] else "ok")
            ok &= not regressed
            rows.append(label + [metric, f"{vb:.4f}", f"{vc:.4f}", f"{delta:+.4f}", tolerances[metric], "" if p is None else f"{p:.3g}", status])
    extra = sorted(set(cand) - set(base))
    table = tabulate(rows, headers=["dataset", "method", "seed", "metric", "baseline", "candidate", "delta", "tol", "paired p", "status"], tablefmt="simple")
    summary = f"\n{'PASS' if ok else 'FAIL'}: {len(base)} baseline record(s) compared" + (f"; {len(extra)} candidate-only record(s) ignored" if extra else "")
    return ok, table + summary


# ---- paired significance between methods, with Holm's correction over the family -------------
def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values: step-down over the sorted p-values, made monotone,
    capped at 1; in the order given."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def parse_pairs(value: str) -> list[tuple[str, str]]:
    pairs = []
    for item in [v.strip() for v in value.split(",") if v.strip()]:
        a, sep, b = item.partition(":")
        if not sep or not a or not b:
            raise UserError(f"--pairs {item!r}: expected METHOD:BASELINE, e.g. letter-tiger:tiger")
        pairs.append((a, b))
    if not pairs:
        raise UserError("--pairs: expected comma-separated METHOD:BASELINE pairs")
    return pairs


def _per_user_mean(records: list, metric: str, users: np.ndarray | None = None) -> np.ndarray:
    """The per-user value of ``metric`` averaged over the given seeds' records (same users),
    restricted to ``users`` (in that order) when given."""
    values = []
    for r in records:
        v = per_user(r.ranks())[metric]
        if users is not None:
            position = {int(u): i for i, u in enumerate(r.users())}
            lacking = [int(u) for u in users if int(u) not in position]
            if lacking:
                raise UserError(f"--users-of: {r.path} did not evaluate {len(lacking)} of the {len(users)} users (e.g. user {lacking[0]})")
            v = v[[position[int(u)] for u in users]]
        values.append(v)
    return np.mean(values, axis=0)


def significance(results_dir: Path, table: str, pairs: list[tuple[str, str]], metric: str = "ndcg@10",
                 users_of: Path | None = None) -> tuple[list[dict], str]:  # fmt: skip
    """Paired per-user tests of each (method, baseline) pair: the per-user metric is averaged
    over the seeds both have, then compared user by user with a paired t-test and a Wilcoxon
    signed-rank test; Holm's correction runs over the family of pairs (on the Wilcoxon
    p-values).  Returns the rows and a printable table.

    ``table`` is one leaderboard table, or several comma-separated (a method must be in exactly
    one of them). With ``users_of`` (a record), every record is restricted to the users that
    record evaluated: e.g. a method run on an ``--eval-users`` sample against methods whose
    records cover every user, on exactly the sampled users, without training anything anew."""
    from scipy.stats import ttest_rel

    if metric not in METRIC_KEYS:
        raise UserError(f"--metric {metric!r}: expected one of {', '.join(METRIC_KEYS)}")
    tables = [t.strip() for t in table.split(",") if t.strip()]
    all_records = load_records(results_dir)
    by_method: dict[str, dict[int, object]] = {}
    home: dict[str, str] = {}
    for t in tables:
        records = [r for r in all_records if r.table == t]
        if not records:
            raise UserError(f"--dataset {t!r}: no records in {results_dir} (tables are named like scientific or scientific@cpu)")
        for r in records:
            m = r.data["method"]
            if home.setdefault(m, t) != t:
                raise UserError(f"--dataset {table!r}: method {m!r} has records in both {home[m]!r} and {t!r}; name one of the tables")
            by_method.setdefault(m, {})[int(r.data["seed"])] = r
    users = None
    if users_of is not None:
        path = Path(users_of)
        reference = next((r for r in all_records if r.path.resolve() == path.resolve()), None)
        if reference is None:
            raise UserError(f"--users-of {path}: not a complete record under {results_dir}")
        users = reference.users()
    rows = []
    for a, b in pairs:
        for m in (a, b):
            if m not in by_method:
                raise UserError(f"--pairs: no records of method {m!r} in table {table!r} (have: {', '.join(sorted(by_method))})")
        seeds = sorted(set(by_method[a]) & set(by_method[b]))
        if not seeds:
            raise UserError(f"--pairs {a}:{b}: the two methods share no seed in table {table!r}")
        ra, rb = [by_method[a][s] for s in seeds], [by_method[b][s] for s in seeds]
        prints = {r.data.get("provenance", {}).get("data_fingerprint") for r in ra + rb}
        if len(prints) > 1:
            raise UserError(f"--pairs {a}:{b}: records on different data (fingerprints {sorted(map(str, prints))})")
        ua, ub = _per_user_mean(ra, metric, users), _per_user_mean(rb, metric, users)
        if ua.shape != ub.shape:
            raise UserError(f"--pairs {a}:{b}: different test users ({len(ua)} vs {len(ub)})")
        same = np.allclose(ua, ub)
        rows.append({"method": a, "baseline": b, "seeds": seeds, "users": len(ua), "value": float(ua.mean()),
                     "baseline_value": float(ub.mean()), "delta": float(ua.mean() - ub.mean()),
                     "relative": float(ua.mean() / ub.mean() - 1) if ub.mean() > 0 else None,
                     "t_p": 1.0 if same else float(ttest_rel(ua, ub).pvalue), "wilcoxon_p": paired_p_value(ua, ub)})  # fmt: skip
    for row, adjusted in zip(rows, holm([r["wilcoxon_p"] for r in rows])):
        row["holm_p"] = adjusted
        row["significant"] = adjusted < ALPHA
    text = tabulate(
        [[f"{r['method']} vs {r['baseline']}", ",".join(map(str, r["seeds"])), r["users"], f"{r['value']:.4f}", f"{r['baseline_value']:.4f}",
          f"{r['delta']:+.4f}" + (f" ({r['relative']:+.1%})" if r["relative"] is not None else ""), f"{r['t_p']:.3g}",
          f"{r['wilcoxon_p']:.3g}", f"{r['holm_p']:.3g}", "yes" if r["significant"] else "no"] for r in rows],
        headers=["pair", "seeds", "users", metric, "baseline", "delta", "paired t p", "Wilcoxon p", f"Holm p ({len(rows)} pairs)",
                 f"significant (α={ALPHA})"],
        tablefmt="github",
    )  # fmt: skip
    restricted = f", restricted to the {len(users)} users of {Path(users_of).as_posix()}" if users is not None else ""
    return rows, f"{table}, {metric}, per-user values averaged over the seeds both methods have{restricted}\n\n{text}"
