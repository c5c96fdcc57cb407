"""The commands both shells run: ``ktal-cryo`` turns arguments into these calls, the napari
widget turns clicks into them. Each checks every input before it writes anything, so a
command that fails leaves the project as it was.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import ExtractionPlan, PickOptions, extract_to_folder, plan_extraction
from ..data.extract import ExtractResult
from ..data.particles import is_pick_list
from ..errors import InputError, KtalError, RecipeError
from ..progress import QUIET, RunContext
from ..project import Project, ProjectLock
from ..recipe import Recipe, read_recipe, recipe_path
from ..seeds import DEFAULT_SEED
from ..strategies import check_recipe
from .benchmark import BenchmarkResult, BenchmarkSpec, RunOutcome, run_benchmark
from .cycle import CycleReport, initial_query, train_cycle
from .labels import LabeledSet, labels_on_pool, load_labeled_set
from .oracle import oracle_for_pool, oracle_with_slips, run_with_oracle
from .ranks import from_rank0
from .schedule import budget_schedule

DEFAULT_RECIPE = "quick"  # runs on a laptop CPU; the paper's recipes want a GPU


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (``quick``) or a TOML file, with its strategy and options checked.

    Every problem is a RecipeError naming the file and the key.
    """
    path = recipe_path(name_or_path)
    recipe = read_recipe(path)
    try:
        return check_recipe(recipe)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None


def project_recipe(project: Project) -> Recipe:
    """The project's recipe.toml, checked like :func:`load_recipe`."""
    return load_recipe(project.paths.recipe)


# -- particle lists and tomograms ------------------------------------------------------------------
@dataclass(frozen=True)
class PickSource:
    """A particle list and its tomograms, and how to cut boxes from them (``--box``, ``--voxel-size``,
    ``--invert``; what the list does not say: :class:`~napari_ktal.core.data.PickOptions`)."""

    picks: Path
    tomograms: Path | None = None
    box: int = 32
    voxel_size: float | None = None
    invert: str = "auto"
    options: PickOptions = PickOptions()

    def plan(self) -> ExtractionPlan:
        """Read and check the list, its tomograms and every position; nothing is written."""
        return plan_extraction(self.picks, self.tomograms, box=self.box, voxel_size=self.voxel_size,
                               invert=self.invert, options=self.options)


def is_particle_list(path: str | Path | None) -> bool:
    """Whether DATA is a particle list (STAR, Dynamo .tbl, copick .json, CSV with tomogram,x,y,z)."""
    return path is not None and Path(path).is_file() and is_pick_list(Path(path))


def extract(source: PickSource, out: str | Path, *, on_plan: Callable[[ExtractionPlan], None] | None = None,
            run: RunContext = QUIET) -> ExtractResult:
    """``ktal-cryo extract``: one MRC per pick and particles.csv in ``out`` (new or empty)."""
    plan = source.plan()
    try:
        if on_plan is not None:
            on_plan(plan)
        return extract_to_folder(plan, out, run=run)
    finally:
        plan.close()


def create_from_picks(root: str | Path, source: PickSource, recipe: Recipe | str, classes: list[str] | None,
                      run: RunContext = QUIET, *, on_plan: Callable[[ExtractionPlan], None] | None = None) -> Project:
    """A new project whose pool is cut from the tomograms at the picks (no intermediate files).

    ``run`` comes last and positional, as the widget's task runner passes it (``job(run)``)."""
    recipe = load_recipe(recipe) if isinstance(recipe, (str, Path)) else recipe
    if Project.is_project(root):
        raise KtalError(f"{root}: a project already exists here; open it instead")
    plan = source.plan()
    try:
        if on_plan is not None:
            on_plan(plan)
        return Project.create(root, source.picks, recipe, classes, picks=plan, run=run)
    finally:
        plan.close()


def particle_context(project: Project, index: int, *, width_boxes: float = 4.0):
    """A slab of the tomogram around pool volume ``index`` and its box (:class:`~..data.sites.SiteContext`),
    reading only that slab; InputError for a project not made from a particle list, or a tomogram
    that has moved."""
    from ..data.sites import site_context

    return site_context(project.pool, project.source_record(), index, width_boxes=width_boxes)


# -- opening and creating ---------------------------------------------------------------------
def open_or_create(root: str | Path, data: str | Path | None = None, *, recipe: Recipe | None = None,
                   classes: list[str] | None = None, picks: PickSource | None = None,
                   on_plan: Callable[[ExtractionPlan], None] | None = None, run: RunContext = QUIET
                   ) -> tuple[Project, bool]:
    """The project at ``root`` (not locked), created from ``data`` (or from ``picks``, a particle list
    and its tomograms) if there is none yet; and whether it was created."""
    if Project.is_project(root):
        return Project(root), False
    if data is None and picks is None:
        if Path(root).is_dir() and any(Path(root).iterdir()):
            Project(root)  # raises: a folder that is not (or no longer) a project says so
        raise KtalError(f"{root}: no project there yet; give DATA (a folder, file or labels CSV) to create it")
    if picks is not None:
        project = create_from_picks(root, picks, recipe or load_recipe(DEFAULT_RECIPE), classes, run, on_plan=on_plan)
        return project, True
    project = Project.create(root, data, recipe or load_recipe(DEFAULT_RECIPE), classes, run=run)
    return project, True


def create_project(root: str | Path, source: str | Path, recipe: str, classes: list[str],
                   run: RunContext = QUIET) -> Project:
    """A new project at ``root`` (new or empty) from ``source``: a folder of MRC files, an MRC
    (stack) file or a labels CSV; ``recipe`` a shipped name or a .toml path. ``run`` is positional
    for the widget's task runner."""
    return Project.create(root, source, load_recipe(recipe), classes, run=run)


def create_from_array(root: str | Path, volumes: np.ndarray, voxel_size: float, name: str, recipe: str,
                      classes: list[str], run: RunContext = QUIET) -> Project:
    """A new project from volumes held in memory (a napari Image layer), by way of an MRC stack.

    The pool keys become ``k@<name>.mrcs`` (RELION's frame notation), so labels and predictions
    can be traced back to the volumes.
    """
    import mrcfile

    volumes = np.asarray(volumes)
    if volumes.ndim == 3:
        volumes = volumes[None]
    if volumes.ndim != 4:
        raise KtalError(f"layer '{name}' has {volumes.ndim} dimensions; use a volume (z, y, x) "
                        "or a stack of volumes (n, z, y, x)")
    if not volumes.shape[1] == volumes.shape[2] == volumes.shape[3]:
        z, y, x = volumes.shape[1:]
        raise KtalError(f"layer '{name}': volumes are {z}x{y}x{x} (z, y, x); subtomograms must be cubic")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "layer"
    with tempfile.TemporaryDirectory(prefix="ktal-layer-") as tmp:
        path = Path(tmp) / f"{safe}.mrcs"
        with mrcfile.new(path) as mrc:
            mrc.set_data(volumes.astype(np.float32, copy=False))  # 4D: a volume stack, ispg 401
            mrc.voxel_size = float(voxel_size)
        return create_project(root, path, recipe, classes, run)


# -- training ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingPlan:
    """What a training run will use, every input checked."""

    recipe: Recipe
    oracle: dict[int, str] | None = None
    test: LabeledSet | None = None


def prepare_training(project: Project, *, recipe: Recipe | None = None, strategy: str | None = None,
                     oracle: str | Path | None = None, test: str | Path | None = None,
                     flip_answers: float = 0.0, seed: int = DEFAULT_SEED) -> TrainingPlan:
    """Check every input of a training run, then store what it changes (recipe, classes).

    ``recipe`` or ``strategy`` given: the project trains with them from now on (recipe.toml).
    ``flip_answers`` (with ``oracle`` only): the oracle answers that share of the pool, drawn with
    ``seed``, with another class, and the project records which (``oracle_flips.csv``).
    """
    if flip_answers and not oracle:
        raise KtalError("flipped answers are a simulation of an expert's slips: they need an oracle (--oracle)")
    if not 0 <= flip_answers < 1:
        raise KtalError(f"the share of flipped answers must be in [0, 1), not {flip_answers}")
    chosen = check_recipe(recipe) if recipe is not None else project_recipe(project)
    if strategy:
        chosen = check_recipe(chosen.replace(active={"strategy": strategy}))
    answers = oracle_for_pool(project.pool, oracle, project.source_record()) if oracle else None
    classes = project.classes
    if answers is not None:
        classes = classes + sorted(set(answers.values()) - set(classes))
    test_set = load_labeled_set(test, classes) if test else None
    project.check_warm_start(chosen)
    # everything is checked: from here on, write
    if recipe is not None or strategy:
        project.set_recipe(chosen)
    if answers is not None:
        project.add_classes(sorted(set(answers.values())))
    if answers is not None and flip_answers:
        answers = oracle_with_slips(project, answers, flip_answers, seed)
    return TrainingPlan(chosen, answers, test_set)


@dataclass(frozen=True)
class TrainOutcome:
    kind: str  # "done" (every cycle trained before), "oracle" (a full run), "initial" (first batch drawn), "cycle"
    reports: list[CycleReport]
    n_cycles: int  # cycles in the recipe's schedule
    next_batch: Path | None = None  # the batch to label next
    next_size: int = 0


def train(project: Project | None, plan: TrainingPlan, device: torch.device, *, seed: int = DEFAULT_SEED,
          on_begin: Callable[[], None] | None = None, on_cycle: Callable[[CycleReport], None] | None = None,
          run: RunContext = QUIET) -> TrainOutcome:
    """With an oracle, every remaining cycle of the schedule; else one cycle on the project's
    labels (or, with no labels yet, the random first batch to label). ``on_begin`` is called
    before the first cycle trains.

    Under torchrun every rank calls this with the same ``plan`` (rank 0's, :func:`.ranks.from_rank0`), rank 0
    with the project and the others with ``project=None``; only rank 0's outcome names files."""
    n_pool, trained, labeled = from_rank0(lambda: (len(project.pool), project.trained_cycles, bool(project.labels())))
    n_cycles = len(budget_schedule(n_pool, plan.recipe.active))
    if plan.oracle is not None:
        if trained >= n_cycles:
            return TrainOutcome("done", [], n_cycles)
        if on_begin is not None:
            on_begin()
        reports = run_with_oracle(project, plan.recipe, plan.oracle, device, seed=seed, test=plan.test,
                                  on_cycle=on_cycle, run=run)
        return TrainOutcome("oracle", reports, n_cycles)
    if not labeled:
        size = from_rank0(lambda: len(initial_query(project, plan.recipe, seed, device=device, run=run)))
        return TrainOutcome("initial", [], n_cycles, project.paths.query(0) if project is not None else None, size)
    if on_begin is not None:
        on_begin()
    report = train_cycle(project, plan.recipe, device, seed=seed, test=plan.test, run=run)
    if on_cycle is not None:
        on_cycle(report)
    nxt = project.paths.query(report.cycle + 1) if report.n_queried and project is not None else None
    return TrainOutcome("cycle", [report], n_cycles, nxt, report.n_queried)


def train_next_cycle(root: str | Path, device: torch.device, *, seed: int = DEFAULT_SEED,
                     run: RunContext = QUIET) -> CycleReport:
    """One cycle on the labels of the project at ``root``, opened afresh (the widget's job: a
    class added in the GUI meanwhile cannot change the classes of a cycle in flight)."""
    project = Project(root)
    return train_cycle(project, project_recipe(project), device, seed=seed, run=run)


# -- labels --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportResult:
    n_imported: int
    n_labeled: int  # labeled volumes in the project afterwards
    new_classes: list[str]


def import_labels(project: Project, csv_path: str | Path, *, add_classes: bool = False) -> ImportResult:
    """Add the labels of a CSV (path,label) to the project's journal, as ``by="import"``."""
    found, unmatched = labels_on_pool(project.pool, csv_path, project.source_record())
    if unmatched:
        raise InputError(csv_path, f"{unmatched[0]} is not in the project's pool")
    new = sorted(set(found.values()) - set(project.classes))
    if new and not add_classes:
        raise InputError(csv_path, f"unknown class(es) {', '.join(new)}", "pass --add-classes to add them to the project")
    project.add_classes(new)
    project.label_many(found, by="import", cycle=project.trained_cycles)
    return ImportResult(len(found), len(project.labels()), new)


# -- benchmark -------------------------------------------------------------------------------------
def benchmark(spec: BenchmarkSpec, *, lock_purpose: str, on_run: Callable[[RunOutcome], None] | None = None,
              on_start: Callable[[str, int], None] | None = None,
              on_cycle: Callable[[CycleReport], None] | None = None, run: RunContext = QUIET) -> BenchmarkResult:
    """:func:`.benchmark.run_benchmark` in folder ``spec.out``, one run per folder at a time.

    A folder that holds something else than a benchmark is left untouched (run_benchmark
    refuses it with a message); a benchmark folder is locked while it runs.
    """
    out = spec.out
    foreign = (out.exists() and not (out / "benchmark.json").exists()
               and any(p.name != ".lock" for p in out.iterdir()))
    if not foreign:
        out.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if foreign else ProjectLock(out, lock_purpose):
        return run_benchmark(spec, on_run=on_run, on_start=on_start, on_cycle=on_cycle, run=run)
