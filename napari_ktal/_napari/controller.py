"""What the dock widget does, without Qt: the labeling session, training in the background,
the next cycle started when a batch is done, and what to tell the user.

The controller holds a :class:`~napari_ktal.core.loop.LabelingSession` (what is labeled, what
to show next) and runs the long jobs (import, a cycle's training, export) through a *runner*
(:class:`~napari_ktal._napari._qt.worker.TaskRunner` in napari, :class:`~.runner.SerialRunner` in
tests). It tells whoever listens what changed through the psygnal signals of
:class:`ControllerEvents` (``controller.events``): the Qt widget's panels and layers connect to
them; tests record them and drive the controller alone.

Auto-training: when every volume of the batch is labeled or skipped and "Auto-train when the batch is done"
is on, a cycle trains in the background while the user keeps browsing. A label of that batch
taken back while it trains cancels it (it restarts when the batch is done again); a label
changed in place is kept for the next cycle. Training runs in a thread of its own with a
lowered OS priority (:func:`~.background.run_in_background_thread`), so the GUI and the user's other
programs go first.

Beyond the batch (:class:`~.browser.Browser`): thumbnails for the gallery, the teacher's
opinion for the review table and the per-class examples; any label of the project can be
corrected (``relabel``, ``unlabel``) and any volume visited; undo reaches across batches.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from psygnal import Signal, SignalGroup

from ..core.errors import KtalError
from ..core.loop import LabelingSession, Phase, commands
from ..core.progress import QUIET, Progress, RunContext, clock, describe
from ..core.seeds import DEFAULT_SEED
from .background import run_in_background_thread, worker_threads
from .browser import Browser, reporting

LOCK_PURPOSE = "napari (napari-ktal widget)"  # what a refused `ktal-cryo train` is told holds the project
TRAIN, IMPORT, EXPORT, WARM_UP = "train", "import", "export", "warm-up"
PROGRESS_INTERVAL = 0.25  # s: the bar is updated at most this often (each update repaints the window)


class Runner(Protocol):
    """Runs ``job(run)`` (``run``: a RunContext) off the GUI thread; one job per kind at a time.

    The delivery rules are :mod:`.runner`'s: :class:`~._qt.worker.TaskRunner`, :class:`~.runner.SerialRunner`.
    """

    def start(self, kind: str, job, *, on_progress=None, on_result=None, on_error=None, on_cancelled=None,
              on_finished=None) -> Any: ...

    def running(self, kind: str | None = None) -> Any: ...

    def busy(self, kind: str | None = None) -> bool: ...

    def cancel(self, kind: str | None = None) -> bool: ...

    def shutdown(self, timeout: float = 30.0) -> bool: ...


class ControllerEvents(SignalGroup):
    """What the controller tells its view: one psygnal signal per piece of news, emitted on the
    thread the controller runs on (the GUI thread in napari)."""

    show = Signal(bool)
    """The current volume and the session's numbers changed; ``reset_camera``: fit the view to it."""
    classes_changed = Signal()
    """Classes were added, renamed or removed (buttons, keys)."""
    history_changed = Signal()
    """A cycle was trained, or labels changed what the per-cycle plot shows."""
    opened = Signal()
    """A project is open: show the labeling page."""
    closed = Signal()
    """No project is open: show the setup page."""
    status = Signal(str)
    """A line about training or the batch."""
    progress = Signal(str, int, int)
    """A long job's progress: (text, done, total); ``total`` 0 means busy, no count yet."""
    info = Signal(str)
    """A notification."""
    error = Signal(BaseException)
    """A problem (an exception): a KtalError says what to do; anything else is a bug."""
    job_changed = Signal(str, bool)
    """A job of ``kind`` started (True) or ended (False): buttons enable and disable."""
    batch_changed = Signal()
    """Another batch is on screen (a cycle was trained, or a project opened): the gallery starts over."""
    labels_changed = Signal()
    """Labels changed (the review table and the examples are out of date)."""
    thumbnails_ready = Signal(list)
    """Thumbnails of these pool volumes are made (an empty list: the thumbnail kind changed)."""
    teacher_changed = Signal()
    """The teacher's opinion of the labels is new (review table, examples)."""
    review_changed = Signal()
    """Judging the labels out of sample started, ended or was stopped (the review table: its order and
    what it says of it; ``controller.browser.judged`` and ``review_state()``)."""


def call_now(fn: Callable[[], None]) -> None:
    """The default ``defer`` of a controller without an event loop: run ``fn`` at once."""
    fn()


class ProgressThrottle:
    """Which progress events are worth a repaint: at most one every ``interval`` s of ``clock``,
    but every new epoch, message, set of metrics and the end get through."""

    def __init__(self, interval: float = PROGRESS_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self._last = (-math.inf, None)  # (when, epoch) of the last event let through

    def due(self, event: Progress) -> bool:
        """Whether to show ``event`` (and remember it as the last one shown)."""
        now = self.clock()
        last_time, last_epoch = self._last
        done, total = event.steps
        if now - last_time < self.interval and event.epoch == last_epoch and not event.message \
                and not event.metrics and done < total:
            return False
        self._last = (now, event.epoch)
        return True


def warm_up(run: RunContext = QUIET) -> None:
    """Import what torch loads lazily when the first optimizer is made (torch._dynamo, sympy).

    That import takes ~1.5 s of mostly GIL-holding work. Run in a worker as soon as a
    project opens, it is done long before the first cycle trains, instead of stalling the
    GUI thread for up to ~0.7 s at a time in the middle of the first training.
    """
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def train_job(root: Path, device_name: str, seed: int, threads: int | None, run: RunContext = QUIET):
    """One cycle as ``ktal-cryo train`` runs it, with ``threads`` torch threads, in a thread of
    lowered priority (so a busy machine still gives the GUI its time).

    Unlike the CLI, learning_curve.png is not drawn here: matplotlib's Agg renderer holds the
    GIL for ~0.3 s and would stall the GUI; the dock has its own plot.
    """
    import torch

    from ..core.engine import resolve_device

    if threads:
        torch.set_num_threads(threads)
    return run_in_background_thread(commands.train_next_cycle, root, resolve_device(device_name), seed=seed, run=run)


def export_job(root: Path, out: Path, device_name: str, run: RunContext = QUIET):
    from ..core.engine import resolve_device
    from ..core.loop import write_predictions
    from ..core.project import Project

    return write_predictions(Project(root), out, resolve_device(device_name), run=run)


UNDO_NAMES = 4  # volumes an undo message names; more are counted


def _trust_text(report) -> str:
    """What the cycle says of itself without a test set: the audit estimate, and the stop rule's
    suggestion when it makes one (never enforced)."""
    from ..core.trust import estimate_text

    text = estimate_text(report.estimated_accuracy, report.estimated_accuracy_low, report.estimated_accuracy_high)
    out = f" Accuracy (audit): {text.removeprefix('est. ')}." if text != "-" else ""
    if report.stop_suggested:
        out += f" {_sentence(report.stop_reason)}" if report.stop_reason else " Labeling could stop here."
    return out


def undo_message(step, keys, cycle: int) -> str:
    """What undoing ``step`` (the session's changes of one undo step) took back, and what the volumes are now.

    ``keys``: the pool's volume names; ``cycle``: the batch on screen. A step of an earlier batch
    is visited (its first volume), so the message says how to label it and how to get back.
    """
    given: dict[tuple, list] = {}
    for c in step:
        given.setdefault((c.after, c.after_skipped), []).append(c)
    what = []
    for (label, skipped), changes in given.items():
        volumes = _volumes(changes, keys)
        what.append(f"the skip of {volumes}" if skipped else
                    f"taking back the label of {volumes}" if label is None else f"{label} on {volumes}")
    now: dict[str, int] = {}
    for c in step:
        state = c.before if c.before is not None else "skipped" if c.before_skipped else "unlabeled"
        now[state] = now.get(state, 0) + 1
    if len(step) == 1:
        again = f"it is {next(iter(now))} again"
    elif len(now) == 1:
        again = f"all {len(step)} are {next(iter(now))} again"
    else:
        again = ", ".join(f"{n} {state} again" for state, n in now.items())
    text = f"Undone: {'; '.join(what)}: {again}."
    earlier = step[0].cycle
    if earlier != cycle:
        where, shown = ("It is", "") if len(step) == 1 else ("They are", f"; {keys[step[0].index]} is shown")
        text += (f" {where} from the batch of cycle {earlier}{shown}: a label key now labels it, "
                 "N goes back to the batch.")
    return text


def _volumes(changes, keys) -> str:
    """'sub_1.mrc', or '3 volumes (sub_1.mrc, sub_2.mrc, sub_3.mrc)', naming UNDO_NAMES at most."""
    if len(changes) == 1:
        return keys[changes[0].index]
    names = [keys[c.index] for c in changes[:UNDO_NAMES]]
    more = f" and {len(changes) - UNDO_NAMES} more" if len(changes) > UNDO_NAMES else ""
    return f"{len(changes)} volumes ({', '.join(names)}{more})"


def _sentence(text: str) -> str:
    """A core message as a status line: capitalised, with a full stop."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


class Controller:
    """The dock's logic over one open project at a time."""

    def __init__(self, runner: Runner, seed: int = DEFAULT_SEED, devices: list[str] | None = None,
                 defer: Callable[[Callable[[], None]], None] = call_now,
                 clock: Callable[[], float] = time.monotonic):
        """``devices``: those that work here, as :func:`~napari_ktal.core.engine.available_devices`
        lists them; probed on first use if not given. ``defer(fn)``: run ``fn`` a little later,
        after what changed so far is on screen (the widget posts it to Qt's event loop). ``clock``:
        seconds, for throttling the progress bar."""
        self.runner = runner
        self.events = ControllerEvents()
        self.seed = seed
        self.session: LabelingSession | None = None
        self.auto_train = True
        self._devices = devices
        self._device = "auto"
        self._defer = defer
        self._train_cycle: int | None = None  # the batch's cycle the running training was started for
        self._start_when_free = False  # the batch got done while a cancelled cycle was stopping
        self._throttle = ProgressThrottle(PROGRESS_INTERVAL, clock)
        self.browser = Browser(runner, self.events, session=lambda: self.session, device=lambda: self.device,
                               seed=seed, training=lambda: self.training)

    # -- device --------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where cycles train, as ``--device`` names it (auto, cpu, cuda:N)."""
        return self._device

    @device.setter
    def device(self, name: str) -> None:
        """KtalError for a name ``--device`` would not take, or a device that does not work here."""
        from ..core.engine import parse_device

        device = parse_device(name)
        if device not in self.devices():
            raise KtalError(f"device '{device}' does not work here; choose from {', '.join(self.devices())}")
        self._device = device

    def devices(self) -> list[str]:
        """The devices that work here ('auto' first, 'cpu' last); probed once."""
        if self._devices is None:
            from ..core.engine import available_devices

            self._devices = available_devices()
        return self._devices

    def device_text(self) -> str:
        """Where training runs, in words: 'the CPU', 'cuda:1', 'the CPU (device: auto)'."""
        from ..core.engine import auto_device

        actual = auto_device(self.devices()) if self._device == "auto" else self._device
        words = "the CPU" if actual == "cpu" else actual
        return f"{words} (device: auto)" if self._device == "auto" else words

    # -- projects --------------------------------------------------------------------------
    def open_project(self, root: str | Path) -> LabelingSession:
        """Open a project folder (and take its lock) at the first volume of its latest batch that needs a label."""
        from ..core.project import Project

        project = Project(root)  # a wrong folder leaves the open project open
        if self.session is not None and self.session.project.root == project.root:
            self.close_project()  # opened again: let go of our own lock first
        # held for as long as the project is open here: a CLI run or another window is refused
        project.acquire_lock(LOCK_PURPOSE)
        try:
            session = LabelingSession(project, seed=self.seed)
        except BaseException:
            project.release_lock()
            raise
        if self.session is not None:
            self.close_project()
        project.journal.fsync_in_background()  # a key press does not wait for the disk (see journal.py)
        self.session = session
        self._training_stopped()
        self.events.opened.emit()
        self.events.status.emit("")
        self.events.classes_changed.emit()
        self.events.show.emit(True)  # reset_camera
        self.events.history_changed.emit()
        self.browser.opened()
        self.events.batch_changed.emit()
        if "torch._dynamo" not in sys.modules:
            self.runner.start(WARM_UP, partial(warm_up), on_error=self.events.error.emit)
        self.maybe_start_training()
        return session

    def create_project(self, root: str | Path, source: str | Path | None = None, layer=None,
                       classes: list[str] | None = None, recipe: str = commands.DEFAULT_RECIPE,
                       tomograms: str | Path | None = None):
        """Import subtomograms (a path, or a napari Image layer; or a particle list and its
        ``tomograms``) into a new project, then open it."""
        if not str(root).strip():
            raise KtalError("choose a folder for the new project")
        classes = list(classes or [])
        if layer is not None:
            voxel = float(layer.scale[-1]) if layer.scale[-1] > 0 else 1.0
            job = partial(commands.create_from_array, root, layer.data, voxel, layer.name, recipe, classes)
        elif source and (tomograms or commands.is_particle_list(source)):  # boxes cut at the picks
            picks = commands.PickSource(Path(source), Path(tomograms) if tomograms else None)
            job = partial(commands.create_from_picks, root, picks, recipe, classes)
        elif source:
            job = partial(commands.create_project, root, source, recipe, classes)
        else:
            raise KtalError("choose the subtomograms: a folder, an MRC stack or CSV, or an Image layer")

        def done(project) -> None:
            self.events.job_changed.emit(IMPORT, False)
            if layer is not None:
                layer.visible = False  # its volumes are in the project now; keep the canvas for the view
            self.events.info.emit(f"Created project {project.root}")
            self._reporting(self.open_project, project.root)

        def failed(exc: BaseException) -> None:
            self.events.job_changed.emit(IMPORT, False)
            self.events.error.emit(exc)

        self.events.job_changed.emit(IMPORT, True)
        return self.runner.start(IMPORT, job, on_result=done, on_error=failed,
                                 on_cancelled=lambda: self.events.job_changed.emit(IMPORT, False))

    def close_project(self) -> None:
        """Stop any job, let go of the project (and its lock)."""
        self.runner.shutdown()
        self.release_project()
        self._train_cycle = None
        self.events.closed.emit()

    def release_project(self) -> None:
        """Forget the session and let go of the project's lock (after the jobs stopped)."""
        session, self.session = self.session, None
        self.browser.closed()
        if session is not None:
            try:
                session.project.journal.fsync_in_foreground()  # every label on disk before we let go
            except KtalError as exc:
                self.events.error.emit(exc)
            finally:
                session.project.release_lock()

    def _reporting(self, fn, *args):
        return reporting(self.events, fn, *args)

    def context(self):
        """The current volume's pick in its tomogram (a slab and the box), read now; KtalError if none."""
        if self.session is None or self.session.item is None:
            raise KtalError("no volume is shown")
        return commands.particle_context(self.session.project, self.session.item.index)

    # -- labeling ----------------------------------------------------------------------------
    def assign(self, label: str) -> None:
        """Label the volume on screen (a batch volume, or a visited one)."""
        s = self.session
        index = s.current_index
        before = None if index is None else s.label_of(index)
        s.assign(label)
        self._after_change(changed_label=before is not None and before != label)

    def assign_key(self, key: str) -> None:
        """A class key (1-9, 0, then letters) pressed over the viewer: label with its class, or say there is none."""
        label = self.class_of_key(key)
        if label is not None:
            self.assign(label)

    def assign_key_to(self, indices, key: str) -> None:
        """A class key pressed in the gallery or the review table: label ``indices``, or say there is no such class."""
        label = self.class_of_key(key)
        if label is not None:
            self.assign_to(indices, label)

    def class_of_key(self, key: str) -> str | None:
        """The class ``key`` labels with; None, with a status line that says so, if the project has none on it."""
        from ..core.loop.session import class_for_key

        try:
            return class_for_key(self.session.classes, key)
        except KtalError as exc:
            self.events.status.emit(_sentence(str(exc)))
            return None

    def assign_to(self, indices, label: str) -> None:
        """Give ``label`` to several volumes at once (the gallery's selection): one undo step."""
        s = self.session
        changed = any(s.label_of(int(i)) not in (None, label) for i in indices)
        if s.assign_many(indices, label):
            self._after_change(changed_label=changed)

    def relabel(self, index: int, label: str) -> None:
        """Correct any label of the project (review); the journal records what it replaced."""
        before = self.session.label_of(int(index))
        self.session.relabel(index, label)
        self._after_change(changed_label=before is not None and before != label)

    def unlabel(self, index: int) -> None:
        """Take any label of the project back (review): the volume returns to the unlabeled pool."""
        if self.session.unlabel(index) is not None:
            self._after_change(changed_label=True)

    def unlabel_many(self, indices) -> None:
        """Take several labels back (review's selection); each is an undo step."""
        if [i for i in indices if self.session.unlabel(i) is not None]:
            self._after_change(changed_label=True)

    def skip(self) -> None:
        self.session.skip()
        self._after_change()

    def undo(self) -> None:
        """Undo the last step (one label, a skip, or a bulk assignment) and say what it took back."""
        s = self.session
        step = s.undo()
        if step:
            self._after_change(changed_label=True, note=undo_message(step, s.project.pool.keys, s.cycle))

    def next(self) -> None:
        self.session.next()
        self.events.show.emit(False)

    def previous(self) -> None:
        self.session.previous()
        self.events.show.emit(False)

    def go_to(self, position: int) -> None:
        """Show the batch's volume at ``position`` (a click in the gallery)."""
        self.session.go_to(position)
        self.events.show.emit(False)

    def visit(self, index: int) -> None:
        """Show any pool volume (from the review table or the examples); class keys then relabel it."""
        self.session.visit(index)
        self.events.show.emit(False)

    def _after_change(self, changed_label: bool = False, note: str = "") -> None:
        """After a label change: show the (new) current volume; train, or stop training. ``note``
        goes to the status line, before what training makes of the change."""
        session = self.session
        training = ""
        if self._train_cycle == session.cycle and self.runner.running(TRAIN):
            if session.phase is Phase.LABELING:
                self.runner.cancel(TRAIN)
                training = ("The batch changed while training: training stopped. It restarts "
                            "when every volume of the batch is labeled or skipped.")
            elif changed_label:
                training = "A label changed after training started; it counts from the next cycle."
        if note or training:
            self.events.status.emit(" ".join(part for part in (note, training) if part))
        self.events.show.emit(False)
        self.events.labels_changed.emit()
        self.maybe_start_training()

    # -- classes -------------------------------------------------------------------------------
    def add_class(self, name: str) -> None:
        self.session.add_class(name)
        self._classes_changed()

    def add_junk_class(self) -> None:
        self.session.add_junk_class()
        self._classes_changed()

    def rename_class(self, old: str, new: str) -> None:
        self._refuse_while_training("rename a class")
        self.session.rename_class(old, new)
        self._classes_changed()

    def remove_class(self, name: str) -> None:
        self._refuse_while_training("remove a class")
        self.session.remove_class(name)
        self._classes_changed()

    def _refuse_while_training(self, what: str) -> None:
        if self.runner.running(TRAIN):
            raise KtalError(f"cannot {what} while a cycle trains; cancel it or wait until it is done")

    def _classes_changed(self) -> None:
        self.events.classes_changed.emit()
        self.events.show.emit(False)
        self.events.history_changed.emit()

    # -- recipe --------------------------------------------------------------------------------
    def recipe_choice(self) -> tuple[str, str | None]:
        """What the recipe chooser shows: (a shipped name or the project's recipe.toml, a label or None).

        Raises KtalError for an invalid recipe.toml (after which the chooser shows the file).
        """
        from ..core.recipe import builtin_recipes

        recipe = commands.project_recipe(self.session.project)
        if recipe.name in builtin_recipes() and commands.load_recipe(recipe.name) == recipe:
            return recipe.name, None
        return str(self.session.project.paths.recipe), f"{recipe.name} (this project's recipe.toml)"

    def set_recipe(self, name_or_path: str) -> None:
        """Use another recipe from the next cycle on (written to the project's recipe.toml)."""
        if name_or_path == str(self.session.project.paths.recipe):
            return
        self.session.project.set_recipe(commands.load_recipe(name_or_path))
        self.session.refresh_recipe()
        when = "from the next cycle" if self.runner.running(TRAIN) else "from now on"
        self.events.info.emit(f"Recipe '{Path(name_or_path).stem}' is used {when}")
        self.events.show.emit(False)

    # -- training --------------------------------------------------------------------------------
    @property
    def training(self) -> bool:
        return self.runner.running(TRAIN) is not None

    def maybe_start_training(self) -> None:
        """Start the next cycle if the batch is done and auto-training is on."""
        s = self.session
        if s is None or not self.auto_train or s.phase is not Phase.READY:
            return
        if self.runner.busy(TRAIN):  # a cancelled cycle is still stopping: start when it is gone
            self._start_when_free = True
            return
        blocker = s.training_blocker()
        if blocker:
            self.events.status.emit(f"Batch done. To train: {blocker}.")
            return
        self.start_training()

    def start_training(self):
        """Train one cycle on the current labels in a worker; labeling goes on meanwhile."""
        s = self.session
        if s is None or self.runner.running(TRAIN):
            return None
        blocker = s.training_blocker()
        if blocker:
            raise KtalError(f"cannot train yet: {blocker}")
        if self.runner.busy(TRAIN):
            raise KtalError("the cancelled cycle is still stopping; try again in a moment")
        self._train_cycle = s.cycle
        self.browser.stop_review()  # training has the CPU first; the labels are judged again after it
        cycle = s.project.trained_cycles
        self.events.progress.emit(f"cycle {cycle}: starting", 0, 0)
        self.events.status.emit(f"Training cycle {cycle} with {len(s.labels)} labeled volumes on {self.device_text()}. "
                          "You can keep browsing and relabeling.")
        job = partial(train_job, s.project.root, self.device, self.seed, worker_threads())
        self.events.job_changed.emit(TRAIN, True)
        task = self.runner.start(TRAIN, job, on_progress=self.on_progress, on_result=self._on_trained,
                                 on_error=self._on_train_error, on_cancelled=self._on_train_cancelled,
                                 on_finished=self._on_train_finished)
        self.events.show.emit(False)
        return task

    def cancel_training(self) -> None:
        self._start_when_free = False
        if self.runner.cancel(TRAIN):
            self.events.status.emit("Training cancelled; nothing of that cycle was saved.")

    def on_progress(self, event: Progress) -> None:
        """Show a training's progress: at most every PROGRESS_INTERVAL s, and at each new epoch or message."""
        if not self._throttle.due(event):
            return
        done, total = event.steps
        self.events.progress.emit(describe(event), done, max(total, 1))
        if event.message:  # e.g. out of GPU memory: training restarts with a smaller batch
            self.events.status.emit(event.message)

    def _training_stopped(self) -> None:
        self._train_cycle = None
        self._throttle.reset()
        self.events.progress.emit("idle", 0, 1)
        self.events.job_changed.emit(TRAIN, False)

    def labeling_seconds(self, cycle: int) -> float:
        """How long the expert spent labeling the batch of ``cycle`` (NaN if not by hand)."""
        from ..core.evaluation.summary import labeling_times

        s = self.session
        try:
            batch = {q.index for q in s.project.read_query(cycle)}
        except KtalError:
            return float("nan")
        return labeling_times(s.project, {cycle: batch})[cycle]

    def _on_trained(self, report) -> None:
        self._training_stopped()
        self.events.progress.emit(f"cycle {report.cycle} trained", 1, 1)
        seconds = report.train_seconds + report.select_seconds
        labeling = self.labeling_seconds(report.cycle) if self.session is not None else float("nan")
        took = f"labeling took {clock(labeling)}, training {clock(seconds)}" if not math.isnan(labeling) else \
            f"training took {clock(seconds)}"
        if report.n_queried:
            msg = (f"Cycle {report.cycle} trained on {report.n_labeled} volumes ({took}); "
                   f"next batch: the {report.n_queried} most uncertain volumes.")
        else:
            msg = f"Cycle {report.cycle} trained ({took}); every volume is labeled or queried."
        msg += _trust_text(report)
        # the status line says it (a notification's slide-in animation costs a software-rendered
        # window ~0.3 s of GUI time, just as the new batch wants to be drawn)
        self.events.status.emit(msg)
        if self.session is not None:
            self.session.reload()
            self.events.show.emit(False)  # the new batch's first volume first; the gallery and the plot follow

            def rest() -> None:
                if self.session is not None:
                    self.events.batch_changed.emit()
                    self.browser.batch_changed()
                    self.events.history_changed.emit()

            self._defer(rest)

    def _on_train_error(self, exc: BaseException) -> None:
        self._training_stopped()
        self.events.status.emit(f"Training failed: {exc}")
        self.events.error.emit(exc)
        self.events.show.emit(False)

    def _on_train_cancelled(self) -> None:
        self._training_stopped()
        if self.session is not None:
            self.events.show.emit(False)

    def _on_train_finished(self) -> None:
        if self._start_when_free:
            self._start_when_free = False
            self.maybe_start_training()

    # -- export ------------------------------------------------------------------------------------
    def export_predictions(self, path: str | Path):
        """Write index,key,label,predicted,confidence for every pool volume (in a worker)."""
        if self.session is None:
            return None
        if not self.session.project.checkpoint_cycles():
            raise KtalError("no trained models yet: label the first batch and train a cycle, then export")

        def done(result) -> None:
            self.events.job_changed.emit(EXPORT, False)
            self.events.info.emit(f"Wrote {result.n_volumes} volumes ({result.n_labeled} labeled, predictions of the "
                            f"cycle {result.cycle} teacher) to {result.path}")

        def failed(exc: BaseException) -> None:
            self.events.job_changed.emit(EXPORT, False)
            self.events.error.emit(exc)

        self.events.job_changed.emit(EXPORT, True)
        job = partial(export_job, self.session.project.root, Path(path), self.device)
        return self.runner.start(EXPORT, job, on_result=done, on_error=failed,
                                 on_cancelled=lambda: self.events.job_changed.emit(EXPORT, False))
