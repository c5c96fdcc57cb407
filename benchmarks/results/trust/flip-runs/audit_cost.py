"""Issue 21: the AUBC cost of the audit slice, paired by seed: flip runs with [trust] audit = 0.1 against 0."""
import csv, json, sys
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))  # the repository root; run: python audit_cost.py 0 1 2
from napari_ktal.core.loop.benchmark import aubc
from napari_ktal.core.evaluation.stats import paired_comparison
N_POOL = 240
def curve(p):
    h = list(csv.DictReader(open(Path(p) / 'history.csv')))
    return [int(r['n_labeled']) / N_POOL for r in h], [float(r['test_accuracy']) for r in h]
a, b, per = {}, {}, {}
for s in map(int, sys.argv[1:]):
    fa, ya = curve(HERE / f'audit-seed{s}'); fb, yb = curve(HERE / f'noaudit-seed{s}')
    a[s], b[s] = aubc(fa, ya), aubc(fb, yb)
    per[s] = dict(audit=a[s], no_audit=b[s], final_audit=ya[-1], final_no_audit=yb[-1], acc_audit=ya, acc_no_audit=yb)
    print(f"seed {s}: AUBC audit {100*a[s]:.1f} no audit {100*b[s]:.1f}  final {100*ya[-1]:.1f} vs {100*yb[-1]:.1f}")
c = paired_comparison(a, b)
print('audit - no audit:', c.describe())
json.dump(dict(per_seed=per, mean_difference=c.mean_difference, ci=c.ci, p=c.p_value, wins=c.wins, n=c.n), open(HERE / 'audit_cost.json', 'w'), indent=1)
