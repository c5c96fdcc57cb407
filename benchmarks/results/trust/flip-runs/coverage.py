"""Issue 21 Done-when 2 per run: does the estimate's interval (raw, widened by 8 points) hold the test accuracy?"""
import csv, sys
from pathlib import Path
tot = tot_w = n = 0
for p in sys.argv[1:]:
    hist = list(csv.DictReader(open(Path(p) / "history.csv")))
    line = []
    h_raw = h_w = 0
    for h in hist:
        t, e, lo, hi = (float(h[c]) for c in ("test_accuracy", "estimated_accuracy", "estimated_accuracy_low", "estimated_accuracy_high"))
        raw = lo <= t <= hi; wid = lo - 0.08 <= t <= hi + 0.08
        h_raw += raw; h_w += wid
        line.append(f"c{h['cycle']} {100*t:.0f}/{100*e:.0f}[{100*lo:.0f},{100*hi:.0f}]{'' if raw else '*'} k={h.get('stop_kappa','')[:4]} s={h.get('stop_suggested','')}")
    tot += h_raw; tot_w += h_w; n += len(hist)
    print(Path(p).name, f"holds {h_raw}/{len(hist)} widened {h_w}/{len(hist)}", " | ".join(line))
print(f"ALL holds {tot}/{n} widened {tot_w}/{n}")
