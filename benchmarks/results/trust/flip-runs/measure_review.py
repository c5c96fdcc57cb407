"""Issue 21, Done-when 1 and 2 on a finished flip run: wrongly labeled volumes among the top 2K suspects;
the estimate's interval (raw and widened by 8 points) against the test accuracy per cycle."""
import csv, json, sys
from pathlib import Path
P = Path(sys.argv[1])
flips = {r["key"]: r for r in csv.DictReader(open(P / "oracle_flips.csv"))}
labels = {}
for line in open(P / "labels.jsonl"):
    rec = json.loads(line)
    if rec.get("op") == "set":
        labels[rec["key"]] = rec["label"]
    elif rec.get("op") == "unset":
        labels.pop(rec.get("key"), None)
wrong = {k for k, r in flips.items() if labels.get(k) == r["given"] and r["given"] != r["true"]}
sus = list(csv.DictReader(open(P / "suspects.csv")))
K = len(wrong)
top = {r["path"] for r in sus[: 2 * K]}
hist = list(csv.DictReader(open(P / "history.csv")))
rows = []
for h in hist:
    t, e, lo, hi = (float(h[c]) if h[c] not in ("", "nan") else float("nan") for c in
                    ("test_accuracy", "estimated_accuracy", "estimated_accuracy_low", "estimated_accuracy_high"))
    rows.append(dict(cycle=int(h["cycle"]), test=t, est=e, low=lo, high=hi, holds=lo <= t <= hi,
                     holds_widened=lo - 0.08 <= t <= hi + 0.08, kappa=h.get("stop_kappa"), stop=h.get("stop_suggested")))
out = dict(project=str(P), labeled=len(labels), wrong_in_project=K, suspects=len(sus),
           wrong_in_top_2k=len(top & wrong), share=len(top & wrong) / K if K else float("nan"),
           cycles=rows, holds=sum(r["holds"] for r in rows), holds_widened=sum(r["holds_widened"] for r in rows))
print(json.dumps(out, indent=1))
