"""Trust without a test set, measured: planted label mistakes found, calibration, the audit estimate.

    python benchmarks/trust.py                       # 4 classes, SNR 1, pool 240, 96 labels, 8% flipped
    python benchmarks/trust.py --labeled 48 --seed 1
    python benchmarks/trust.py --tiny --out /tmp/trust.json   # a seconds-long smoke run (CI)

A random labeled set of ``--labeled`` volumes is drawn from the simulated pool (``ktal-cryo
simulate ... --classes 4 --per-class 60 --snr 1``) and ``--flip`` of its labels are changed to
another class, as an expert's slips. Then:

- cross-fitting (:mod:`napari_ktal.core.trust.crossfit`; the recipe's ``[trust]`` folds and repeats,
  as ``ktal-cryo review`` runs it) gives every labeled volume out-of-sample probabilities; confident learning ranks them; reported: the share of the flipped
  volumes among the top 2K suspects (K = flipped), the issue's target being 70%;
- the labeled set is a uniform sample, so all of it is an audit slice: the cross-fitted accuracy
  against the given (partly wrong) labels, with its Wilson interval, is set beside the true
  accuracy, on the rest of the pool, of a teacher trained on all the labels;
- temperature scaling fitted on the cross-fitted logits: NLL and ECE before and after, on those logits
  (in sample for T) and on the teacher's logits for the rest of the pool (out of sample);
- the cost: cross-fitting's seconds against one cycle's training (teacher + student) on the same set.

Prints a summary and saves JSON (``--out``, default benchmarks/results/trust.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_ktal.core.engine import TrainJob, train_pair
from napari_ktal.core.loop import load_labeled_set, load_recipe
from napari_ktal.core.models import build_pair
from napari_ktal.core.seeds import derive_seed
from napari_ktal.core.simulate import SimulationConfig, class_name, simulate_dataset
from napari_ktal.core.trust import (
    apply_temperature,
    calibrate,
    crossfit,
    crossfit_accuracy,
    expected_calibration_error,
    rank_suspects,
)
from napari_ktal.core.trust.calibration import nll
from napari_ktal.core.trust.crossfit import fit_fold

OUT = Path(__file__).resolve().parent / "results" / "trust.json"
FULL = dict(sim=dict(classes=4, per_class=60, snr=1.0, seed=1), recipe={}, labeled=96, folds=5)
TINY = dict(sim=dict(classes=4, per_class=8, snr=2.0, box=16, seed=1),
            recipe=dict(model={"width": 4}, train={"min_steps": 0, "epochs": 2, "lr_milestones": [], "batch_size": 8}),
            labeled=16, folds=3)


def planted(truth: np.ndarray, n_labeled: int, flip: float, n_classes: int, rng: np.random.Generator):
    """(labeled pool indices, their given labels, the positions flipped): a random set, some labels wrong."""
    labeled = np.sort(rng.choice(len(truth), n_labeled, replace=False))
    given = truth[labeled].copy()
    flipped = np.sort(rng.choice(n_labeled, max(1, round(flip * n_labeled)), replace=False))
    given[flipped] = (given[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
    return labeled, given, flipped


def cycle_seconds(x, y, recipe, n_classes: int, device, seed: int) -> float:
    """One cycle's training (the recipe's teacher and student) on the labeled set, timed."""
    torch.manual_seed(derive_seed(seed, "init", 0))
    teacher, student = build_pair(recipe.model, n_classes)
    job = TrainJob(recipe.train.for_labeled(len(y), n_classes), recipe.transfer, derive_seed(seed, "train", 0),
                   0, recipe.speed)
    t0 = time.perf_counter()
    train_pair(teacher, student, x, y, job, device=device)
    return time.perf_counter() - t0


def measure(config: dict, flip: float, seed: int, device: torch.device, work: Path) -> dict:
    """Every number of the benchmark, for one simulated pool and one planted labeled set."""
    sim = SimulationConfig(test_per_class=0, **config["sim"])
    train_csv, _ = simulate_dataset(work, sim)
    names = [class_name(k, sim.classes) for k in range(sim.classes)]
    data = load_labeled_set(train_csv, names)
    x_all, truth = data.volumes.astype(np.float32), data.y
    recipe = load_recipe("quick").replace(**config["recipe"]) if config["recipe"] else load_recipe("quick")
    labeled, given, flipped = planted(truth, config["labeled"], flip, sim.classes, np.random.default_rng(seed))
    x = x_all[labeled]
    cf = crossfit(x, given, recipe, device, n_classes=sim.classes, indices=labeled, folds=config["folds"], seed=seed)
    ranked = rank_suspects(cf.probs, cf.labels, np.arange(len(given)), cf.judged)
    top = [s.index for s in ranked[: 2 * len(flipped)]]
    audit = crossfit_accuracy(cf.predictions, given)
    cal = calibrate(cf.logits, given)
    # the teacher on all the (given) labels, judged on the rest of the pool against the truth
    rest = np.setdiff1d(np.arange(len(truth)), labeled)
    order = np.concatenate([labeled, rest])
    held = np.arange(len(order)) >= len(labeled)
    logits_rest = fit_fold(x_all[order], np.concatenate([given, truth[rest]]), held, recipe, device,
                           n_classes=sim.classes, seed=derive_seed(seed, "teacher"))
    true_acc = float((logits_rest.argmax(1) == truth[rest]).mean())
    return {
        "pool": len(truth), "labeled": len(given), "flipped": len(flipped), "folds": cf.n_folds, "repeats": cf.n_repeats,
        "flipped_in_top_2k": len(set(top) & set(flipped.tolist())) / len(flipped),
        "suspects_flagged": int(sum(s.suspect for s in ranked)),
        "crossfit_accuracy_vs_truth": float((cf.predictions == truth[labeled]).mean()),
        "audit_estimate": {"accuracy": audit.accuracy, "low": audit.low, "high": audit.high, "n": audit.n},
        "true_accuracy_rest": true_acc, "rest": len(rest),
        "audit_interval_holds_truth": bool(audit.low <= true_acc <= audit.high),
        "temperature": cal.temperature, "ece_crossfit_before": cal.ece_before, "ece_crossfit_after": cal.ece_after,
        "nll_crossfit_before": nll(cf.logits, given, 1.0), "nll_crossfit_after": nll(cf.logits, given, cal.temperature),
        "ece_rest_before": expected_calibration_error(apply_temperature(logits_rest, 1.0), truth[rest]),
        "ece_rest_after": expected_calibration_error(apply_temperature(logits_rest, cal.temperature), truth[rest]),
        "crossfit_seconds": cf.seconds,
        "cycle_train_seconds": cycle_seconds(x, given, recipe, sim.classes, device, seed),
        "torch_threads": torch.get_num_threads(), "device": str(device),
    }


def report(r: dict) -> str:
    a = r["audit_estimate"]
    return "\n".join([
        f"pool {r['pool']}, {r['labeled']} labeled, {r['flipped']} flipped, {r['folds']} folds x {r['repeats']} repeats",
        f"flipped labels among the top 2K suspects: {r['flipped_in_top_2k']:.0%} ({r['suspects_flagged']} flagged)",
        f"audit estimate {a['accuracy']:.1%} [{a['low']:.1%}, {a['high']:.1%}] (n {a['n']:.0f}) vs the teacher's true "
        f"accuracy on the other {r['rest']} volumes {r['true_accuracy_rest']:.1%}",
        f"temperature {r['temperature']:.2f}: ECE cross-fitted {r['ece_crossfit_before']:.3f} -> "
        f"{r['ece_crossfit_after']:.3f}, rest of the pool {r['ece_rest_before']:.3f} -> {r['ece_rest_after']:.3f}",
        f"cross-fitting {r['crossfit_seconds']:.0f} s = {r['crossfit_seconds'] / r['cycle_train_seconds']:.1f} x "
        f"one cycle's training ({r['cycle_train_seconds']:.0f} s)",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a 32-volume pool of 16^3, width 4, 2 epochs")
    p.add_argument("--labeled", type=int, help="labeled volumes (default 96: 40%% of the pool)")
    p.add_argument("--flip", type=float, default=0.08, help="share of the labels changed to another class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = dict(TINY if args.tiny else FULL)
    if args.labeled:
        config["labeled"] = args.labeled
    with tempfile.TemporaryDirectory(prefix="ktal-trust-") as work:
        result = measure(config, args.flip, args.seed, torch.device(args.device), Path(work))
    result.update(tiny=args.tiny, seed=args.seed, flip=args.flip)
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
