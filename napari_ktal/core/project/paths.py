"""Where everything of a project lives: the one place that spells the folder's file names.

    P/project.json            format version, class names, where the data came from
    P/recipe.toml             the recipe this project trains with (editable)
    P/pool/                   volumes.npy (memmap), index.csv, info.json
    P/source/                 for a project made from a particle list: picks.json (format, tomograms,
                              voxel sizes, contrast) and a copy of the list, which export writes back
    P/labels.jsonl            the append-only labels journal
    P/queries/cycle_NNN.csv   the batch to label that forms cycle NNN's labeled set
    P/checkpoints/cycle_NNN/  teacher.pt, student.pt (state dicts), meta.json
    P/pretrained/             encoder.pt, meta.json: the encoder pretrained on the pool ([pretrain] method)
    P/review/                 crossfit.npz, calibration.json: the labels judged out of sample (``ktal-cryo review``,
                              the review tab) and the temperature that calibrates the teacher's confidence
    P/history.csv             one row per trained cycle
    P/audit.csv               each audit volume as judged by the teacher that did not train on it
    P/stop_set.csv            the fixed stop set and each cycle's predicted classes on it (the stop rule)
    P/oracle_flips.csv        a simulated run's wrong oracle answers (``train --oracle --flip-answers``)
    P/learning_curve.png
    P/predictions.csv         where ``ktal-cryo predict`` and the widget's export write by default
    P/.lock                   the write lock (see :mod:`.lock`): who has the project open
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .lock import LOCK_FILE

CYCLE_NAME = re.compile(r"cycle_(\d+)$")  # a checkpoint folder, or a query file's stem


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "project.json"

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.toml"

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def source_record(self) -> Path:
        return self.source / "picks.json"

    @property
    def journal(self) -> Path:
        return self.root / "labels.jsonl"

    @property
    def queries(self) -> Path:
        return self.root / "queries"

    def query(self, cycle: int) -> Path:
        return self.queries / f"cycle_{cycle:03d}.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, cycle: int) -> Path:
        return self.checkpoints / f"cycle_{cycle:03d}"

    @property
    def pretrained(self) -> Path:
        return self.root / "pretrained"

    @property
    def review(self) -> Path:
        return self.root / "review"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def audit(self) -> Path:
        return self.root / "audit.csv"

    @property
    def stop_set(self) -> Path:
        return self.root / "stop_set.csv"

    @property
    def oracle_flips(self) -> Path:
        return self.root / "oracle_flips.csv"

    @property
    def learning_curve(self) -> Path:
        return self.root / "learning_curve.png"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    def writer_temp_files(self) -> list[Path]:
        """Temp files of atomic writes by a project writer (which all hold the lock)."""
        folders = [self.root, self.queries, self.pretrained, self.review, *self.checkpoints.glob("cycle_*")]
        return [p for folder in folders for p in folder.glob(".*.tmp") if WRITER_TEMP.fullmatch(p.name)]


# what writers leave behind when killed mid-write (never a reader's, e.g. predictions.csv)
WRITER_TEMP = re.compile(
    r"\.(project\.json|recipe\.toml|history\.csv|audit\.csv|stop_set\.csv|oracle_flips\.csv|learning_curve\.png"
    r"|cycle_\d+\.csv|teacher\.pt|student\.pt|encoder\.pt|meta\.json|crossfit\.npz|calibration\.json)\..+\.tmp")
# what an import killed half-way leaves in a project folder (no project.json yet)
POOL_LEFTOVERS = re.compile(r"(volumes\.npy(\.partial)?|index\.csv|info\.json|\..+\.tmp)$")
ROOT_LEFTOVERS = re.compile(r"(recipe\.toml|\.(recipe\.toml|project\.json)\..+\.tmp)$")
# the copy of a particle list an import from one writes before project.json (any names: the user's)
SOURCE_FOLDER = "source"
