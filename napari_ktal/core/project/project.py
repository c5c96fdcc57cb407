"""The project folder: the contract between the napari widget and ``ktal-cryo``.

Label in napari on a laptop, train with ``ktal-cryo train`` on a GPU node, reopen in
napari: both read and write only this folder (its layout: :mod:`.paths`).

Every file except the journal is written atomically (temp file, fsync, rename). A cycle is
committed by its row in history.csv, written last: a checkpoint folder counts only when it
has its meta.json (written after the tensors) and its cycle is in history.csv, so a cycle
that was cancelled or killed half-way is never loaded; it is trained again.

Nothing is executed from a project folder: recipe.toml is parsed as TOML, the journal and
project.json as JSON, checkpoints are loaded with ``torch.load(weights_only=True)``, and the
source paths in project.json and pool/index.csv are provenance only (never opened), except that
showing a particle in its tomogram (napari's context view) reads a slab of the tomogram the
project records for it, read-only. A project made from a particle list keeps a copy of the list in
P/source/, which ``export`` writes back; the user's own file is never opened again.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import atomic_open, atomic_write_text
from ..data.extract import ExtractionPlan, import_picks_pool
from ..data.pool import Pool, import_pool
from ..errors import KtalError, ProjectError
from ..progress import QUIET, RunContext
from ..recipe import ModelSpec, Recipe, read_recipe
from . import checkpoints, history, judgements, queries
from .journal import LabelJournal
from .judgements import AuditJudgement, StopPredictions
from .lock import LOCK_FILE, ProjectLock
from .paths import POOL_LEFTOVERS, ROOT_LEFTOVERS, SOURCE_FOLDER, ProjectPaths
from .queries import QueryItem

if TYPE_CHECKING:  # torch is imported where models are saved or loaded: labeling starts fast
    import torch

    from ..models import ResNet3D

FORMAT_VERSION = 1
JUNK_CLASS = "junk"


def _valid_class_name(name: str) -> str:
    name = str(name).strip()
    if not name or "," in name or "\n" in name:
        raise KtalError(f"class name {name!r} is not allowed (empty, or contains a comma or newline)")
    return name


class Project:
    """An open project folder. Cheap to construct; the pool memmap opens on first use."""

    def __init__(self, root: str | Path, lock: str | None = None):
        """Open the project at ``root``; with ``lock`` (what opens it, e.g. "ktal-cryo train"),
        also take its write lock (see :meth:`acquire_lock`)."""
        self.root = Path(root).expanduser().resolve()
        self.paths = ProjectPaths(self.root)
        cfg_path = self.paths.config
        if not cfg_path.is_file():
            raise ProjectError(f"{self.root}: not a napari-ktal project (no project.json)")
        try:
            self._config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise ProjectError(f"{cfg_path}: cannot be read ({exc})") from None
        if not isinstance(self._config, dict):
            raise ProjectError(f"{cfg_path}: is not a napari-ktal project file (not a JSON object)")
        version = self._config.get("format_version")
        if version != FORMAT_VERSION:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            raise ProjectError(
                f"{cfg_path}: project format version {version!r} "
                + ("is newer than this napari-ktal understands; upgrade napari-ktal"
                   if newer else f"is not supported (this napari-ktal reads version {FORMAT_VERSION})")
            )
        classes = self._config.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ProjectError(f"{cfg_path}: 'classes' must be a list of class names; fix or restore the file")
        self.journal = LabelJournal(self.paths.journal)
        self._pool: Pool | None = None
        self._lock: ProjectLock | None = None
        if lock is not None:
            self.acquire_lock(lock)
        self._finish_interrupted_rename()

    def _finish_interrupted_rename(self) -> None:
        """Roll a class rename forward if its process died between the journal line and project.json.

        :meth:`rename_class` journals the rename first; only the journal's last record can be
        such a rename (any later write came from a process that opened, and so repaired, the project).
        """
        rec = self.journal.last_record()
        if rec is None or rec.get("op") != "rename":
            return
        cls = self._config["classes"]
        old, new = rec["from"], rec["to"]
        try:  # project.json written after the rename (e.g. the class was removed later): nothing to finish
            written_after = self.paths.config.stat().st_mtime >= float(rec.get("t", 0))
        except (OSError, TypeError, ValueError):
            written_after = True
        if old in cls and new not in cls and not written_after:
            cls[cls.index(old)] = new
            with contextlib.suppress(OSError):  # a read-only copy still opens; labels replay the rename
                self._save_config()

    # -- the write lock ----------------------------------------------------------------
    def acquire_lock(self, purpose: str) -> None:
        """Take the project's write lock (no waiting): :class:`~.lock.ProjectLocked` names the holder.

        Commands and windows that write take it for as long as they work on the project;
        the operating system releases it when the process ends, however it ends.
        """
        if self._lock is None:
            self._lock = ProjectLock(self.root, purpose).acquire()
            self._remove_stale_temp_files()

    def _remove_stale_temp_files(self) -> None:
        """Temp files of atomic writes whose writer was killed (a checkpoint's can be 100+ MB).

        Only files that writers, which all hold the lock we now hold, write: never a reader's
        (e.g. predictions.csv written by ``ktal-cryo predict`` at the same time).
        """
        for p in self.paths.writer_temp_files():
            with contextlib.suppress(OSError):
                p.unlink()

    def release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    @property
    def is_locked(self) -> bool:
        """Whether this object holds the project's write lock."""
        return self._lock is not None and self._lock.held

    @contextlib.contextmanager
    def locked(self, purpose: str) -> Iterator[Project]:
        """``with project.locked("ktal-cryo train"): ...``; a lock this object held already is kept."""
        held = self._lock is not None
        self.acquire_lock(purpose)
        try:
            yield self
        finally:
            if not held:
                self.release_lock()

    # -- creation --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | Path,
        source: str | Path,
        recipe: Recipe,
        classes: list[str] | None = None,
        *,
        picks: ExtractionPlan | None = None,
        run: RunContext = QUIET,
    ) -> Project:
        """Import ``source`` into a new project at ``root`` (which must be new or empty).

        With ``picks`` (a checked extraction plan of a particle list and its tomograms), the pool
        is cut from the tomograms, and P/source/ keeps a copy of the list and what was decided.
        """
        root = Path(root).expanduser()
        paths = ProjectPaths(root)
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: is a file; choose a new folder for the project")
        if root.exists():
            _check_new_folder(root)  # a refused folder gets no lock file
        classes = [_valid_class_name(c) for c in (classes or [])]
        if len(set(classes)) != len(classes):
            raise KtalError("class names must be unique")
        created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"{root}: cannot create the project folder ({exc.strerror or exc})") from None
        with ProjectLock(root, "a project import"):  # two imports into one folder: the second is refused
            if _check_new_folder(root):  # again under the lock: another import may have begun meanwhile
                _remove_all(root)  # a killed import leaves only its own files behind: start again
            pool = _import(paths, source, recipe, picks, run, created)
            config = {
                "format_version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "source": str(Path(source).expanduser().resolve()),  # provenance only: never opened
                **({"source_kind": "picks", "voxel_size": picks.voxel_size} if picks is not None else {}),
                "n_volumes": len(pool),
                "box": pool.box,
                "classes": classes,
            }
            atomic_write_text(paths.config, json.dumps(config, indent=2))  # the commit point
        return cls(root)

    @staticmethod
    def is_project(root: str | Path) -> bool:
        return ProjectPaths(Path(root).expanduser()).config.exists()

    # -- configuration ---------------------------------------------------------------
    def _save_config(self) -> None:
        atomic_write_text(self.paths.config, json.dumps(self._config, indent=2))

    @property
    def classes(self) -> list[str]:
        return list(self._config["classes"])

    def add_class(self, name: str) -> None:
        name = _valid_class_name(name)
        if name in self._config["classes"]:
            raise KtalError(f"class '{name}' exists already")
        self._config["classes"].append(name)
        self._save_config()

    def add_classes(self, names) -> None:
        for n in names:
            if n not in self._config["classes"]:
                self.add_class(n)

    def rename_class(self, old: str, new: str) -> None:
        new = _valid_class_name(new)
        cls = self._config["classes"]
        if old not in cls:
            raise KtalError(f"no class named '{old}'")
        if new in cls:
            raise KtalError(f"class '{new}' exists already")
        self.journal.rename(old, new)  # labels follow the rename
        cls[cls.index(old)] = new
        self._save_config()

    def remove_class(self, name: str) -> None:
        if name not in self._config["classes"]:
            raise KtalError(f"no class named '{name}'")
        used = sum(1 for lab in self.labels().values() if lab == name)
        if used:
            raise KtalError(f"class '{name}' labels {used} volumes; relabel them before removing it")
        self._config["classes"].remove(name)
        self._save_config()

    def recipe(self) -> Recipe:
        """recipe.toml as read (its strategy is checked where it is used: ``loop.check_recipe``)."""
        return read_recipe(self.paths.recipe)

    def set_recipe(self, recipe: Recipe) -> None:
        atomic_write_text(self.paths.recipe, recipe.to_toml())

    # -- pool and labels ---------------------------------------------------------------
    def source_record(self) -> dict | None:
        """What P/source/picks.json says of a project made from a particle list; None for other projects."""
        path = self.paths.source_record
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{path}: cannot be read ({exc}); restore it from a backup") from None
        if not isinstance(record, dict) or "format" not in record:
            raise ProjectError(f"{path}: is not what napari-ktal writes there; restore it from a backup")
        return record

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool.open(self.paths.pool)
        return self._pool

    def labels(self) -> dict[int, str]:
        """Current labels (pool index -> class name), replayed from the journal."""
        return self.journal.labels()

    def label(self, index: int, label: str, by: str = "user", cycle: int | None = None,
              was: str | None = None) -> None:
        if label not in self._config["classes"]:
            raise KtalError(f"unknown class '{label}'; classes are {', '.join(self.classes)}")
        self.journal.set(index, self.pool.keys[index], label, by=by, cycle=cycle, was=was)

    def label_many(self, items: dict[int, str], by: str = "user", cycle: int | None = None,
                   was: dict[int, str | None] | None = None) -> None:
        unknown = sorted(set(items.values()) - set(self._config["classes"]))
        if unknown:
            raise KtalError(f"unknown class(es) {', '.join(unknown)}; classes are {', '.join(self.classes)}")
        keys = self.pool.keys
        self.journal.set_many(((i, keys[i], lab) for i, lab in items.items()), by=by, cycle=cycle, was=was)

    def unlabel(self, index: int, by: str = "user", cycle: int | None = None, was: str | None = None) -> None:
        self.journal.unset(index, self.pool.keys[index], by=by, cycle=cycle, was=was)

    def labeled_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, class ids, float32 volumes) of every labeled volume, in index order."""
        labels = self.labels()
        idx = np.array(sorted(labels), dtype=np.int64)
        n = len(self.pool)
        if len(idx) and (idx[0] < 0 or idx[-1] >= n):
            bad = int(idx[-1] if idx[-1] >= n else idx[0])
            raise ProjectError(f"{self.journal.path}: labels volume {bad} but the pool holds {n} volumes "
                               "(a labels file from another project?); restore this project's labels.jsonl")
        lookup = {c: k for k, c in enumerate(self.classes)}
        unknown = sorted(set(labels.values()) - set(lookup))
        if unknown:
            raise ProjectError(f"{self.journal.path}: uses class(es) {', '.join(map(repr, unknown))} that "
                               f"{self.paths.config} does not list; add them back to the project's classes")
        y = np.array([lookup[labels[i]] for i in idx], dtype=np.int64)
        return idx, y, self.pool.read(idx)

    # -- queries ---------------------------------------------------------------------
    def write_query(self, cycle: int, items: list[QueryItem]) -> None:
        queries.write_query(self.paths.query(cycle), items)

    def read_query(self, cycle: int) -> list[QueryItem]:
        return queries.read_query(self.paths.query(cycle), cycle, len(self.pool))

    def query_cycles(self) -> list[int]:
        """Cycles whose batch is written and valid: batch k counts once cycle k-1 is committed.

        A batch written by a cycle that died before its history.csv row is ignored (that cycle
        is trained again and writes it again), so nobody labels a batch of an unfinished cycle.
        """
        trained = self.trained_cycles
        return [c for c in queries.written_cycles(self.paths.queries) if c <= trained]

    def latest_query(self) -> tuple[int, list[QueryItem]] | None:
        cycles = self.query_cycles()
        return (cycles[-1], self.read_query(cycles[-1])) if cycles else None

    # -- checkpoints -------------------------------------------------------------------
    def save_models(self, cycle: int, teacher: ResNet3D, student: ResNet3D, recipe: Recipe,
                    student_trained: bool = True) -> None:
        checkpoints.save_models(self.paths.checkpoint(cycle), cycle, teacher, student, self.classes,
                                recipe.to_dict()["model"], student_trained)

    def checkpoint_cycles(self) -> list[int]:
        """Cycles with a complete checkpoint (meta.json written) that were committed to history.csv."""
        committed = {int(r["cycle"]) for r in self.history()}
        return [c for c in checkpoints.complete_cycles(self.paths.checkpoints) if c in committed]

    def checkpoint_meta(self, cycle: int) -> dict | None:
        """The meta.json (cycle, classes, model) of ``cycle``'s checkpoint; None if missing or damaged."""
        return checkpoints.read_meta(self.paths.checkpoint(cycle))

    def load_models(self, cycle: int | None = None, device: str | torch.device = "cpu",
                    expect_model: ModelSpec | None = None) -> tuple[ResNet3D, ResNet3D, dict]:
        """The trained (teacher, student, meta) of ``cycle`` (latest by default); see :mod:`.checkpoints`."""
        cycles = self.checkpoint_cycles()
        if not cycles:
            raise ProjectError(f"{self.root}: no trained models yet; run a training cycle first")
        if cycle is None:
            cycle = cycles[-1]
        elif cycle not in cycles:
            raise ProjectError(f"{self.root}: no complete checkpoint of cycle {cycle} "
                               f"(complete: {', '.join(map(str, cycles))})")
        return checkpoints.load_models(self.paths.checkpoint(cycle), device, expect_model)

    def check_warm_start(self, recipe: Recipe) -> None:
        """Raise ProjectError now if ``recipe`` warm-starts from a checkpoint of another architecture."""
        cycles = self.checkpoint_cycles()
        if not recipe.active.reinit_each_cycle and cycles:
            checkpoints.check_architecture(self.paths.checkpoint(cycles[-1]), recipe.model)

    # -- history -----------------------------------------------------------------------
    def history(self) -> list[dict[str, str]]:
        return history.read_history(self.paths.history)

    def record_cycle(self, row: dict) -> None:
        """Add (or replace) the row of ``row['cycle']`` in history.csv, atomically: the cycle's commit."""
        history.record_cycle(self.paths.history, row)

    @property
    def trained_cycles(self) -> int:
        """How many cycles have been trained (the next training is cycle number ``trained_cycles``)."""
        return len(self.history())

    # -- judging without a test set (:mod:`.judgements`) -----------------------------------
    def audits(self) -> list[AuditJudgement]:
        """Every audit volume judged so far by a teacher that did not train on it (audit.csv)."""
        return judgements.read_audits(self.paths.audit)

    def record_audits(self, cycle: int, judged: list[AuditJudgement]) -> None:
        """The judgements of ``cycle`` (replacing any of a crashed run of it), before its history row."""
        judgements.record_audits(self.paths.audit, cycle, judged)

    def stop_predictions(self) -> StopPredictions | None:
        """The fixed stop set and each cycle's predictions on it; None before the first cycle stored them."""
        return judgements.read_stop_predictions(self.paths.stop_set)

    def record_stop_predictions(self, cycle: int, indices: np.ndarray, predicted: list[str]) -> None:
        """``cycle``'s predicted classes of the stop set (the first call fixes the set for the project)."""
        keys = [self.pool.keys[int(i)] for i in indices]
        judgements.record_stop_predictions(self.paths.stop_set, cycle, indices, keys, predicted)

    def oracle_flips(self) -> dict[int, tuple[str, str, str]]:
        """A simulated run's wrong oracle answers: ``index -> (key, true class, class given)``."""
        return judgements.read_flips(self.paths.oracle_flips)

    def write_oracle_flips(self, flips: dict[int, tuple[str, str, str]]) -> None:
        judgements.write_flips(self.paths.oracle_flips, flips)


def _write_source(paths: ProjectPaths, plan: ExtractionPlan) -> None:
    """P/source/: a copy of the particle list (and its companions) and picks.json."""
    paths.source.mkdir(exist_ok=True)
    for f in plan.picks.files:
        with open(f, "rb") as src:
            data = src.read()
        with atomic_open(paths.source / f.name, "wb") as dst:
            dst.write(data)
    atomic_write_text(paths.source_record, json.dumps(plan.record(), indent=1))


def _check_new_folder(root: Path) -> bool:
    """Refuse a folder that holds a project or anything but an interrupted import's leftovers;
    True when it holds such leftovers (the import starts again), False when it is empty."""
    if ProjectPaths(root).config.exists():
        raise ProjectError(f"{root}: a project already exists here; open it instead")
    if not _user_files(root):
        return False
    if not _interrupted_import(root):
        raise ProjectError(f"{root}: folder is not empty; choose a new folder for the project")
    return True


def _import(paths: ProjectPaths, source: str | Path, recipe: Recipe, picks: ExtractionPlan | None,
            run: RunContext, created: bool) -> Pool:
    """The pool and the recipe written into the (locked, empty) project folder; on any error or a
    cancel, the folder is left as it was before the import (removed if the import created it)."""
    try:
        if picks is None:
            pool = import_pool(paths.pool, source, run=run)
        else:
            pool = import_picks_pool(paths.pool, picks, run=run)
            _write_source(paths, picks)
        atomic_write_text(paths.recipe, recipe.to_toml())
        return pool
    except BaseException:
        # nothing of value is in a project that failed to import (the folder was empty
        # when the import began, under the lock): leave the folder as it was
        _remove_all(paths.root)
        with contextlib.suppress(OSError):
            paths.lock.unlink()
            if created:
                paths.root.rmdir()
        raise


def _user_files(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name != LOCK_FILE]


def _interrupted_import(root: Path) -> bool:
    """Whether ``root`` holds only what an import killed half-way leaves (no project.json)."""
    entries = _user_files(root)
    if not entries or ProjectPaths(root).config.exists():
        return False
    for p in entries:
        if p.name == "pool" and p.is_dir() and not p.is_symlink():
            if not all(q.is_file() and POOL_LEFTOVERS.fullmatch(q.name) for q in p.iterdir()):
                return False
        elif p.name == SOURCE_FOLDER and p.is_dir() and not p.is_symlink():
            if not all(q.is_file() and not q.is_symlink() for q in p.iterdir()):
                return False
        elif not (p.is_file() and ROOT_LEFTOVERS.fullmatch(p.name)):
            return False
    return True


def _remove_all(root: Path) -> None:
    """Remove every entry of ``root`` but the lock file (called on a folder this import owns)."""
    for p in _user_files(root):
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
