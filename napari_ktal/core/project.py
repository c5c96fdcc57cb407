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

Every file except the journal is written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomli_w
import torch

from .atomic import atomic_open, atomic_write_text
from .errors import KtalError, ProjectError
from .journal import LabelJournal
from .pool import Pool, import_pool
from .progress import ProgressCallback, StopFlag
from .recipe import Recipe, load_recipe
from .resnet3d import ResNet3D

FORMAT_VERSION = 1
HISTORY_COLUMNS = [
    "cycle", "n_labeled", "test_accuracy", "mean_uncertainty", "train_seconds", "select_seconds",
    "n_queried", "teacher_loss", "student_loss", "transfer_loss", "samples_per_second", "strategy", "device",
]
QUERY_COLUMNS = ["rank", "index", "key", "score", "predicted", "confidence"]
JUNK_CLASS = "junk"


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

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        cfg_path = self.root / "project.json"
        if not cfg_path.exists():
            raise ProjectError(f"{self.root}: not a napari-ktal project (no project.json)")
        try:
            self._config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise ProjectError(f"{cfg_path}: cannot be read ({exc})") from None
        version = self._config.get("format_version")
        if version != FORMAT_VERSION:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            raise ProjectError(
                f"{cfg_path}: project format version {version!r} "
                + ("is newer than this napari-ktal understands; upgrade napari-ktal"
                   if newer else f"is not supported (this napari-ktal reads version {FORMAT_VERSION})")
            )
        self.journal = LabelJournal(self.root / "labels.jsonl")
        self._pool: Pool | None = None

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
        root = Path(root)
        if (root / "project.json").exists():
            raise ProjectError(f"{root}: a project already exists here; open it instead")
        if root.exists() and any(root.iterdir()):
            raise ProjectError(f"{root}: folder is not empty; choose a new folder for the project")
        classes = [_valid_class_name(c) for c in (classes or [])]
        if len(set(classes)) != len(classes):
            raise KtalError("class names must be unique")
        root.mkdir(parents=True, exist_ok=True)
        try:
            pool = import_pool(root / "pool", source, on_progress=on_progress, should_stop=should_stop)
        except BaseException:
            # nothing of value is in a project that failed to import; leave the folder as it was
            for p in sorted(root.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            root.rmdir()
            raise
        atomic_write_text(root / "recipe.toml", tomli_w.dumps(recipe.to_dict()))
        config = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": str(Path(source).resolve()),
            "n_volumes": len(pool),
            "box": pool.box,
            "classes": classes,
        }
        atomic_write_text(root / "project.json", json.dumps(config, indent=2))
        return cls(root)

    @staticmethod
    def is_project(root: str | Path) -> bool:
        return (Path(root) / "project.json").exists()

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
        lookup = {c: k for k, c in enumerate(self.classes)}
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
        with open(path, newline="", encoding="utf-8") as f:
            return [
                QueryItem(int(r["rank"]), int(r["index"]), r["key"], _num(r["score"]), r["predicted"],
                          _num(r["confidence"]))
                for r in csv.DictReader(f)
            ]

    def query_cycles(self) -> list[int]:
        pattern = re.compile(r"cycle_(\d+)\.csv$")
        found = (pattern.match(p.name) for p in (self.root / "queries").glob("cycle_*.csv"))
        return sorted(int(m.group(1)) for m in found if m)

    def latest_query(self) -> tuple[int, list[QueryItem]] | None:
        cycles = self.query_cycles()
        return (cycles[-1], self.read_query(cycles[-1])) if cycles else None

    # -- checkpoints -------------------------------------------------------------------
    def _ckpt_dir(self, cycle: int) -> Path:
        return self.root / "checkpoints" / f"cycle_{cycle:03d}"

    def save_models(self, cycle: int, teacher: ResNet3D, student: ResNet3D, recipe: Recipe) -> None:
        d = self._ckpt_dir(cycle)
        for name, model in (("teacher", teacher), ("student", student)):
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            with atomic_open(d / f"{name}.pt", "wb") as f:
                torch.save(state, f)
        meta = {"cycle": cycle, "classes": self.classes, "model": recipe.to_dict()["model"]}
        # meta.json is written last: a checkpoint folder without it is incomplete and ignored
        atomic_write_text(d / "meta.json", json.dumps(meta, indent=2))

    def checkpoint_cycles(self) -> list[int]:
        return sorted(int(p.parent.name[6:]) for p in (self.root / "checkpoints").glob("cycle_*/meta.json"))

    def load_models(self, cycle: int | None = None, device: str | torch.device = "cpu") -> tuple[ResNet3D, ResNet3D, dict]:
        """The trained (teacher, student) of ``cycle`` (latest by default), loaded with weights_only=True."""
        cycles = self.checkpoint_cycles()
        if not cycles:
            raise ProjectError(f"{self.root}: no trained models yet; run a training cycle first")
        cycle = cycles[-1] if cycle is None else cycle
        d = self._ckpt_dir(cycle)
        meta = json.loads((d / "meta.json").read_text())
        spec, n = meta["model"], len(meta["classes"])
        common = dict(n_classes=n, width=spec["width"], stem=spec["stem"], dropout=spec["dropout"])
        models = []
        for name, depth in (("teacher", spec["teacher_depth"]), ("student", spec["student_depth"])):
            model = ResNet3D(depth, **common)
            try:
                state = torch.load(d / f"{name}.pt", map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except (RuntimeError, OSError, EOFError) as exc:
                raise ProjectError(f"{d / (name + '.pt')}: does not match its meta.json or is damaged ({str(exc).splitlines()[0]})") from None
            models.append(model.to(device).eval())
        return models[0], models[1], meta

    # -- history -----------------------------------------------------------------------
    @property
    def history_path(self) -> Path:
        return self.root / "history.csv"

    def history(self) -> list[dict[str, str]]:
        if not self.history_path.exists():
            return []
        with open(self.history_path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

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


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _num(s: str) -> float:
    return float(s) if s not in ("", None) else float("nan")
