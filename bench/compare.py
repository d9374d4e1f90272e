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
