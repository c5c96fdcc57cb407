"""``ktal-cryo``: the headless shell over the compute core.

    ktal-cryo simulate OUT --classes K --per-class N [--test-per-class T] [--snr S] [--box 32] [--junk-fraction F] [--seed X]
    ktal-cryo simulate-scene OUT [--classes K] [--per-class N] [--junk J] [--tomograms T] [--snr S] [--seed X]
    ktal-cryo extract PICKS --tomograms TOMOS --out DIR [--box 32] [--voxel-size A] [--invert auto|yes|no]
    ktal-cryo train [DATA | PICKS --tomograms TOMOS] --project P [--recipe R] [--oracle LABELS] [--test TEST.csv] ...
    ktal-cryo import-labels LABELS --project P
    ktal-cryo export --project P --out FILE [--format star|dynamo|copick|csv]
    ktal-cryo predict --project P [--out predictions.csv]
    ktal-cryo review --project P --out suspects.csv [--folds K] [--device D] [--seed X]
    ktal-cryo benchmark DATA --oracle LABELS --test TEST --strategies kt,random,... --seeds 3 --recipe R --out DIR
    ktal-cryo strategies

Errors a user can fix are one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from pathlib import Path

from .core.progress import RunContext

PROG = "ktal-cryo"


# -- terminal output ---------------------------------------------------------------------
class ProgressPrinter:
    """A progress bar on a terminal (tqdm); silent when stderr is a log file."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        self._key = None

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        from .core.progress import describe

        key = (p.phase, p.cycle)
        done, total = p.steps
        if key != self._key:
            self.close()
            self._key = key
            self._bar = tqdm(total=total, leave=False, file=sys.stderr, dynamic_ncols=True)
        self._bar.set_description(describe(p, with_counts=False), refresh=False)
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


TABLE = [("cycle", "{:>5}"), ("labeled", "{:>9}"), ("test acc", "{:>8}"), ("estimate (audit)", "{:>18}"),
         ("bal. acc", "{:>8}"),
         ("uncert.", "{:>8}"), ("train s", "{:>8}"), ("select s", "{:>8}")]


def _table_header() -> str:
    return "  ".join(f.format(h) for h, f in TABLE)


def _table_row(r, n_pool: int) -> str:
    from .core.trust import estimate_text

    def pct(v):
        return "-" if math.isnan(v) else f"{100 * v:.1f}%"

    def num(v, fmt):
        return "-" if math.isnan(v) else fmt.format(v)

    vals = [r.cycle, f"{r.n_labeled} ({100 * r.n_labeled / n_pool:.0f}%)", pct(r.test_accuracy),
            estimate_text(r.estimated_accuracy, r.estimated_accuracy_low, r.estimated_accuracy_high),
            pct(r.test_balanced_accuracy), num(r.mean_uncertainty, "{:.4f}"), f"{r.train_seconds:.1f}",
            f"{r.select_seconds:.1f}"]
    return "  ".join(f.format(v) for (_, f), v in zip(TABLE, vals))


def _stop_summary(history: list[dict], n_pool: int) -> str:
    """Where the stop rule first suggested stopping in a simulated run, and the test accuracy there and at the end."""
    from .core.project.history import num

    def acc(row) -> str:
        v = num(row.get("test_accuracy"))
        return "no test set" if math.isnan(v) else f"test accuracy {100 * v:.1f}%"

    if not history:
        return "stop rule: no cycle trained"
    last = history[-1]
    end = f"{acc(last)} at the end ({last['n_labeled']} labels)"
    first = next((r for r in history if r.get("stop_suggested") == "1"), None)
    if first is None:
        return f"stop rule: never suggested stopping; {end}"
    n = int(first["n_labeled"])
    return (f"stop rule: first suggested stopping after cycle {first['cycle']}, at {n} labels "
            f"({100 * n / n_pool:.0f}% of the pool): {acc(first)} there, {end}")


def _one_line(text) -> str:
    return " ".join(str(text).split())


_warned: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    text = _one_line(message)
    if text not in _warned:  # a file checked twice (find, then read) warns once
        _warned.add(text)
        print(f"{PROG}: warning: {text}", file=sys.stderr)


# -- commands ----------------------------------------------------------------------------
def cmd_simulate(args) -> int:
    from .core.progress import Progress
    from .core.simulate import SimulationConfig, simulate_dataset

    cfg = SimulationConfig(classes=args.classes, per_class=args.per_class, test_per_class=args.test_per_class,
                           snr=args.snr, box=args.box, seed=args.seed, imbalance=args.imbalance,
                           neighbours=args.neighbours, junk_fraction=args.junk_fraction)
    bar = ProgressPrinter()
    train, test = simulate_dataset(Path(args.out), cfg, progress=lambda d, t: bar(Progress("simulate", d, t)))
    bar.close()
    n_test = cfg.classes * cfg.test_per_class
    train_junk, test_junk = cfg.junk_counts()
    print(f"wrote {sum(cfg.class_counts()) + train_junk} training volumes ({train})"
          + (f" and {n_test + test_junk} test volumes ({test})" if test else "")
          + (f", {train_junk} + {test_junk} of them junk" if train_junk else ""))
    return 0


def _pick_source(args, picks):
    """The particle list of ``extract`` / ``train`` and how to cut it, from the command line."""
    from .core.data import PickOptions
    from .core.loop import commands

    options = PickOptions(units=args.units, pick_pixel_size=args.pick_pixel_size,
                          tomogram_voxel_size=args.tomogram_voxel_size, copick_user=args.copick_user,
                          copick_session=args.copick_session,
                          copick_objects=tuple(o.strip() for o in args.copick_objects.split(","))
                          if args.copick_objects else None,
                          copick_tomo_type=args.copick_tomo_type, copick_voxel_size=args.copick_voxel_size)
    return commands.PickSource(Path(picks), Path(args.tomograms) if args.tomograms else None, box=args.box,
                               voxel_size=args.voxel_size, invert=args.invert, options=options)


def _say_plan(plan) -> None:
    print(plan.summary())
    for note in plan.notes:
        print(f"  {note}")


def cmd_extract(args) -> int:
    from .core.loop import commands

    bar = ProgressPrinter()
    result = commands.extract(_pick_source(args, args.picks), args.out, on_plan=_say_plan, run=RunContext(bar))
    bar.close()
    clipped = f" ({result.n_clipped} cross the tomogram's edge: padded, clipped=1)" if result.n_clipped else ""
    print(f"wrote {result.n} particles at {result.voxel_size:g} A{clipped} to {result.folder}; list: {result.table}")
    return 0


def cmd_simulate_scene(args) -> int:
    from .core.simulate import SceneConfig, write_scene

    shape = tuple(int(v) for v in args.shape.lower().replace("x", ",").split(","))
    cfg = SceneConfig(classes=args.classes, per_class=args.per_class, junk=args.junk, tomograms=args.tomograms,
                      shape=shape[::-1], snr=args.snr, seed=args.seed, invert=args.invert)
    picks = write_scene(Path(args.out), cfg)
    n = cfg.classes * cfg.per_class + cfg.junk
    print(f"wrote {cfg.tomograms} tomograms ({'x'.join(map(str, cfg.shape[::-1]))}) with {n} picks: {picks} "
          f"(classes: {picks.with_name('truth.star')}, names: {picks.with_name('classes.csv')})")
    return 0


def cmd_export(args) -> int:
    from .core.engine import resolve_device
    from .core.loop import export_labels
    from .core.project import Project

    project = Project(args.project)
    bar = ProgressPrinter()
    device = resolve_device(args.device) if not args.no_predictions and project.checkpoint_cycles() else None
    result = export_labels(project, args.out, fmt=args.format, device=device, predictions=not args.no_predictions,
                           copick_user=args.copick_user, copick_session=args.copick_session,
                           calibrated=args.calibrated, run=RunContext(bar))
    bar.close()
    teacher = f", {result.n_predicted} predicted by the cycle {result.cycle} teacher" if result.cycle is not None else ""
    if result.cycle is not None:
        teacher += "; raw softmax confidences" if result.temperature is None else \
            f"; confidences calibrated, T = {result.temperature:.3g}"
    print(f"wrote {result.n_rows} rows ({result.n_labeled} labeled{teacher}) as {result.format} to {result.path}")
    for note in result.notes:
        print(f"  {note}")
    return 0


def cmd_train(args) -> int:
    """``train`` on one process, or as one rank of several (torchrun): every rank runs this; rank 0
    alone opens, locks, reads and writes the project and prints, the others get what they need
    from it (``project`` is None there)."""
    from .core.engine import describe_speed, resolve_device
    from .core.loop import commands
    from .core.evaluation.plots import learning_curve_png
    from .core.loop.ranks import from_rank0, is_main

    main = is_main()
    project, lock, recipe = None, contextlib.nullcontext(), None
    if main:
        recipe = commands.load_recipe(args.recipe) if args.recipe else None
        bar = ProgressPrinter()
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        picks = None
        if args.data is not None and (args.tomograms or commands.is_particle_list(args.data)):
            picks = _pick_source(args, args.data)
        project, created = commands.open_or_create(args.project, args.data, recipe=recipe, classes=classes,
                                                   picks=picks, on_plan=_say_plan, run=RunContext(bar))
        bar.close()
        if created:
            print(f"created project {project.root} with {len(project.pool)} volumes of {project.pool.box}^3")
        lock = project.locked(f"{PROG} train")  # another run or a napari window on it: refused, one line
    with lock:
        device = resolve_device(args.device)
        # rank 0 checks and stores the run's inputs; every rank gets the plan and rank 0's seed
        plan, seed = from_rank0(lambda: (commands.prepare_training(project, recipe=recipe, strategy=args.strategy,
                                                                   oracle=args.oracle, test=args.test,
                                                                   flip_answers=args.flip_answers, seed=args.seed),
                                            args.seed))
        if not main:  # the same cycles, silently
            commands.train(None, plan, device, seed=seed)
            return 0
        n_pool = len(project.pool)

        def on_cycle(report):
            bar.close()
            print(_table_row(report, n_pool), flush=True)
            learning_curve_png(project.history(), project.paths.learning_curve, n_pool,
                               f"{plan.recipe.name}: {plan.recipe.active.strategy}, {n_pool} volumes")

        print(f"recipe {plan.recipe.name}, device {device} ({describe_speed(plan.recipe.speed, device)}), "
              f"seed {seed}")
        outcome = commands.train(project, plan, device, seed=seed, on_begin=lambda: print(_table_header(),
                                 flush=True), on_cycle=on_cycle, run=RunContext(bar))
    if outcome.kind == "done":
        print(f"all {outcome.n_cycles} cycles are done already (see {project.paths.history})")
        return 0
    if outcome.kind == "initial":
        print(f"no labels yet: label the {outcome.next_size} volumes of {outcome.next_batch} "
              f"(napari, or `{PROG} import-labels`), then run train again")
        return 0
    if outcome.kind == "oracle":
        print(_stop_summary(project.history(), n_pool))
    elif outcome.reports and outcome.reports[-1].stop_reason:
        print(f"stop rule: {outcome.reports[-1].stop_reason}")
    if outcome.next_batch is not None:
        print(f"next batch to label: {outcome.next_size} volumes in {outcome.next_batch}")
    print(f"history: {project.paths.history}\nlearning curve: {project.paths.learning_curve}")
    return 0


def cmd_train_launch(args) -> int:
    """``train``, on one process or, with ``--gpus N`` / under torchrun, on several (the same program on each)."""
    from .core.engine import distributed
    from .core.errors import KtalError

    if not distributed.launched_by_torchrun():
        if args.gpus < 1:
            raise KtalError("--gpus must be at least 1")
        return cmd_train(args) if args.gpus == 1 else _launch_torchrun(args)
    args.device = str(distributed.init_from_env(args.device))
    try:
        return cmd_train(args)
    except RuntimeError as exc:  # another rank failed and left (rank 0 says why): one line, not a traceback
        if distributed.is_main() or not _peer_left(exc):
            raise
        print(f"{PROG}: rank {distributed.rank()}: stopped, another rank left", file=sys.stderr)
        # the job's exit status is the failed rank's: a code of our own here could reach the launcher
        # first (this rank often exits while rank 0 is still tearing down) and stand for the job's
        return 0
    finally:
        distributed.shutdown()


def _peer_left(exc: BaseException) -> bool:
    import torch.distributed as tdist

    text = str(exc)
    if "timeout" in text.lower() or "timed out" in text.lower():  # a wait that ran out, not a rank that left
        return False
    return isinstance(exc, tdist.DistError) or "closed by peer" in text or "Connection reset" in text


def _launch_torchrun(args) -> int:
    """Run this ``train`` command under torchrun's launcher with ``--gpus`` processes on this machine."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    argv = ["--standalone", f"--nproc-per-node={args.gpus}", "-m", "napari_ktal.cli", "train"]
    parser = build_parser()
    train_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for action in train_parser._actions:
        if action.dest in ("help", "gpus") or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None or value == action.default:
            continue
        if not action.option_strings:
            argv.append(str(value))
        elif action.nargs == 0:  # a flag
            argv.append(action.option_strings[-1])
        else:
            argv += [action.option_strings[-1], str(value)]
    print(f"starting {args.gpus} processes: torchrun --nproc-per-node {args.gpus} -m napari_ktal.cli train ...",
          flush=True)
    try:
        run(get_args_parser().parse_args(argv))
    except ChildFailedError as exc:  # rank 0 said why already; torchrun's traceback would only repeat it
        codes = [f.exitcode for _, f in sorted(exc.failures.items())]  # rank 0's first: it says why
        return next((c for c in codes if c and c > 0), 1)
    return 0


def cmd_import_labels(args) -> int:
    from .core.loop import import_labels
    from .core.project import Project

    with Project(args.project).locked(f"{PROG} import-labels") as project:
        result = import_labels(project, args.labels, add_classes=args.add_classes)
    print(f"imported {result.n_imported} labels; {result.n_labeled} volumes are labeled")
    return 0


def cmd_predict(args) -> int:
    from .core.engine import resolve_device
    from .core.loop import write_predictions
    from .core.project import Project

    project = Project(args.project)
    bar = ProgressPrinter()
    out = Path(args.out) if args.out else project.paths.predictions
    result = write_predictions(project, out, resolve_device(args.device), calibrated=args.calibrated,
                               run=RunContext(bar))
    bar.close()
    calibrated = "raw softmax confidences" if result.temperature is None else \
        f"confidences calibrated, T = {result.temperature:.3g}"
    print(f"wrote predictions for {result.n_volumes} volumes (cycle {result.cycle} teacher; {calibrated}) "
          f"to {result.path}")
    return 0


REVIEW_TOP = 5  # suspects the review's summary names


def cmd_review(args) -> int:
    """Judge every label out of sample; write path,label,suggested,score, most likely mistake first."""
    from .core.engine import resolve_device
    from .core.loop.label_review import review_labels, write_suspects
    from .core.project import Project

    bar = ProgressPrinter()
    with Project(args.project).locked(f"{PROG} review") as project:
        review = review_labels(project, resolve_device(args.device), folds=args.folds, repeats=args.repeats,
                               seed=args.seed, run=RunContext(bar))
        bar.close()
        rows = review.rows(project.pool.keys)
        write_suspects(Path(args.out), rows)
    cf, cal = review.crossfit, review.calibration
    suspects = [r for r in rows if r.suspect]
    print(f"judged {len(rows)} labels out of sample ({cf.n_folds} folds"
          f"{f' x {cf.n_repeats} repeats' if cf.n_repeats > 1 else ''}, {cf.seconds:.0f} s, after cycle "
          f"{review.cycle}): {len(suspects)} likely mistakes; wrote {args.out}")
    agreement = review.agreement_text()
    print(agreement[0].upper() + agreement[1:] + ".")
    for r in suspects[:REVIEW_TOP]:
        print(f"  {r.key}: labeled {r.given}, looks like {r.suggested} (p({r.given}) = {r.p_given:.3g}, "
              f"score {r.score:.3f})")
    print(f"calibration: ECE {100 * cal.ece_before:.1f}% -> {100 * cal.ece_after:.1f}% with T = "
          f"{cal.temperature:.3g} (cross-fitted); predict and export apply it with --calibrated")
    return 0


def cmd_benchmark(args) -> int:
    from .core.engine import describe_speed, resolve_device
    from .core.errors import KtalError
    from .core.loop import commands
    from .core.loop.benchmark import BenchmarkSpec, parse_strategies, summary_table

    strategies = parse_strategies(args.strategies)
    if args.seeds < 1:
        raise KtalError("--seeds must be at least 1")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    recipe = commands.load_recipe(args.recipe or commands.DEFAULT_RECIPE)
    device = resolve_device(args.device)
    out = Path(args.out)
    bar = ProgressPrinter()
    print(f"benchmark of {', '.join(strategies)} x seeds {', '.join(map(str, seeds))}; "
          f"recipe {recipe.name}, device {device} ({describe_speed(recipe.speed, device)}), folder {out}", flush=True)

    current = {"name": ""}

    def on_start(strategy, seed):
        bar.close()
        current["name"] = f"{strategy}-seed{seed}"
        print(f"{current['name']}: running ...", flush=True)

    def on_cycle(r):
        bar.close()
        acc = "-" if math.isnan(r.test_accuracy) else f"{100 * r.test_accuracy:.1f}%"
        print(f"  {current['name']} cycle {r.cycle}: {r.n_labeled} labeled, test acc {acc}, "
              f"train {r.train_seconds:.1f} s, query {r.select_seconds:.2f} s", flush=True)

    def on_run(outcome):
        bar.close()
        print(outcome.line(), flush=True)

    spec = BenchmarkSpec(args.data, args.oracle, args.test, strategies, seeds, recipe, out, device, args.metric)
    result = commands.benchmark(spec, lock_purpose=f"{PROG} benchmark", on_run=on_run, on_start=on_start,
                                on_cycle=on_cycle, run=RunContext(bar))
    bar.close()
    print()
    print(summary_table(result.curves, result.n_pool))
    print(f"\nresults: {out / 'results.csv'}\nsummary: {out / 'summary.csv'}\nplot: {out / 'benchmark.png'}")
    return 0


def cmd_strategies(args) -> int:
    from .core.strategies import strategy_table

    print(strategy_table())
    return 0


# -- parser ------------------------------------------------------------------------------
def strategy_names() -> list[str]:
    from .core.strategies import STRATEGIES

    return list(STRATEGIES)


def _add_pick_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Where the tomograms are, how to cut boxes, and what a particle list may not say itself."""
    g = p.add_argument_group("particle lists and tomograms")
    g.add_argument("--tomograms", required=False,
                   help="a folder of tomograms (matched by name) or RELION 5's tomograms.star"
                        + ("" if required else "; with a particle list as DATA"))
    g.add_argument("--box", type=int, default=32, help="box side in voxels, a multiple of 8 (default 32)")
    g.add_argument("--voxel-size", type=float, metavar="A",
                   help="voxel size of the boxes in Angstrom (default: the tomograms'; coarser is Fourier-cropped)")
    g.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                   help="invert the contrast (auto: decided from the data and said; default auto)")
    g.add_argument("--units", choices=["px", "A", "fraction"],
                   help="CSV and Warp coordinates: pixels, Angstrom, or 0-1 fractions (default: CSV px, Warp decided "
                        "from the values)")
    g.add_argument("--pick-pixel-size", type=float, metavar="A",
                   help="Angstrom per pixel of pixel coordinates where the list does not say (Warp's --coords_angpix; "
                        "default: the tomograms' voxel size)")
    g.add_argument("--tomogram-voxel-size", type=float, metavar="A",
                   help="Angstrom per voxel of tomograms whose header leaves it unset (0)")
    g.add_argument("--copick-user", help="copick: only picks of this user")
    g.add_argument("--copick-session", help="copick: only picks of this session")
    g.add_argument("--copick-objects", help="copick: only these objects (comma-separated)")
    g.add_argument("--copick-tomo-type", help="copick: the tomogram type to cut from (default: the first)")
    g.add_argument("--copick-voxel-size", type=float, help="copick: the voxel spacing to cut from (default: the finest)")


def build_parser() -> argparse.ArgumentParser:
    """The ``ktal-cryo`` parser: one small builder per subcommand."""
    p = argparse.ArgumentParser(prog=PROG, description="Knowledge-transfer active learning for cryo-ET subtomograms.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_simulate, _add_simulate_scene, _add_extract, _add_train, _add_import_labels, _add_export,
                _add_predict, _add_review, _add_benchmark, _add_strategies):
        add(sub)
    return p


def _add_simulate(sub) -> None:
    """The ``simulate`` subcommand."""
    from .core.seeds import DEFAULT_SEED

    s = sub.add_parser("simulate", help="write a simulated cryo-ET subtomogram data set with known classes",
                       description="Simulate subtomograms: K procedural templates, random rotation and shift, "
                                   "CTF (-5 um, 300 kV, Cs 2 mm, 1 nm voxels), +-60 deg missing wedge, noise at SNR.")
    s.add_argument("out", help="output folder (gets train/ and test/ with labels.csv)")
    s.add_argument("--classes", type=int, required=True, help="number of classes K")
    s.add_argument("--per-class", type=int, required=True, help="training volumes per class")
    s.add_argument("--test-per-class", type=int, default=0, help="test volumes per class (default 0)")
    s.add_argument("--snr", type=float, default=0.05, help="signal variance / noise variance (default 0.05)")
    s.add_argument("--box", type=int, default=32, help="box side in voxels, a multiple of 8 (default 32)")
    s.add_argument("--imbalance", type=float, default=1.0,
                   help="largest / smallest class in the training set: per-class counts fall geometrically "
                        "from --per-class (default 1, balanced; test sets stay balanced)")
    s.add_argument("--neighbours", type=int, default=0,
                   help="neighbouring particles reaching into each box: a crowded sample (default 0)")
    s.add_argument("--junk-fraction", type=float, default=0.0, metavar="F",
                   help="share F of each split that is junk, labeled 'junk': empty boxes, ice, membrane "
                        "fragments, carbon edges, gold beads, off-centre or broken particles, aggregates "
                        "(default 0)")
    s.add_argument("--seed", type=int, default=DEFAULT_SEED)
    s.set_defaults(func=cmd_simulate)


def _add_simulate_scene(sub) -> None:
    """The ``simulate-scene`` subcommand."""
    from .core.seeds import DEFAULT_SEED

    c = sub.add_parser("simulate-scene", help="write simulated tomograms with particles and junk, and their picks",
                       description="Simulate whole tomograms: K template classes and junk at random positions and "
                                   "orientations, imaged like `simulate` (CTF, +-60 deg wedge, noise at SNR), with "
                                   "the picks as RELION 5 STAR files (particles.star; truth.star adds rlnClassNumber) "
                                   "and tomograms.star.")
    c.add_argument("out", help="output folder")
    c.add_argument("--classes", type=int, default=3, help="number of classes K (default 3)")
    c.add_argument("--per-class", type=int, default=40, help="particles of each class over all tomograms (default 40)")
    c.add_argument("--junk", type=int, default=20, help="junk picks: empty ice and blobs (default 20)")
    c.add_argument("--tomograms", type=int, default=2, help="number of tomograms (default 2)")
    c.add_argument("--shape", default="256x256x64", help="x x y x z voxels of each tomogram (default 256x256x64)")
    c.add_argument("--snr", type=float, default=1.0, help="signal / noise variance inside the particles (default 1)")
    c.add_argument("--invert", action="store_true", help="bright particles, as Warp writes tomograms")
    c.add_argument("--seed", type=int, default=DEFAULT_SEED)
    c.set_defaults(func=cmd_simulate_scene)


def _add_extract(sub) -> None:
    """The ``extract`` subcommand."""
    e = sub.add_parser("extract", help="cut one MRC per pick out of tomograms (and particles.csv)",
                       description="Read a particle list (RELION 5 or 4 STAR, Warp STAR, Dynamo .tbl, copick "
                                   "configuration, CSV tomogram,x,y,z), find its tomograms, check every pick, and "
                                   "write OUT/subtomograms/*.mrc and OUT/particles.csv (path,tomogram,x,y,z,"
                                   "clipped,row,label: the box centre in 0-based voxels, in the list's order; row "
                                   "counts the list's particles from 1).")
    e.add_argument("picks", help="particle list")
    e.add_argument("--out", required=True, help="a new or empty folder")
    _add_pick_options(e)
    e.set_defaults(func=cmd_extract)


def _add_train(sub) -> None:
    """The ``train`` subcommand."""
    from .core.seeds import DEFAULT_SEED

    t = sub.add_parser("train", help="run active-learning cycles on a project",
                       description="With --oracle: a full simulated run, answering queries from the labels file. "
                                   "Without: one cycle on the project's labels, writing the next batch to label.")
    t.add_argument("data", nargs="?", help="subtomograms: a folder of MRC files, an MRC (stack) file, or a labels "
                                          "CSV; or a particle list (with --tomograms); needed only when the project "
                                          "is created")
    t.add_argument("--project", required=True, help="project folder (created if it does not exist)")
    t.add_argument("--recipe", help="shipped recipe name (quick, paper-simulated, paper-real) or a .toml path; "
                                    "default: the project's recipe, or quick for a new project")
    t.add_argument("--oracle", help="labels CSV (path,label), or a particle list with classes, that answers every "
                                    "query: a simulated run")
    t.add_argument("--test", help="labels CSV of a held-out test set, scored every cycle")
    t.add_argument("--flip-answers", type=float, default=0.0, metavar="SHARE",
                   help="simulation only (with --oracle): the oracle answers this share of the pool (e.g. 0.08), "
                        "drawn with --seed, with another class, as an expert's slips; the project records which in "
                        "oracle_flips.csv (default 0)")
    t.add_argument("--strategy", help="query strategy, overriding the recipe's [active] strategy: "
                                      + ", ".join(strategy_names()))
    t.add_argument("--classes", help="comma-separated class names for a new project (e.g. ribosome,proteasome,junk)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default auto)")
    t.add_argument("--seed", type=int, default=DEFAULT_SEED)
    t.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="train with N processes (DistributedDataParallel; one per GPU, or N CPU processes with "
                        "--device cpu): starts torchrun; the same as `torchrun --nproc-per-node N -m "
                        "napari_ktal.cli train ...` (default 1)")
    _add_pick_options(t, required=False)
    t.set_defaults(func=cmd_train_launch)


def _add_import_labels(sub) -> None:
    """The ``import-labels`` subcommand."""
    i = sub.add_parser("import-labels", help="add labels from a CSV (path,label) or a particle list with classes")
    i.add_argument("labels", help="labels CSV (paths relative to its folder), or a particle list that carries classes "
                                  "(rlnClassNumber, Dynamo's column 22, a label column), matched by tomogram and "
                                  "position")
    i.add_argument("--project", required=True)
    i.add_argument("--add-classes", action="store_true", help="add classes the project does not have yet")
    i.set_defaults(func=cmd_import_labels)


def _add_export(sub) -> None:
    """The ``export`` subcommand."""
    x = sub.add_parser("export", help="the labels (and the teacher's predictions) in the particle list's own format",
                       description="STAR: the user's file with every block, row, column and value kept and "
                                   "rlnClassNumber set (numbers in OUT.classes.csv); Dynamo: column 22 set; copick: "
                                   "one picks file per class; CSV: a CSV list with every column and label set, path, "
                                   "confidence and source added (any other list: path,tomogram,x,y,z,label,"
                                   "confidence,source). "
                                   "Rows without a label get the latest teacher's class, where one is trained.")
    x.add_argument("--project", required=True)
    x.add_argument("--out", required=True, help="file to write (copick: the project's configuration .json)")
    x.add_argument("--format", choices=["star", "dynamo", "copick", "csv"],
                   help="default: the format the particles came in")
    x.add_argument("--no-predictions", action="store_true", help="only the labels given; no teacher's classes")
    x.add_argument("--calibrated", action="store_true",
                   help="divide the teacher's logits by the temperature `ktal-cryo review` fitted (see "
                        "docs/results.md: it can make the final teacher's confidences worse)")
    x.add_argument("--copick-user", help="copick user the picks are written under (default: the source's)")
    x.add_argument("--copick-session", help="copick session the picks are written under (default: ktal)")
    x.add_argument("--device", default="auto")
    x.set_defaults(func=cmd_export)


def _add_predict(sub) -> None:
    """The ``predict`` subcommand."""
    r = sub.add_parser("predict", help="class and confidence of every pool volume from the latest teacher")
    r.add_argument("--project", required=True)
    r.add_argument("--out", help="CSV to write (default P/predictions.csv)")
    r.add_argument("--calibrated", action="store_true",
                   help="divide the teacher's logits by the temperature `ktal-cryo review` fitted (see "
                        "docs/results.md: it can make the final teacher's confidences worse)")
    r.add_argument("--device", default="auto")
    r.set_defaults(func=cmd_predict)


def _add_review(sub) -> None:
    """The ``review`` subcommand."""
    from .core.seeds import DEFAULT_SEED

    r = sub.add_parser("review", help="find likely mistakes among the labels, judged out of sample",
                       description="Cross-fit the project's teacher: K teachers of its recipe, each trained without "
                                   "a fold of the labels and judging that fold, so that every label is judged by a "
                                   "model that never saw it. Writes OUT as path,label,suggested,score (a labels "
                                   "CSV: path is the volume as the project names it; score in [0, 1], most likely "
                                   "mistake first) and stores the temperature that calibrates the teacher's "
                                   "confidence in export and predict. Costs about K trainings of the teacher.")
    r.add_argument("--project", required=True)
    r.add_argument("--out", required=True, help="CSV to write (path,label,suggested,score)")
    r.add_argument("--folds", type=int, help="cross-fitting folds (default: the recipe's [trust] folds, 5)")
    r.add_argument("--repeats", type=int, help="cross-fittings on different splits, averaged (default: the recipe's "
                                               "[trust] repeats); costs FOLDS x REPEATS trainings")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default auto)")
    r.add_argument("--seed", type=int, default=DEFAULT_SEED)
    r.set_defaults(func=cmd_review)


def _add_benchmark(sub) -> None:
    """The ``benchmark`` subcommand."""
    from .core.seeds import DEFAULT_SEED

    b = sub.add_parser("benchmark", help="compare query strategies over seeds on a fully labeled data set",
                       description="Run a simulated active-learning run for every strategy and seed (each its own "
                                   "project under OUT/runs, sharing one imported pool and, per seed, one initial "
                                   "labeled set), then write OUT/results.csv, OUT/summary.csv (mean +- std accuracy "
                                   "per budget; AUBC with a 95% bootstrap interval; the AUBC difference to random "
                                   "and to kt, paired by seed, with its interval and a Wilcoxon signed-rank test; "
                                   "labels needed to reach random's final accuracy; query time) and "
                                   "OUT/benchmark.png. Rerun the same command to continue an interrupted "
                                   "benchmark: finished runs are not redone.")
    b.add_argument("data", help="subtomograms of the pool: a folder of MRC files, an MRC (stack) file, or a labels CSV")
    b.add_argument("--oracle", required=True, help="labels CSV (path,label) of every pool volume")
    b.add_argument("--test", help="labels CSV of a held-out test set (accuracy per cycle)")
    b.add_argument("--strategies", default="kt,random",
                   help="comma-separated strategy names, or all (default kt,random); known: "
                        + ", ".join(strategy_names()))
    b.add_argument("--seeds", type=int, default=5,
                   help="number of seeds per strategy (default 5; paired tests need 6 or more to reach p < 0.05)")
    b.add_argument("--metric", choices=("accuracy", "balanced", "particle"), default="accuracy",
                   help="what the summary compares: test accuracy, balanced accuracy (mean recall over "
                        "classes, for imbalanced sets), or particle-class accuracy (the test volumes that are "
                        "not junk); default accuracy")
    b.add_argument("--first-seed", type=int, default=DEFAULT_SEED,
                   help=f"seeds are first-seed, first-seed+1, ... (default {DEFAULT_SEED})")
    b.add_argument("--recipe", help="shipped recipe name or a .toml path (default quick); [active] strategy is "
                                    "set per run")
    b.add_argument("--out", required=True, help="benchmark folder (created; reuse it to continue)")
    b.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default auto)")
    b.set_defaults(func=cmd_benchmark)


def _add_strategies(sub) -> None:
    """The ``strategies`` subcommand."""
    q = sub.add_parser("strategies", help="list the query strategies (a Markdown table: name, what, cost, options)")
    q.set_defaults(func=cmd_strategies)


def main(argv: list[str] | None = None) -> int:
    from .core.errors import Cancelled, KtalError

    args = build_parser().parse_args(argv)
    _warned.clear()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except KtalError as exc:
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except OSError as exc:  # disk full, permission denied, a file vanished: the user can act on it
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"{PROG}: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, Cancelled):
            print(f"{PROG}: interrupted; everything accepted so far is saved", file=sys.stderr)
            return 130
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
