"""The project folder: the contract between the napari widget and ``ktal-cryo``.

Label in napari on a laptop, train with ``ktal-cryo train`` on a GPU node, reopen in
napari: both read and write only this folder::

    P/project.json            format version, class names, where the data came from
    P/recipe.toml             the recipe this project trains with (editable)
    P/pool/                   volumes.npy (memmap), index.csv, info.json
    P/labels.jsonl            the append-only labels journal
    P/queries/cycle_NNN.csv   the batch to label that forms cycle NNN's labeled set
    P/checkpoints/cycle_NNN/  teacher.pt, student.pt (state dicts), meta.json
    P/history.csv             one row per trained cycle
    P/learning_curve.png
    P/.lock                   the write lock (see :mod:`.lock`): who has the project open

Every file except the journal is written atomically (temp file, fsync, rename). A cycle is
committed by its row in history.csv, written last: a checkpoint folder counts only when it
has its meta.json (written after the tensors) and its cycle is in history.csv, so a cycle
that was cancelled or killed half-way is never loaded; it is trained again.

Nothing is executed from a project folder: recipe.toml is parsed as TOML, the journal and
project.json as JSON, checkpoints are loaded with ``torch.load(weights_only=True)``, and the
source paths in project.json and pool/index.csv are provenance only (never opened).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import pickle
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tomli_w

from ..atomic import atomic_open, atomic_write_text, fsync_dir
from ..data.pool import Pool, import_pool
from ..errors import KtalError, ProjectError
from ..progress import ProgressCallback, StopFlag
from ..recipe import ModelSpec, Recipe, load_recipe
from .journal import LabelJournal
from .lock import LOCK_FILE, ProjectLock

if TYPE_CHECKING:  # torch is imported where models are saved or loaded: labeling starts fast
    import torch

    from ..models.resnet3d import ResNet3D

FORMAT_VERSION = 1
HISTORY_COLUMNS = [
    "cycle", "n_labeled", "test_accuracy", "mean_uncertainty", "train_seconds", "select_seconds",
    "n_queried", "teacher_loss", "student_loss", "transfer_loss", "samples_per_second", "strategy", "device",
]
QUERY_COLUMNS = ["rank", "index", "key", "score", "predicted", "confidence"]
JUNK_CLASS = "junk"
ARCHITECTURE_KEYS = ("teacher_depth", "student_depth", "width", "stem")  # what a state dict's shapes depend on
_CYCLE_DIR = re.compile(r"cycle_(\d+)$")
# what an import killed half-way leaves in a project folder (no project.json yet)
_POOL_LEFTOVERS = re.compile(r"(volumes\.npy(\.partial)?|index\.csv|info\.json|\..+\.tmp)$")
_WRITER_TEMP = re.compile(
    r"\.(project\.json|recipe\.toml|history\.csv|learning_curve\.png|cycle_\d+\.csv|teacher\.pt|student\.pt"
    r"|meta\.json)\..+\.tmp")
_ROOT_LEFTOVERS = re.compile(r"(recipe\.toml|\.(recipe\.toml|project\.json)\..+\.tmp)$")


@dataclass(frozen=True)
class QueryItem:
    rank: int
    index: int
    key: str
    score: float  # NaN for the random initial batch
    predicted: str  # teacher's class ("" before any training)
    confidence: float  # NaN before any training


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
        cfg_path = self.root / "project.json"
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
        self.journal = LabelJournal(self.root / "labels.jsonl")
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
            written_after = (self.root / "project.json").stat().st_mtime >= float(rec.get("t", 0))
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
        folders = [self.root, self.root / "queries", *(self.root / "checkpoints").glob("cycle_*")]
        for folder in folders:
            for p in folder.glob(".*.tmp"):
                if _WRITER_TEMP.fullmatch(p.name):
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
        on_progress: ProgressCallback | None = None,
        should_stop: StopFlag | None = None,
    ) -> Project:
        """Import ``source`` into a new project at ``root`` (which must be new or empty)."""
        root = Path(root).expanduser()
        if (root / "project.json").exists():
            raise ProjectError(f"{root}: a project already exists here; open it instead")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: is a file; choose a new folder for the project")
        if root.exists() and _user_files(root) and not _interrupted_import(root):
            raise ProjectError(f"{root}: folder is not empty; choose a new folder for the project")
        classes = [_valid_class_name(c) for c in (classes or [])]
        if len(set(classes)) != len(classes):
            raise KtalError("class names must be unique")
        created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"{root}: cannot create the project folder ({exc.strerror or exc})") from None
        with ProjectLock(root, "a project import"):  # two imports into one folder: the second is refused
            if (root / "project.json").exists():
                raise ProjectError(f"{root}: a project already exists here; open it instead")
            if _user_files(root):
                if not _interrupted_import(root):
                    raise ProjectError(f"{root}: folder is not empty; choose a new folder for the project")
                _remove_all(root)  # a killed import leaves only its own files behind: start again
            try:
                pool = import_pool(root / "pool", source, on_progress=on_progress, should_stop=should_stop)
                atomic_write_text(root / "recipe.toml", tomli_w.dumps(recipe.to_dict()))
            except BaseException:
                # nothing of value is in a project that failed to import (the folder was empty
                # when the import began, under the lock): leave the folder as it was
                _remove_all(root)
                with contextlib.suppress(OSError):
                    (root / LOCK_FILE).unlink()
                    if created:
                        root.rmdir()
                raise
            config = {
                "format_version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "source": str(Path(source).expanduser().resolve()),  # provenance only: never opened
                "n_volumes": len(pool),
                "box": pool.box,
                "classes": classes,
            }
            atomic_write_text(root / "project.json", json.dumps(config, indent=2))  # the commit point
        return cls(root)

    @staticmethod
    def is_project(root: str | Path) -> bool:
        return (Path(root).expanduser() / "project.json").exists()

    # -- configuration ---------------------------------------------------------------
    def _save_config(self) -> None:
        atomic_write_text(self.root / "project.json", json.dumps(self._config, indent=2))

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
        return load_recipe(self.root / "recipe.toml")

    def set_recipe(self, recipe: Recipe) -> None:
        atomic_write_text(self.root / "recipe.toml", tomli_w.dumps(recipe.to_dict()))

    # -- pool and labels ---------------------------------------------------------------
    @property
    def pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool.open(self.root / "pool")
        return self._pool

    def labels(self) -> dict[int, str]:
        """Current labels (pool index -> class name), replayed from the journal."""
        return self.journal.labels()

    def label(self, index: int, label: str, by: str = "user", cycle: int | None = None) -> None:
        if label not in self._config["classes"]:
            raise KtalError(f"unknown class '{label}'; classes are {', '.join(self.classes)}")
        self.journal.set(index, self.pool.keys[index], label, by=by, cycle=cycle)

    def label_many(self, items: dict[int, str], by: str = "user", cycle: int | None = None) -> None:
        unknown = sorted(set(items.values()) - set(self._config["classes"]))
        if unknown:
            raise KtalError(f"unknown class(es) {', '.join(unknown)}; classes are {', '.join(self.classes)}")
        keys = self.pool.keys
        self.journal.set_many(((i, keys[i], lab) for i, lab in items.items()), by=by, cycle=cycle)

    def unlabel(self, index: int, by: str = "user") -> None:
        self.journal.unset(index, self.pool.keys[index], by=by)

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
                               f"{self.root / 'project.json'} does not list; add them back to the project's classes")
        y = np.array([lookup[labels[i]] for i in idx], dtype=np.int64)
        return idx, y, self.pool.read(idx)

    # -- queries ---------------------------------------------------------------------
    def _query_path(self, cycle: int) -> Path:
        return self.root / "queries" / f"cycle_{cycle:03d}.csv"

    def write_query(self, cycle: int, items: list[QueryItem]) -> None:
        with atomic_open(self._query_path(cycle), "w") as f:
            w = csv.writer(f)
            w.writerow(QUERY_COLUMNS)
            for q in items:
                w.writerow([q.rank, q.index, q.key, _fmt(q.score), q.predicted, _fmt(q.confidence)])

    def read_query(self, cycle: int) -> list[QueryItem]:
        path = self._query_path(cycle)
        n = len(self.pool)
        items = []
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                for r in reader:
                    item = QueryItem(int(r["rank"]), int(r["index"]), r["key"], _num(r["score"]), r["predicted"],
                                     _num(r["confidence"]))
                    if not 0 <= item.index < n:
                        raise ValueError(f"index {item.index} is outside the pool of {n} volumes")
                    items.append(item)
        except FileNotFoundError:
            raise ProjectError(f"{path}: missing; the batch of cycle {cycle} was never written") from None
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
            where = f"line {reader.line_num}: " if "reader" in locals() else ""
            raise ProjectError(f"{path}: {where}damaged ({exc}); delete the file to draw the batch again") from None
        return items

    def query_cycles(self) -> list[int]:
        """Cycles whose batch is written and valid: batch k counts once cycle k-1 is committed.

        A batch written by a cycle that died before its history.csv row is ignored (that cycle
        is trained again and writes it again), so nobody labels a batch of an unfinished cycle.
        """
        pattern = re.compile(r"cycle_(\d+)\.csv$")
        found = (pattern.match(p.name) for p in (self.root / "queries").glob("cycle_*.csv"))
        trained = self.trained_cycles
        return sorted(c for c in (int(m.group(1)) for m in found if m) if c <= trained)

    def latest_query(self) -> tuple[int, list[QueryItem]] | None:
        cycles = self.query_cycles()
        return (cycles[-1], self.read_query(cycles[-1])) if cycles else None

    # -- checkpoints -------------------------------------------------------------------
    def _ckpt_dir(self, cycle: int) -> Path:
        return self.root / "checkpoints" / f"cycle_{cycle:03d}"

    def save_models(self, cycle: int, teacher: ResNet3D, student: ResNet3D, recipe: Recipe) -> None:
        import torch

        d = self._ckpt_dir(cycle)
        # a folder re-written (the cycle is trained again after a kill or a cancel) is incomplete
        # from here on until its new meta.json lands: never a new teacher beside an old student
        meta_path = d / "meta.json"
        if meta_path.exists():
            meta_path.unlink()
            fsync_dir(d)
        for name, model in (("teacher", teacher), ("student", student)):
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            with atomic_open(d / f"{name}.pt", "wb") as f:
                torch.save(state, f)
        meta = {"cycle": cycle, "classes": self.classes, "model": recipe.to_dict()["model"]}
        # meta.json is written last: a checkpoint folder without it is incomplete and ignored
        atomic_write_text(meta_path, json.dumps(meta, indent=2))

    def checkpoint_cycles(self) -> list[int]:
        """Cycles with a complete checkpoint (meta.json written) that were committed to history.csv."""
        committed = {int(r["cycle"]) for r in self.history()}
        found = (_CYCLE_DIR.match(p.parent.name) for p in (self.root / "checkpoints").glob("cycle_*/meta.json"))
        return sorted(c for c in (int(m.group(1)) for m in found if m) if c in committed)

    def load_models(self, cycle: int | None = None, device: str | torch.device = "cpu",
                    expect_model: ModelSpec | None = None) -> tuple[ResNet3D, ResNet3D, dict]:
        """The trained (teacher, student) of ``cycle`` (latest by default), loaded with weights_only=True.

        ``expect_model``: the architecture the caller will copy the weights into (a warm start);
        a checkpoint of another architecture is refused with a ProjectError naming the keys.
        Only tensors are ever unpickled: a file holding anything else is refused, not run.
        """
        import torch

        from ..models.resnet3d import ResNet3D

        cycles = self.checkpoint_cycles()
        if not cycles:
            raise ProjectError(f"{self.root}: no trained models yet; run a training cycle first")
        if cycle is None:
            cycle = cycles[-1]
        elif cycle not in cycles:
            raise ProjectError(f"{self.root}: no complete checkpoint of cycle {cycle} "
                               f"(complete: {', '.join(map(str, cycles))})")
        d = self._ckpt_dir(cycle)
        meta_path = d / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            spec, n = meta["model"], len(meta["classes"])
            common = dict(n_classes=n, width=int(spec["width"]), stem=str(spec["stem"]),
                          dropout=float(spec.get("dropout", 0.0)))
            depths = (("teacher", int(spec["teacher_depth"])), ("student", int(spec["student_depth"])))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProjectError(f"{meta_path}: damaged ({type(exc).__name__}: {exc}); "
                               f"delete the folder {d.name} to train that cycle again") from None
        if expect_model is not None:
            _require_architecture(d, spec, expect_model)
        models = []
        for name, depth in depths:
            path = d / f"{name}.pt"
            try:
                model = ResNet3D(depth, **common)
            except (ValueError, KeyError, TypeError) as exc:
                raise ProjectError(f"{meta_path}: describes a model that cannot be built ({exc})") from None
            try:
                with warnings.catch_warnings():  # torch's notes on foreign pickle protocols
                    warnings.simplefilter("ignore")
                    state = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                found = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln), "")
                raise ProjectError(
                    f"{path}: refused: it holds more than tensors and was not loaded"
                    + (f" ({found[:160]})" if found else "")
                    + "; napari-ktal never writes such files: do not trust it, delete the folder "
                    f"{d.name} to train that cycle again") from None
            except FileNotFoundError:
                raise ProjectError(f"{path}: missing; delete the folder {d.name} to train that cycle again") from None
            except Exception as exc:  # noqa: BLE001 - a torn or foreign file: torch reports it in many ways
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise ProjectError(f"{path}: damaged or not a checkpoint ({first}); "
                                   f"delete the folder {d.name} to train that cycle again") from None
            try:
                if not isinstance(state, dict):
                    raise TypeError(f"holds a {type(state).__name__}, not a state dict")
                model.load_state_dict(state)
            except (RuntimeError, TypeError, ValueError, KeyError) as exc:
                raise ProjectError(f"{path}: does not match its meta.json or is damaged "
                                   f"({str(exc).splitlines()[0][:200]})") from None
            models.append(model.to(device).eval())
        return models[0], models[1], meta

    def check_warm_start(self, recipe: Recipe) -> None:
        """Raise ProjectError now if ``recipe`` warm-starts from a checkpoint of another architecture.

        What :meth:`load_models` with ``expect_model`` would find out only when a cycle begins;
        a command checks it before it writes anything.
        """
        if recipe.active.reinit_each_cycle:
            return
        cycles = self.checkpoint_cycles()
        if not cycles:
            return
        d = self._ckpt_dir(cycles[-1])
        try:
            spec = json.loads((d / "meta.json").read_text(encoding="utf-8"))["model"]
        except (OSError, ValueError, KeyError, TypeError):
            return  # load_models names a damaged meta.json when the cycle starts
        _require_architecture(d, spec, recipe.model)

    # -- history -----------------------------------------------------------------------
    @property
    def history_path(self) -> Path:
        return self.root / "history.csv"

    def history(self) -> list[dict[str, str]]:
        if not self.history_path.exists():
            return []
        try:
            with open(self.history_path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            for row in rows:
                int(row["cycle"])
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
            raise ProjectError(f"{self.history_path}: damaged ({type(exc).__name__}: {exc}); "
                               "restore it from a backup, or delete it to train every cycle again") from None
        return rows

    def record_cycle(self, row: dict) -> None:
        """Add (or replace) the row of ``row['cycle']`` in history.csv, atomically."""
        rows = [r for r in self.history() if int(r["cycle"]) != int(row["cycle"])]
        rows.append({k: _fmt(row.get(k, "")) for k in HISTORY_COLUMNS})
        rows.sort(key=lambda r: int(r["cycle"]))
        with atomic_open(self.history_path, "w") as f:
            w = csv.DictWriter(f, HISTORY_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    @property
    def trained_cycles(self) -> int:
        """How many cycles have been trained (the next training is cycle number ``trained_cycles``)."""
        return len(self.history())


def _require_architecture(d: Path, spec, expect: ModelSpec) -> None:
    have = {k: spec.get(k) if isinstance(spec, dict) else None for k in ARCHITECTURE_KEYS}
    want = {k: getattr(expect, k) for k in ARCHITECTURE_KEYS}
    diff = [k for k in ARCHITECTURE_KEYS if want[k] != have[k]]
    if diff:
        raise ProjectError(
            f"{d}: trained with [model] " + ", ".join(f"{k} = {have[k]!r}" for k in diff)
            + " but the recipe asks for " + ", ".join(f"{k} = {want[k]!r}" for k in diff)
            + "; its weights cannot be carried over (set [active] reinit_each_cycle = true to train "
            "from scratch, or restore the recipe's [model])"
        )


def _user_files(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name != LOCK_FILE]


def _interrupted_import(root: Path) -> bool:
    """Whether ``root`` holds only what an import killed half-way leaves (no project.json)."""
    entries = _user_files(root)
    if not entries or (root / "project.json").exists():
        return False
    for p in entries:
        if p.name == "pool" and p.is_dir() and not p.is_symlink():
            if not all(q.is_file() and _POOL_LEFTOVERS.fullmatch(q.name) for q in p.iterdir()):
                return False
        elif not (p.is_file() and _ROOT_LEFTOVERS.fullmatch(p.name)):
            return False
    return True


def _remove_all(root: Path) -> None:
    """Remove every entry of ``root`` but the lock file (called on a folder this import owns)."""
    for p in _user_files(root):
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _num(s: str) -> float:
    return float(s) if s not in ("", None) else float("nan")
