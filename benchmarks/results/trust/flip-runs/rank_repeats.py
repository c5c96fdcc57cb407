"""Issue 21: wrongly labeled volumes in the top 2K suspects, per ranking rule, for single cross-fittings
(each repeat alone), pairs and all repeats averaged.

Run from the repository root: python benchmarks/results/trust/flip-runs/rank_repeats.py
It reads audit-seed{0,1,2}/ (crossfit-3repeats.npz, labels.jsonl, oracle_flips.csv) and
pool_index.csv (pool index -> key; the same pool for every run). "shipped" is napari_ktal's
rank_suspects; "first rule" is the module's first version (flag when another class j has
P[j] >= t_j and P[j] > P[label], flagged first, by normalised margin), written out here only to
compare; "self-confidence" ranks by p(label) alone.
"""
import csv, itertools, json, sys
from pathlib import Path
import numpy as np
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))  # the repository root
from napari_ktal.core.trust import class_thresholds, rank_suspects  # noqa: E402

def wrong_keys(run):
    flips = {r["key"]: r for r in csv.DictReader(open(run / "oracle_flips.csv"))}
    labels = {}
    for line in open(run / "labels.jsonl"):
        rec = json.loads(line)
        if rec.get("op") == "set": labels[rec["key"]] = rec["label"]
        elif rec.get("op") == "unset": labels.pop(rec.get("key"), None)
    return {k for k, r in flips.items() if labels.get(k) == r["given"] and r["given"] != r["true"]}

def first_rule_order(probs, labels):
    rows = np.arange(len(labels)); pg = probs[rows, labels]
    confident = (probs >= class_thresholds(probs, labels)) & (probs > pg[:, None]); confident[rows, labels] = False
    others = probs.copy(); others[rows, labels] = -np.inf
    margin = (1 - (pg - others.max(1))) / 2
    return np.lexsort((-margin, ~confident.any(1)))

def hits(probs, labels, isw):
    K = int(isw.sum())
    shipped = np.array([s.index for s in rank_suspects(probs, labels)])
    orders = {'first rule': first_rule_order(probs, labels), 'shipped': shipped,
              'self-confidence': np.argsort(probs[np.arange(len(labels)), labels], kind='stable')}
    return {k: int(isw[o[:2 * K]].sum()) for k, o in orders.items()}

def main(run):
    z = np.load(run / 'crossfit-3repeats.npz')
    keys = [r['key'] for r in csv.DictReader(open(HERE / 'pool_index.csv'))]
    wrong = wrong_keys(run); isw = np.array([keys[i] in wrong for i in z['indices']]); labels = z['labels']
    rl = z['repeat_logits'].astype(np.float64)
    print(run.name, 'K', int(isw.sum()))
    for size in range(1, len(rl) + 1):
        for combo in itertools.combinations(range(len(rl)), size):
            e = np.exp(rl[list(combo)] - rl[list(combo)].max(-1, keepdims=True))
            probs = (e / e.sum(-1, keepdims=True)).mean(0)
            print(' ', list(combo), 'acc vs given %.3f' % (probs.argmax(1) == labels).mean(), hits(probs, labels, isw))

if __name__ == '__main__':
    for s in (0, 1, 2):
        main(HERE / f'audit-seed{s}')
