"""The controller's hooks, filled in by the dock widget's panels and layers (the only place the
controller's news turns into Qt calls)."""

from __future__ import annotations

from napari.utils.notifications import notification_manager, show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from ...core.errors import KtalError
from ..controller import EXPORT, IMPORT, TRAIN, Hooks
from ..viewer_bindings import OVERLAY_CHARS


class WidgetHooks(Hooks):
    """The controller's hooks, filled in by the widget's panels and layers."""

    def __init__(self, widget):
        """``widget``: the :class:`~.widget.ActiveLearningWidget` these hooks update."""
        self.w = widget

    def show(self, reset_camera: bool = False) -> None:
        self.w.show_current(reset_camera)

    def classes_changed(self) -> None:
        self.w.panel.set_classes(self.w.session.classes)
        self.w.browser_panel.classes_changed()
        self.w._bind_keys()

    def batch_changed(self) -> None:
        self.w.browser_panel.batch_changed()

    def labels_changed(self) -> None:
        self.w.browser_panel.labels_changed()

    def thumbnails_ready(self, indices: list[int]) -> None:
        self.w.browser_panel.thumbnails_ready(indices)

    def defer(self, fn) -> None:
        QTimer.singleShot(0, fn)  # after the paint events already posted: the new volume is drawn first

    def teacher_changed(self) -> None:
        self.w.browser_panel.teacher_changed()
        s = self.w.session
        if s is not None and s.visiting is not None:
            self.w.show_current()  # a visited volume's "teacher says"

    def history_changed(self) -> None:
        from ...core.loop.summary import cycle_summary

        s = self.w.session
        if s is not None:
            self.w.panel.plot.update_rows(cycle_summary(s.project, s.labels))

    def opened(self) -> None:
        w, p = self.w, self.w.panel
        w.watch_window()
        try:
            name, label = w.controller.recipe_choice()
        except KtalError as exc:
            show_error(f"{exc}; fix it or choose another recipe before training")
            name, label = str(w.session.project.paths.recipe), "this project's recipe.toml (invalid)"
        p.recipe.set_recipe(name, label=label)
        w.pages.setCurrentIndex(1)
        w.browser_panel.set_session(w.session)
        w.browser_panel.dock()
        if w.canvas_keys.attach(w.viewer) and p.canvas_text.isChecked():  # draw the overlay's glyphs once, now
            s = w.session
            w.overlay.prewarm("".join(sorted(set(OVERLAY_CHARS + "".join(s.classes) + "".join(s.project.pool.keys[:50])))))
            w.canvas_keys.draw_now()

    def closed(self) -> None:
        self.w.keys.unbind()
        self.w.canvas_keys.detach()
        self.w.context_view.hide()
        self.w.view.remove()
        self.w.overlay.restore()
        self.w.browser_panel.set_session(None)
        self.w.browser_panel.undock()
        self.w.pages.setCurrentIndex(0)

    def status(self, text: str) -> None:
        self.w.panel.status.setText(text)

    def progress(self, text: str, done: int, total: int) -> None:
        self.w.panel.progress.show_progress(text, done, total)

    def info(self, text: str) -> None:
        show_info(text)

    def error(self, exc: BaseException) -> None:
        if isinstance(exc, KtalError):
            show_error(str(exc))
        elif isinstance(exc, Warning):
            show_warning(str(exc))
        else:  # a bug: keep the traceback reachable from the notification
            notification_manager.receive_error(type(exc), exc, exc.__traceback__)

    def job_changed(self, kind: str, running: bool) -> None:
        p = self.w.panel
        if kind == TRAIN:
            p.train_button.setEnabled(not running)
            p.cancel_button.setEnabled(running)
        elif kind == IMPORT:
            self.w.setup.create_button.setEnabled(not running)
        elif kind == EXPORT:
            p.export_button.setEnabled(not running)
