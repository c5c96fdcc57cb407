"""The "Active learning" dock widget: label the batch the models ask for, train, repeat.

A thin Qt layer over :class:`~napari_ktal.core.loop.session.LabelingSession` (what to show,
what is labeled, undo) and :mod:`~napari_ktal._napari.tasks` (import, training, prediction,
run by :class:`~napari_ktal._napari.worker.TaskRunner` off the GUI thread). Everything the
widget shows is derived from the project folder, so closing napari and opening the project
again resumes where the user was, and ``ktal-cryo`` can train the same project in between.

Keys, bound in the viewer while a project is open: 1-9 label the volume with that class,
N / P next / previous volume, S skip, U undo.
"""

from __future__ import annotations

import contextlib
import math
import sys
import weakref
from functools import partial, wraps
from pathlib import Path
from typing import TYPE_CHECKING

from napari.utils.notifications import notification_manager, show_error, show_info, show_warning
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import KtalError
from ..core.loop.session import MAX_KEYED_CLASSES, LabelingSession, Phase
from ..core.progress import Progress
from . import tasks
from .session_panel import KEYS, SessionPanel
from .setup_panel import NewProject, SetupPanel
from .volume_view import VolumeView
from .worker import TaskRunner

if TYPE_CHECKING:
    import napari

SEED = 0  # the seed `ktal-cryo train` uses by default: GUI and CLI draw the same batches
LOCK_PURPOSE = "napari (napari-ktal widget)"  # what a refused `ktal-cryo train` is told holds the project
TRAIN, IMPORT, EXPORT, WARM_UP = "train", "import", "export", "warm-up"


def _reports_errors(method):
    """Show a KtalError from the core as a napari notification; the widget stays usable."""

    @wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except KtalError as exc:
            show_error(str(exc))
            return None

    return wrapper


class ActiveLearningWidget(QWidget):
    """Dock widget; ``napari_viewer`` is injected by napari."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session: LabelingSession | None = None
        self.runner = TaskRunner(self)
        self.view = VolumeView(napari_viewer)
        self._bound_keys: list[tuple[object, str, object]] = []  # (keymap owner, key, previous binding)
        self._train_cycle: int | None = None  # the batch's cycle the running training was started for
        self._last_metrics: dict[str, float] = {}
        self._start_when_free = False  # the batch got done while a cancelled cycle was stopping
        self._overlay_state: tuple[bool, str, float] | None = None  # the text overlay before us
        self._torn_down = False
        self._watched: weakref.ref | None = None  # the napari window whose closing closes our project

        self.setup = SetupPanel(napari_viewer, self)
        self.panel = SessionPanel(self, _theme_colors(napari_viewer))
        self.pages = QStackedWidget(self)
        for page in (self.setup, self.panel):
            scroll = QScrollArea(self.pages)
            scroll.setWidgetResizable(True)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # fit the dock's width
            scroll.setWidget(page)
            self.pages.addWidget(scroll)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.pages)
        self.setMinimumWidth(340)
        # fill the dock's height (napari adds a stretch below widgets that do not ask for it)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self._connect()
        self._attach()

    # -- wiring --------------------------------------------------------------------------
    def _connect(self) -> None:
        self.setup.openRequested.connect(self.open_project)
        self.setup.createRequested.connect(self._create_from_form)
        p = self.panel
        p.previous_button.clicked.connect(self.previous)
        p.next_button.clicked.connect(self.next)
        p.skip_button.clicked.connect(self.skip)
        p.undo_button.clicked.connect(self.undo)
        p.assignRequested.connect(self.assign)
        p.addClassRequested.connect(self.add_class)
        p.add_junk_button.clicked.connect(self.add_junk_class)
        p.renameRequested.connect(self.rename_class)
        p.removeRequested.connect(self.remove_class)
        p.train_button.clicked.connect(self.start_training)
        p.cancel_button.clicked.connect(self.cancel_training)
        p.recipe.recipeChosen.connect(self.set_recipe)
        p.auto_train.toggled.connect(lambda on: on and self._maybe_start_training())
        p.export_button.clicked.connect(self._ask_export)
        p.close_button.clicked.connect(self.close_project)
        p.smoothing.valueChanged.connect(self._on_display_changed)
        p.invert.toggled.connect(self._on_display_changed)

    def _attach(self) -> None:
        """Follow the viewer (its layer list and theme); undone by :meth:`_teardown`."""
        self._torn_down = False
        self.setup.attach()
        self.viewer.events.theme.connect(self._on_theme)

    # -- opening and creating projects ---------------------------------------------------
    @_reports_errors
    def open_project(self, root: str | Path) -> LabelingSession:
        """Open a project folder and go to the first volume of its latest batch that needs a label."""
        from ..core.engine.device import CUDA_BROKEN, available_devices, cuda_broken
        from ..core.project.project import Project

        project = Project(root)  # a wrong folder leaves the open project open
        if self.session is not None and self.session.project.root == project.root:
            self.close_project()  # opened again: let go of our own lock first
        # held for as long as the project is open here: a CLI run or another window is refused
        project.acquire_lock(LOCK_PURPOSE)
        try:
            session = LabelingSession(project, seed=SEED)
        except BaseException:
            project.release_lock()
            raise
        if self.session is not None:
            self.close_project()
        self.session = session
        self._watch_window()
        p = self.panel
        device = p.device.currentText()
        p.device.clear()
        devices = available_devices()
        p.device.addItems(devices)
        if cuda_broken(devices):
            show_warning(CUDA_BROKEN)
        p.device.setCurrentIndex(max(0, p.device.findText(device)))
        self._show_project_recipe()
        p.set_classes(self.session.classes)
        self._training_stopped()
        p.status.setText("")
        self.pages.setCurrentIndex(1)
        self._show_current(reset_camera=True)
        self._bind_keys()
        self._refresh_plot()
        if "torch._dynamo" not in sys.modules:
            self.runner.start(WARM_UP, tasks.warm_up, on_error=self._report)
        self._maybe_start_training()
        return self.session

    def _create_from_form(self, request: NewProject) -> None:
        if request.layer is not None:
            self.create_project(request.root, layer=request.layer, classes=request.classes, recipe=request.recipe)
        else:
            self.create_project(request.root, source=request.source, classes=request.classes,
                                recipe=request.recipe)

    @_reports_errors
    def create_project(self, root: str | Path, source: str | Path | None = None, layer=None,
                       classes: list[str] | None = None, recipe: str = "quick"):
        """Import subtomograms (a path, or an Image layer) into a new project, then open it."""
        if not str(root).strip():
            raise KtalError("choose a folder for the new project")
        classes = list(classes or [])
        if layer is not None:
            voxel = float(layer.scale[-1]) if layer.scale[-1] > 0 else 1.0
            job = partial(tasks.create_project_from_array, root, layer.data, voxel, layer.name, recipe, classes)
        elif source:
            job = partial(tasks.create_project, root, source, recipe, classes)
        else:
            raise KtalError("choose the subtomograms: a folder, an MRC stack or CSV, or an Image layer")

        def done(project_root: Path) -> None:
            self.setup.create_button.setEnabled(True)
            if layer is not None and layer in self.viewer.layers:
                layer.visible = False  # its volumes are in the project now; keep the canvas for the view
            show_info(f"Created project {project_root}")
            self.open_project(project_root)

        def failed(exc: BaseException) -> None:
            self.setup.create_button.setEnabled(True)
            self._report(exc)

        self.setup.create_button.setEnabled(False)
        return self.runner.start(IMPORT, job, on_result=done, on_error=failed,
                                 on_cancelled=lambda: self.setup.create_button.setEnabled(True))

    def close_project(self) -> None:
        """Stop any job, forget the session and the view, and show the setup page again."""
        self.runner.shutdown()
        self._unbind_keys()
        self.view.remove()
        self._restore_overlay()
        self._release_project()
        self._train_cycle = None
        self.pages.setCurrentIndex(0)

    def _release_project(self) -> None:
        """Forget the session and let go of the project's lock (after the jobs stopped)."""
        if self.session is not None:
            self.session.project.release_lock()
        self.session = None

    # -- labeling (buttons, keys and tests all come here) ----------------------------------
    @_reports_errors
    def assign(self, label: str) -> None:
        if self.session is None:
            return
        item = self.session.item
        before = None if item is None else self.session.label_of(item.index)
        self.session.assign(label)
        self._after_change(changed_label=before is not None and before != label)

    @_reports_errors
    def assign_number(self, number: int) -> None:
        if self.session is not None and number <= len(self.session.classes):
            self.assign(self.session.classes[number - 1])

    @_reports_errors
    def skip(self) -> None:
        if self.session is not None:
            self.session.skip()
            self._after_change()

    @_reports_errors
    def undo(self) -> None:
        if self.session is not None and self.session.undo() is not None:
            self._after_change(changed_label=True)

    def next(self) -> None:
        if self.session is not None:
            self.session.next()
            self._show_current()

    def previous(self) -> None:
        if self.session is not None:
            self.session.previous()
            self._show_current()

    def _after_change(self, changed_label: bool = False) -> None:
        """After a label change: show the (new) current volume; train or stop training."""
        session = self.session
        if self._train_cycle == session.cycle and self.runner.running(TRAIN):
            if session.phase is Phase.LABELING:
                self.runner.cancel(TRAIN)
                self.panel.status.setText("The batch changed while training: training stopped. It restarts "
                                          "when every volume of the batch is labeled or skipped.")
            elif changed_label:
                self.panel.status.setText("A label changed after training started; it counts from the next cycle.")
        self._show_current()
        self._maybe_start_training()

    # -- classes ---------------------------------------------------------------------------
    @_reports_errors
    def add_class(self, name: str) -> None:
        self.session.add_class(name)
        self._classes_changed()

    @_reports_errors
    def add_junk_class(self) -> None:
        self.session.add_junk_class()
        self._classes_changed()

    @_reports_errors
    def rename_class(self, old: str, new: str) -> None:
        self._refuse_while_training("rename a class")
        self.session.rename_class(old, new)
        self._classes_changed()

    @_reports_errors
    def remove_class(self, name: str) -> None:
        self._refuse_while_training("remove a class")
        self.session.remove_class(name)
        self._classes_changed()

    def _refuse_while_training(self, what: str) -> None:
        if self.runner.running(TRAIN):
            raise KtalError(f"cannot {what} while a cycle trains; cancel it or wait until it is done")

    def _classes_changed(self) -> None:
        self.panel.set_classes(self.session.classes)
        self._bind_keys()
        self._show_current()
        self._refresh_plot()

    # -- recipe ----------------------------------------------------------------------------
    def _show_project_recipe(self) -> None:
        """Select the project's recipe: by name if it is a shipped one unchanged, else its file."""
        from ..core.recipe import builtin_recipes, load_recipe

        own = str(self.session.project.root / "recipe.toml")
        try:
            recipe = self.session.project.recipe()
        except KtalError as exc:
            show_error(f"{exc}; fix it or choose another recipe before training")
            self.panel.recipe.set_recipe(own, label="this project's recipe.toml (invalid)")
            return
        shipped = recipe.name in builtin_recipes() and load_recipe(recipe.name) == recipe
        if shipped:
            self.panel.recipe.set_recipe(recipe.name)
        else:
            self.panel.recipe.set_recipe(own, label=f"{recipe.name} (this project's recipe.toml)")

    @_reports_errors
    def set_recipe(self, name_or_path: str) -> None:
        """Use another recipe from the next cycle on (written to the project's recipe.toml)."""
        from ..core.recipe import load_recipe

        if self.session is None:
            return
        project_recipe = str(self.session.project.root / "recipe.toml")
        if name_or_path == project_recipe:
            return
        self.session.project.set_recipe(load_recipe(name_or_path))
        self.session.refresh_recipe()
        when = "from the next cycle" if self.runner.running(TRAIN) else "from now on"
        show_info(f"Recipe '{Path(name_or_path).stem}' is used {when}")
        self._show_current()

    # -- training --------------------------------------------------------------------------
    def _maybe_start_training(self) -> None:
        """Start the next cycle if the batch is done and "start automatically" is on."""
        s = self.session
        if s is None or not self.panel.auto_train.isChecked() or s.phase is not Phase.READY:
            return
        if self.runner.busy(TRAIN):  # a cancelled cycle is still stopping: start when it is gone
            self._start_when_free = True
            return
        blocker = s.training_blocker()
        if blocker:
            self.panel.status.setText(f"Batch done. To train: {blocker}.")
            return
        self.start_training()

    @_reports_errors
    def start_training(self):
        """Train one cycle on the current labels in a worker; the viewer stays usable."""
        s = self.session
        if s is None or self.runner.running(TRAIN):
            return None
        blocker = s.training_blocker()
        if blocker:
            raise KtalError(f"cannot train yet: {blocker}")
        if self.runner.busy(TRAIN):
            raise KtalError("the cancelled cycle is still stopping; try again in a moment")
        device = self.panel.device.currentText() or "auto"
        self._train_cycle = s.cycle
        self._last_metrics = {}
        p = self.panel
        p.progress.setRange(0, 0)  # busy until the first batch reports
        p.progress.setFormat(f"cycle {s.project.trained_cycles}: starting")
        p.status.setText(f"Training cycle {s.project.trained_cycles} on {len(s.labels)} labeled volumes ({device}). "
                         "You can keep browsing and relabeling.")
        job = partial(tasks.train_cycle, s.project.root, device, SEED, tasks.worker_threads())
        task = self.runner.start(TRAIN, job, on_progress=self._on_progress, on_result=self._on_trained,
                                 on_error=self._on_train_error, on_cancelled=self._on_train_cancelled,
                                 on_finished=self._on_train_finished)
        self._show_current()
        return task

    def _on_train_finished(self) -> None:
        if self._start_when_free:
            self._start_when_free = False
            self._maybe_start_training()

    def cancel_training(self) -> None:
        self._start_when_free = False
        if self.runner.cancel(TRAIN):
            self.panel.status.setText("Training cancelled; nothing of that cycle was saved.")

    def _on_progress(self, event: Progress) -> None:
        bar = self.panel.progress
        if event.metrics:
            self._last_metrics = event.metrics
        if event.phase == "train" and event.epochs:
            total = event.total * event.epochs
            bar.setRange(0, total)
            bar.setValue((event.epoch - 1) * event.total + event.done)
            loss = self._last_metrics.get("teacher_loss")
            text = f"cycle {event.cycle}: epoch {event.epoch}/{event.epochs}"
            bar.setFormat(text + (f" · loss {loss:.3f}" if loss is not None else ""))
        else:
            what = {"score": "scoring unlabeled volumes", "predict": "predicting", "import": "importing"}
            bar.setRange(0, max(event.total, 1))
            bar.setValue(event.done)
            bar.setFormat(f"{what.get(event.phase, event.phase)}: {event.done}/{event.total}")

    def _training_stopped(self) -> None:
        self._train_cycle = None
        p = self.panel
        p.progress.setRange(0, 1)
        p.progress.setValue(0)
        p.progress.setFormat("idle")

    def _on_trained(self, report) -> None:
        self._training_stopped()
        self.panel.progress.setRange(0, 1)
        self.panel.progress.setValue(1)
        self.panel.progress.setFormat(f"cycle {report.cycle} trained")
        seconds = report.train_seconds + report.select_seconds
        if report.n_queried:
            msg = (f"Cycle {report.cycle} trained on {report.n_labeled} volumes in {seconds:.0f} s; "
                   f"next batch: the {report.n_queried} most uncertain volumes.")
        else:
            msg = f"Cycle {report.cycle} trained in {seconds:.0f} s; every volume is labeled or queried."
        self.panel.status.setText(msg)
        show_info(msg)
        if self.session is not None:
            self.session.reload()
            self._show_current()
            self._refresh_plot()

    def _on_train_error(self, exc: BaseException) -> None:
        self._training_stopped()
        self.panel.status.setText(f"Training failed: {exc}")
        self._report(exc)
        self._show_current()

    def _on_train_cancelled(self) -> None:
        self._training_stopped()
        if self.session is not None:
            self._show_current()

    # -- export ------------------------------------------------------------------------------
    def _ask_export(self) -> None:
        if self.session is None:
            return
        default = str(self.session.project.root / "predictions.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export labels and predictions", default, "CSV (*.csv)")
        if path:
            self.export_predictions(path)

    @_reports_errors
    def export_predictions(self, path: str | Path):
        """Write index,key,label,predicted,confidence for every pool volume (in a worker)."""
        if self.session is None:
            return None
        if not self.session.project.checkpoint_cycles():
            raise KtalError("no trained models yet: label the first batch and train a cycle, then export")
        device = self.panel.device.currentText() or "auto"

        def done(result: tasks.ExportResult) -> None:
            self.panel.export_button.setEnabled(True)
            show_info(f"Wrote {result.n_volumes} volumes ({result.n_labeled} labeled, predictions of the "
                      f"cycle {result.cycle} teacher) to {result.path}")

        def failed(exc: BaseException) -> None:
            self.panel.export_button.setEnabled(True)
            self._report(exc)

        self.panel.export_button.setEnabled(False)
        return self.runner.start(EXPORT, partial(tasks.export_predictions, self.session.project.root, path, device),
                                 on_result=done, on_error=failed,
                                 on_cancelled=lambda: self.panel.export_button.setEnabled(True))

    # -- showing -----------------------------------------------------------------------------
    def _show_current(self, reset_camera: bool = False) -> None:
        s = self.session
        if s is None:
            return
        training = self.runner.running(TRAIN) is not None
        self.panel.show_state(s, training)
        item = s.item
        if item is None:
            return
        pool = s.project.pool
        if self.view.show(pool.read([item.index])[0], pool.voxel_size):
            self._bind_keys()  # the layers are new (first show, or the user deleted them)
        if reset_camera:
            self.view.fit()
        label = s.label_of(item.index) or ("skipped" if s.is_skipped(item.index) else "—")
        teacher = f"teacher: {item.predicted} {100 * item.confidence:.0f}%" if item.predicted else "random pick"
        score = "" if math.isnan(item.score) else f" · uncertainty {item.score:.3g}"
        self._set_overlay(f"cycle {s.cycle} · {s.position + 1} / {len(s)} · {item.key}\n"
                          f"{teacher}{score} · label: {label}")
        if self.view.layers and self.viewer.layers.selection.active not in self.view.all_layers:
            self.viewer.layers.selection.active = self.view.layers[0]  # our keys win over another layer's

    def _refresh_plot(self) -> None:
        if self.session is not None:
            from .plot import cycle_summary

            self.panel.plot.update_rows(cycle_summary(self.session.project, self.session.labels))

    def _on_display_changed(self, *args) -> None:
        self.view.smoothing = self.panel.smoothing.value()
        self.view.invert = self.panel.invert.isChecked()
        self.view.refresh()

    def _on_theme(self, event=None) -> None:
        self.panel.plot.set_theme(_theme_colors(self.viewer))

    def _set_overlay(self, text: str) -> None:
        overlay = _text_overlay(self.viewer)
        if self._overlay_state is None:
            self._overlay_state = (overlay.visible, overlay.text, overlay.font_size)
        overlay.text = text
        overlay.font_size = 9
        overlay.visible = True

    def _restore_overlay(self) -> None:
        if self._overlay_state is not None:
            overlay = _text_overlay(self.viewer)
            overlay.visible, overlay.text, overlay.font_size = self._overlay_state
            self._overlay_state = None

    @staticmethod
    def _report(exc: BaseException) -> None:
        if isinstance(exc, KtalError):
            show_error(str(exc))
        elif isinstance(exc, Warning):
            show_warning(str(exc))
        else:  # a bug: keep the traceback reachable from the notification
            notification_manager.receive_error(type(exc), exc, exc.__traceback__)

    # -- keys ----------------------------------------------------------------------------------
    def _key_actions(self) -> dict[str, object]:
        actions = {KEYS["next"]: self.next, KEYS["previous"]: self.previous,
                   KEYS["skip"]: self.skip, KEYS["undo"]: self.undo}
        n = min(len(self.session.classes), MAX_KEYED_CLASSES) if self.session else 0
        for k in range(1, n + 1):
            actions[str(k)] = partial(self.assign_number, k)
        return actions

    def _bind_keys(self) -> None:
        """Bind the keys in the viewer and on our layers (a layer's keys win over the viewer's)."""
        self._unbind_keys()
        owners = [self.viewer, *self.view.all_layers]
        for key, action in self._key_actions().items():
            handler = _key_handler(action, key)
            for owner in owners:
                previous = owner.bind_key(key, handler, overwrite=True)
                self._bound_keys.append((owner, key, previous))

    def _unbind_keys(self) -> None:
        for owner, key, previous in reversed(self._bound_keys):
            owner.bind_key(key, previous, overwrite=True)  # None unbinds; else restores
        self._bound_keys = []

    # -- shutting down ---------------------------------------------------------------------------
    def _teardown(self) -> None:
        """Stop workers (and wait), unbind keys, remove our layers. Safe to call twice.

        Also safe after napari closed its window and Qt deleted our child widgets: the
        Python-side cleanup comes first and Qt calls on deleted widgets are skipped.
        """
        if self._torn_down:
            return
        self._torn_down = True
        self.runner.shutdown()
        self._unbind_keys()
        self.view.remove()
        self._restore_overlay()
        self._release_project()
        with contextlib.suppress(RuntimeError):  # "wrapped C/C++ object ... has been deleted"
            self.setup.detach()
            self.viewer.events.theme.disconnect(self._on_theme)
            self.pages.setCurrentIndex(0)

    def event(self, event) -> bool:
        # napari takes the widget out of its dock (parent None) when the dock is closed
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None:
                self._teardown()
            elif self._torn_down:  # docked again
                self._attach()
        return super().event(event)

    def _watch_window(self) -> None:
        """Follow the napari window we are docked in: its closing closes the project (see eventFilter)."""
        window = self.window()
        watched = self._watched() if self._watched is not None else None
        if window is self or window is watched:
            return
        if watched is not None:
            with contextlib.suppress(RuntimeError):  # the old window is gone already
                watched.removeEventFilter(self)
        window.installEventFilter(self)
        self._watched = weakref.ref(window)  # a weak reference: we must not keep a closed viewer alive

    def eventFilter(self, obj, event) -> bool:
        # The napari window closes: a docked widget gets no closeEvent, and Qt deletes it only
        # later (or never, while Python holds it), so stop the jobs and let go of the project's
        # lock now. A minimised window (a spontaneous hide) keeps its project.
        if self._watched is not None and obj is self._watched():
            if event.type() == QEvent.Type.Hide and not event.spontaneous():
                self._teardown()
            elif event.type() == QEvent.Type.Show and self._torn_down and self.parent() is not None:
                self._attach()  # the window is shown again
        return False

    def closeEvent(self, event) -> None:
        self._teardown()
        super().closeEvent(event)


def _key_handler(action, key: str):
    """A key binding for napari: called with the keymap's owner (viewer or layer), which it ignores."""

    def handler(owner=None) -> None:
        action()

    handler.__name__ = handler.__qualname__ = f"napari_ktal_key_{key}"  # napari's keymap reads names
    return handler


def _text_overlay(viewer):
    """The canvas text overlay (``viewer.canvas.overlays.text`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays.text if overlays is not None and hasattr(overlays, "text") else viewer.text_overlay


def _theme_colors(viewer) -> dict:
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return {"background": theme.background.as_hex(), "text": theme.text.as_hex(),
                "grid": theme.primary.as_hex()}
    except (KeyError, AttributeError, ValueError):  # an unknown theme: the plot keeps its defaults
        return {"background": "#262930", "text": "#f0f1f2", "grid": "#5a626c"}
