"""Issue 21: wrongly labeled volumes in the top 2K suspects, per ranking rule, for single cross-fittings
(each repeat alone), pairs and all repeats averaged. Reads P/review/crossfit.npz with repeat_logits."""
import csv, itertools, json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, '/work/review-wt')
from napari_ktal.core.trust.mistakes import flag_suspects, margin_score

def wrong_keys(P):
    flips = {r["key"]: r for r in csv.DictReader(open(P / "oracle_flips.csv"))}
    labels = {}
    for line in open(P / "labels.jsonl"):
        rec = json.loads(line)
        if rec.get("op") == "set": labels[rec["key"]] = rec["label"]
        elif rec.get("op") == "unset": labels.pop(rec.get("key"), None)
    return {k for k, r in flips.items() if labels.get(k) == r["given"] and r["given"] != r["true"]}

def softmax(z):
    z = z - z.max(-1, keepdims=True); e = np.exp(z); return e / e.sum(-1, keepdims=True)

def hits(probs, labels, isw):
    K = int(isw.sum()); rows = np.arange(len(labels)); pg = probs[rows, labels]
    flagged = flag_suspects(probs, labels); m = margin_score(probs, labels)
    orders = {'flag+margin': np.lexsort((-m, ~flagged)), 'margin': np.argsort(-m, kind='stable'),
              'selfconf': np.argsort(pg, kind='stable'), 'flag+selfconf': np.lexsort((pg, ~flagged)),
              'neq+selfconf': np.lexsort((pg, probs.argmax(1) == labels))}
    from napari_ktal.core.trust.mistakes import class_thresholds
    adj = probs - class_thresholds(probs, labels)[None]; adj = adj - adj.min(); adj = adj / adj.sum(1, keepdims=True)
    orders['adj-selfconf'] = np.argsort(adj[rows, labels], kind='stable')
    orders['neq+adj'] = np.lexsort((adj[rows, labels], probs.argmax(1) == labels))
    out = {k: int(isw[o[:2 * K]].sum()) for k, o in orders.items()}
    neq = probs.argmax(1) != labels
    out['CLflag(n/wrong)'] = f"{int(flagged.sum())}/{int((flagged & isw).sum())}"
    out['neq(n/wrong)'] = f"{int(neq.sum())}/{int((neq & isw).sum())}"
    return out

def main(P):
    P = Path(P); z = np.load(P / 'review' / 'crossfit.npz')
    keys = [r['key'] for r in csv.DictReader(open(P / 'pool' / 'index.csv'))]
    wrong = wrong_keys(P); isw = np.array([keys[i] in wrong for i in z['indices']]); labels = z['labels']
    truth_of = {r['key']: r for r in csv.DictReader(open(P / 'oracle_flips.csv'))}
    rl = z['repeat_logits'] if 'repeat_logits' in z.files else z['logits'][None]
    R = len(rl); out = {'project': str(P), 'K': int(isw.sum()), 'n': len(labels), 'R': R, 'combos': []}
    for size in range(1, R + 1):
        for combo in itertools.combinations(range(R), size):
            probs = softmax(rl[list(combo)].astype(np.float64)).mean(0)
            acc = float((probs.argmax(1) == labels).mean())
            out['combos'].append({'repeats': list(combo), 'acc_vs_given': round(acc, 3), **hits(probs, labels, isw)})
    print(json.dumps(out, indent=1)); return out

if __name__ == '__main__':
    res = [main(p) for p in sys.argv[1:]]
