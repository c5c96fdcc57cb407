"""The active-learning loop: schedule, cycles, oracle runs, the labeling session, the commands.

The numbers that judge a run (metrics, statistics, plots, summaries) live apart, in
:mod:`napari_ktal.core.evaluation`; this package drives cycles and writes their outputs.

- :mod:`.schedule`   the budget: labeled-set size per cycle
- :mod:`.cycle`      one cycle: train, save, score, write the next batch, judge, log
- :mod:`.judging`    a cycle judged without a test set: held-out audit volumes, the estimate, the stop rule
- :mod:`.labels`     labels CSVs on the pool, and test sets
- :mod:`.oracle`     simulated runs answered from known labels (optionally with an expert's slips)
- :mod:`.session`    labeling a batch: position, labels, skips, corrections, undo across batches
- :mod:`.review`     every label with its provenance and the teacher's opinion; per-class examples
- :mod:`.commands`   what both shells run: open/create (also from picks), extract, prepare and run
                     training, import labels
- :mod:`.pretraining` the project's pretrained encoder (once per project), pool features, TypiClust
- :mod:`.ranks`      torchrun: rank 0 reads and writes the project, the others receive
- :mod:`.benchmark`  strategies x seeds of oracle runs, resumable, with their comparison
- :mod:`.export`     the user's own particle files back, with the classes filled in
"""

from .commands import (
    DEFAULT_RECIPE,
    PickSource,
    TrainingPlan,
    TrainOutcome,
    extract,
    import_labels,
    load_recipe,
    open_or_create,
    prepare_training,
    project_recipe,
    train,
)
from .cycle import CycleReport, initial_query, train_cycle
from .export import export_labels, write_predictions
from .labels import LabeledSet, load_labeled_set
from .oracle import flip_answers, oracle_for_pool, run_with_oracle
from .schedule import budget_schedule
from .session import LabelingSession, Phase, shown_score

__all__ = [
    "DEFAULT_RECIPE",
    "PickSource",
    "CycleReport",
    "LabeledSet",
    "LabelingSession",
    "Phase",
    "TrainOutcome",
    "TrainingPlan",
    "budget_schedule",
    "export_labels",
    "extract",
    "import_labels",
    "initial_query",
    "load_labeled_set",
    "load_recipe",
    "open_or_create",
    "flip_answers",
    "oracle_for_pool",
    "prepare_training",
    "project_recipe",
    "run_with_oracle",
    "shown_score",
    "train",
    "train_cycle",
    "write_predictions",
]
