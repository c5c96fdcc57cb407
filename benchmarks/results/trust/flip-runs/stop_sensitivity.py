"""Issue 21 item 3: where the stop rule (suggest_stop, as shipped) would have stopped each oracle run, at the
shipped threshold and looser ones; labels saved against the run's budget and test accuracy lost."""
import csv, json, math, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root; args: run folders
from napari_ktal.core.trust.stopping import suggest_stop
def f(v):
    try: return float(v)
    except (TypeError, ValueError): return math.nan
rows = []
for p in sys.argv[1:]:
    hist = list(csv.DictReader(open(Path(p) / 'history.csv')))
    kap = [f(h['stop_kappa']) for h in hist]; low = [f(h['estimated_accuracy_low']) for h in hist]
    acc = [f(h['test_accuracy']) for h in hist]; lab = [int(h['n_labeled']) for h in hist]
    for thr in (0.99, 0.95, 0.9, 0.8, 0.7):
        for window in (3, 2):
            stop = next((c for c in range(len(hist)) if suggest_stop(kap[1:c + 1], low[:c + 1], threshold=thr, window=window)[0]), None)
            rows.append(dict(run=Path(p).name, threshold=thr, window=window, stop_cycle=stop,
                             labels_at_stop=None if stop is None else lab[stop], budget=lab[-1],
                             acc_at_stop=None if stop is None else acc[stop], final_acc=acc[-1]))
print(json.dumps(rows))
for thr in (0.99, 0.95, 0.9, 0.8, 0.7):
    for window in (3, 2):
        sel = [r for r in rows if r['threshold'] == thr and r['window'] == window]
        fired = [r for r in sel if r['stop_cycle'] is not None]
        saved = [1 - r['labels_at_stop'] / r['budget'] for r in fired]; lost = [r['final_acc'] - r['acc_at_stop'] for r in fired]
        print(f"kappa>={thr} window {window}: fired in {len(fired)}/{len(sel)} runs; labels saved "
              f"{[f'{100*s:.0f}%' for s in saved]}; accuracy lost {[f'{100*l:+.1f}' for l in lost]}")
