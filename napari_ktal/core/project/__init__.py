"""The project folder: the contract between the napari widget and ``ktal-cryo``.

- :mod:`.paths`        the folder's layout (ProjectPaths: the one place that names its files)
- :mod:`.project`      Project: open or create a folder, classes, labels, recipe
- :mod:`.journal`      the append-only labels journal
- :mod:`.lock`         one writer at a time
- :mod:`.queries`, :mod:`.checkpoints`, :mod:`.history`   a cycle's batch, models and row
- :mod:`.judgements`   audit judgements, the stop set's predictions, a simulated oracle's slips
"""

from .history import HISTORY_COLUMNS
from .journal import LabelJournal
from .judgements import AuditJudgement, StopPredictions
from .lock import LOCK_FILE, ProjectLock, ProjectLocked
from .paths import ProjectPaths
from .project import FORMAT_VERSION, JUNK_CLASS, Project
from .queries import QueryItem

__all__ = [
    "AuditJudgement",
    "FORMAT_VERSION",
    "HISTORY_COLUMNS",
    "JUNK_CLASS",
    "LOCK_FILE",
    "LabelJournal",
    "Project",
    "ProjectLock",
    "ProjectLocked",
    "ProjectPaths",
    "QueryItem",
    "StopPredictions",
]
