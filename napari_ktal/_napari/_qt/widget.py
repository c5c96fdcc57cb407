"""The "Active learning" dock widget: label the batch the models ask for, train, repeat.

Qt only: the panels and the viewer's layers. What happens on a click or a key is decided by
:class:`~napari_ktal._napari.controller.Controller`, whose signals (``controller.events``) the
panels and layers connect to here and in :class:`~.browser_panel.BrowserPanel`. Everything shown is derived from the project folder, so closing napari and opening
the project again resumes where the user was, and ``ktal-cryo`` can train it in between.

Keys, bound in the viewer while a project is open: 1-9, 0, then letters (shown on the class
buttons) label the volume with that class, N / P next / previous volume, S skip, U undo, C the
particle in its tomogram (context). A second dock below the canvas holds the batch gallery, the
review table and the per-class examples (:mod:`.browser_panel`); their keys do the same.
"""

from __future__ import annotations

import contextlib
import weakref
from functools import partial, wraps
from pathlib import Path
from typing import TYPE_CHECKING

from napari.utils.notifications import notification_manager, show_error, show_info, show_warning
from psygnal import EmitLoopError
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import KtalError
from ...core.loop.session import key_of_class
from ..context_view import ContextView
from ..controller import EXPORT, IMPORT, TRAIN, Controller
from ..viewer_bindings import KEYS, OVERLAY_CHARS, KeyBindings, TextOverlay, overlay_text
from ..volume_view import VolumeView
from .browser_panel import BrowserPanel
from .canvas_keys import CanvasKeys
from .plot import theme_colors
from .session_panel import SessionPanel
from .setup_panel import NewProject, SetupPanel
from .worker import TaskRunner

if TYPE_CHECKING:
    import napari


def _reports_errors(method):
    """Show a KtalError from the core as a napari notification; the widget stays usable.

    Also one raised by a view while it followed the controller's news: psygnal hands that on
    wrapped in an ``EmitLoopError`` (one per signal it passed through).
    """

    @wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except KtalError as exc:
            show_error(str(exc))
        except EmitLoopError as exc:
            cause = exc
            while isinstance(cause, EmitLoopError):
                cause = cause.__cause__
            if not isinstance(cause, KtalError):
                raise
            show_error(str(cause))
        return None

    return wrapper


def _post(fn) -> None:
    """Run ``fn`` after the events already posted (the controller's ``defer``): a new volume is drawn first."""
    QTimer.singleShot(0, fn)


class ActiveLearningWidget(QWidget):
    """Dock widget; ``napari_viewer`` is injected by napari."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = TaskRunner(self)
        self.controller = Controller(self.runner, defer=_post)
        self.view = VolumeView(napari_viewer)
        self.context_view = ContextView(napari_viewer)
        self.keys = KeyBindings()
        self.canvas_keys = CanvasKeys(self.keys, self, unbound_class_key=self.assign_key)
        self.overlay = TextOverlay(napari_viewer)
        self._torn_down = False
        self._watched: weakref.ref | None = None  # the napari window whose closing closes our project

        self.setup = SetupPanel(napari_viewer, self)
        self.panel = SessionPanel(self, theme_colors(napari_viewer))
        self.browser_panel = BrowserPanel(self)
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
        self._fill_devices()
        self._connect()
        self._follow(self.controller.events)
        self._attach()

    @property
    def session(self):
        return self.controller.session

    # -- wiring ----------------------------------------------------------------------------
    def _connect(self) -> None:
        c, p = self.controller, self.panel
        self.setup.openRequested.connect(self.open_project)
        self.setup.createRequested.connect(self._create_from_form)
        for button, action in ((p.previous_button, self.previous), (p.next_button, self.next),
                               (p.skip_button, self.skip), (p.undo_button, self.undo),
                               (p.train_button, self.start_training), (p.cancel_button, c.cancel_training),
                               (p.export_button, self._ask_export), (p.close_button, c.close_project),
                               (p.add_junk_button, self.add_junk_class),
                               (p.browser_button, self.browser_panel.dock)):
            button.clicked.connect(lambda _=False, act=action: act())
        p.assignRequested.connect(self.assign)
        p.addClassRequested.connect(self.add_class)
        p.renameRequested.connect(self.rename_class)
        p.removeRequested.connect(self.remove_class)
        p.recipe.recipeChosen.connect(self.set_recipe)
        p.auto_train.toggled.connect(self._on_auto_train)
        for combo in (p.device, self.setup.device):
            combo.deviceChosen.connect(self.set_device)
        p.smoothing.valueChanged.connect(self._on_display_changed)
        p.invert.toggled.connect(self._on_display_changed)
        p.view_mode.currentIndexChanged.connect(self._on_view_mode)
        p.canvas_text.toggled.connect(lambda _: self.show_current())

    def _follow(self, events) -> None:
        """The controller's news, shown by this widget's panels and layers (the browser panel
        follows its own share: the batch, labels, thumbnails, the teacher, the classes)."""
        p = self.panel
        events.show.connect(self.show_current)
        events.classes_changed.connect(self._on_classes_changed)
        events.history_changed.connect(self._on_history_changed)
        events.opened.connect(self._on_opened)
        events.closed.connect(self._on_closed)
        events.status.connect(p.status.setText, check_nargs=False)  # a Qt builtin: no signature to check
        events.progress.connect(p.progress.show_progress)
        events.info.connect(self._notify)
        events.error.connect(self._report)
        events.job_changed.connect(self._on_job_changed)
        events.teacher_changed.connect(self._on_teacher_changed)

    def _on_classes_changed(self) -> None:
        self.panel.set_classes(self.session.classes)
        self._bind_keys()

    def _on_history_changed(self) -> None:
        from ...core.evaluation.summary import cycle_summary

        s = self.session
        if s is not None:
            self.panel.plot.update_rows(cycle_summary(s.project, s.labels))

    def _on_teacher_changed(self) -> None:
        s = self.session
        if s is not None and s.visiting is not None:
            self.show_current()  # a visited volume's "teacher says"

    def _on_opened(self) -> None:
        p, s = self.panel, self.session
        self.watch_window()
        try:
            name, label = self.controller.recipe_choice()
        except KtalError as exc:
            show_error(f"{exc}; fix it or choose another recipe before training")
            name, label = str(s.project.paths.recipe), "this project's recipe.toml (invalid)"
        p.recipe.set_recipe(name, label=label)
        self.pages.setCurrentIndex(1)
        self.browser_panel.set_session(s)
        self.browser_panel.dock()
        if self.canvas_keys.attach(self.viewer) and p.canvas_text.isChecked():  # draw the overlay's glyphs once, now
            self.overlay.prewarm("".join(sorted(set(OVERLAY_CHARS + "".join(s.classes)
                                                    + "".join(s.project.pool.keys[:50])))))
            self.canvas_keys.draw_now()

    def _on_closed(self) -> None:
        self.keys.unbind()
        self.canvas_keys.detach()
        self.context_view.hide()
        self.view.remove()
        self.overlay.restore()
        self.browser_panel.set_session(None)
        self.browser_panel.undock()
        self.pages.setCurrentIndex(0)

    def _on_job_changed(self, kind: str, running: bool) -> None:
        p = self.panel
        if kind == TRAIN:
            p.train_button.setEnabled(not running)
            p.cancel_button.setEnabled(running)
        elif kind == IMPORT:
            self.setup.create_button.setEnabled(not running)
        elif kind == EXPORT:
            p.export_button.setEnabled(not running)

    @staticmethod
    def _notify(text: str) -> None:
        show_info(text)

    @staticmethod
    def _report(exc: BaseException) -> None:
        """A problem from the controller: a KtalError says what to do; anything else is a bug."""
        if isinstance(exc, KtalError):
            show_error(str(exc))
        elif isinstance(exc, Warning):
            show_warning(str(exc))
        else:  # a bug: keep the traceback reachable from the notification
            notification_manager.receive_error(type(exc), exc, exc.__traceback__)

    def _attach(self) -> None:
        """Follow the viewer (its layer list and theme); undone by :meth:`teardown`."""
        self._torn_down = False
        self.setup.attach()
        self.viewer.events.theme.connect(self._on_theme)

    def _fill_devices(self) -> None:
        """The devices that work here, in both device fields (setup page, Project tab); probed once."""
        from ...core.engine.device import CUDA_BROKEN, cuda_broken

        devices = self.controller.devices()
        for combo in (self.setup.device, self.panel.device):
            combo.set_devices(devices)
            combo.set_device(self.controller.device)
        if cuda_broken(devices):
            show_warning(CUDA_BROKEN)

    # -- actions: buttons, keys and tests come here ------------------------------------------
    @_reports_errors
    def set_device(self, name: str) -> None:
        """Train on ``name`` (auto, cpu, cuda:N) from the next cycle on; both device fields show it."""
        self.controller.device = name
        for combo in (self.setup.device, self.panel.device):
            combo.set_device(self.controller.device)

    @_reports_errors
    def open_project(self, root: str | Path):
        return self.controller.open_project(root)

    def _create_from_form(self, request: NewProject) -> None:
        self.create_project(request.root, source=request.source, layer=request.layer, classes=request.classes,
                            recipe=request.recipe, tomograms=request.tomograms)

    @_reports_errors
    def create_project(self, root, source=None, layer=None, classes=None, recipe="quick", tomograms=None):
        return self.controller.create_project(root, source, layer, classes, recipe, tomograms)

    @_reports_errors
    def toggle_context(self):
        """Show the current particle in its tomogram (a slab, the box outlined), or go back (key C)."""
        return self.context_view.toggle(self.controller.context, hide=self.view.all_layers)

    def close_project(self) -> None:
        self.controller.close_project()

    def _when_open(name):  # noqa: N805 - builds the action methods below
        def action(self, *args):
            if self.controller.session is not None:
                getattr(self.controller, name)(*args)

        action.__name__ = name
        return _reports_errors(action)

    # the controller's actions, each a no-op without a project and reporting a KtalError as a notification
    (assign, assign_key, assign_key_to, assign_to, relabel, unlabel, unlabel_many, skip, undo, next, previous,
     go_to, visit, add_class, add_junk_class, rename_class, remove_class, set_recipe) = map(_when_open, (
        "assign", "assign_key", "assign_key_to", "assign_to", "relabel", "unlabel", "unlabel_many", "skip", "undo",
        "next", "previous", "go_to", "visit", "add_class", "add_junk_class", "rename_class", "remove_class",
        "set_recipe"))
    del _when_open

    @_reports_errors
    def start_training(self):
        return self.controller.start_training()

    def cancel_training(self) -> None:
        self.controller.cancel_training()

    @_reports_errors
    def export_predictions(self, path: str | Path):
        return self.controller.export_predictions(path)

    def _ask_export(self) -> None:
        if self.session is not None:
            default = str(self.session.project.paths.predictions)
            path, _ = QFileDialog.getSaveFileName(self, "Export labels and predictions", default, "CSV (*.csv)")
            if path:
                self.export_predictions(path)

    def _on_auto_train(self, on: bool) -> None:
        self.controller.auto_train = on
        if on:
            self.controller.maybe_start_training()

    # -- showing -----------------------------------------------------------------------------
    def show_current(self, reset_camera: bool = False) -> None:
        s = self.session
        if s is None:
            return
        guess = self.controller.browser.guess
        self.panel.show_state(s, self.controller.training, guess)
        self.browser_panel.show_state()
        index = s.current_index
        if index is None:
            return
        pool = s.project.pool
        self.context_view.hide()  # another volume, or a label given: back to the volume
        if self.view.show(pool.read([index])[0], pool.voxel_size):
            self._bind_keys()  # the layers are new (first show, or the user deleted them)
        if reset_camera:
            self.view.fit()
        if self.panel.canvas_text.isChecked():  # off by default: text costs a software-rendered frame ~100 ms
            self.overlay.show(overlay_text(s, guess))
        else:
            self.overlay.restore()
        if self.view.layers and self.viewer.layers.selection.active not in self.view.all_layers:
            self.viewer.layers.selection.active = self.view.layers[0]  # our keys win over another layer's

    def _on_display_changed(self, *args) -> None:
        self.view.smoothing = self.panel.smoothing.value()
        self.view.invert = self.panel.invert.isChecked()
        self.view.refresh()
        self.controller.browser.set_settings(smoothing=self.view.smoothing, invert=self.view.invert)

    def _on_view_mode(self, *args) -> None:
        self.view.set_mode(self.panel.view_mode.currentData())
        self._bind_keys()  # the layers are new

    def _on_theme(self, event=None) -> None:
        self.panel.plot.set_theme(theme_colors(self.viewer))

    def _bind_keys(self) -> None:
        actions = {KEYS["next"]: self.next, KEYS["previous"]: self.previous, KEYS["skip"]: self.skip,
                   KEYS["undo"]: self.undo, KEYS["context"]: self.toggle_context}
        for k in range(len(self.session.classes) if self.session else 0):
            key = key_of_class(k)
            if key is not None:
                actions[key] = partial(self.assign_key, key)
        self.keys.bind([self.viewer, *self.view.all_layers], actions)

    # -- shutting down ---------------------------------------------------------------------------
    def teardown(self) -> None:
        """Stop workers (and wait), unbind keys, remove our layers. Safe to call twice.

        Also safe after napari closed its window and Qt deleted our child widgets: the
        Python-side cleanup comes first and Qt calls on deleted widgets are skipped.
        """
        if self._torn_down:
            return
        self._torn_down = True
        self.runner.shutdown()
        self.keys.unbind()
        self.context_view.hide()
        self.canvas_keys.detach()
        self.view.remove()
        self.overlay.restore()
        self.controller.release_project()
        with contextlib.suppress(RuntimeError):
            self.browser_panel.undock()
        with contextlib.suppress(RuntimeError):  # "wrapped C/C++ object ... has been deleted"
            self.setup.detach()
            self.viewer.events.theme.disconnect(self._on_theme)
            self.pages.setCurrentIndex(0)

    def event(self, event) -> bool:
        # napari takes the widget out of its dock (parent None) when the dock is closed
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None:
                self.teardown()
            elif self._torn_down:  # docked again
                self._attach()
        return super().event(event)

    def watch_window(self) -> None:
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
                self.teardown()
            elif event.type() == QEvent.Type.Show and self._torn_down and self.parent() is not None:
                self._attach()  # the window is shown again
        return False

    def closeEvent(self, event) -> None:
        self.teardown()
        super().closeEvent(event)

