"""The window on a laptop screen: at 1280 x 800 every text of the dock (and of the gallery dock
below the canvas) is readable: whole, or elided with the whole text in its tooltip, and inside
the part of the dock that shows. Run under ``xvfb-run -a`` (a real napari window).

The issue: at 1400 x 900 the dock needed 392 px and got 365, "Cancel" read "Canc", and the file
name and status lines were cut.
"""

import pytest
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QGroupBox,
    QLabel,
    QProgressBar,
    QStyle,
    QStyleOptionComboBox,
    QWidget,
)

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

SCREEN = (1280, 800)
LONG_NAMES = ["membrane-bound ribosome (80S) near the ER", "proteasome 26S", "TRiC"]  # and the project's three


def _global_rect(w: QWidget) -> QRect:
    return QRect(w.mapToGlobal(QPoint(0, 0)), w.size())


def _elided_with_tooltip(w: QWidget, full: str) -> bool:
    return bool(getattr(w, "elided", False)) and full in w.toolTip()


def unreadable(root: QWidget, shown: QWidget) -> list[str]:
    """Every visible text under ``root`` that is cut: by its own widget, or by the edge of ``shown`` (the
    part of the dock on screen). Elided texts count as readable when their tooltip holds them whole."""
    area = _global_rect(shown)
    problems = []
    for w in root.findChildren(QWidget):
        if not w.isVisibleTo(root) or w.width() <= 0:
            continue
        rect = _global_rect(w)
        name = f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}" if hasattr(w, "text") else type(w).__name__
        if isinstance(w, (QLabel, QAbstractButton, QComboBox, QProgressBar, QGroupBox)) and (
                rect.left() < area.left() or rect.right() > area.right()):
            problems.append(f"{name}: x {rect.left()}-{rect.right()} outside the dock's {area.left()}-{area.right()}")
            continue
        if isinstance(w, QLabel) and w.text():
            full = w.full_text() if hasattr(w, "full_text") else w.text()
            need = w.minimumSizeHint().width() if w.wordWrap() else w.sizeHint().width()
            if need > w.width() and not _elided_with_tooltip(w, full):
                problems.append(f"{name}: needs {need} px, has {w.width()}")
        elif isinstance(w, QAbstractButton) and w.text():
            if w.sizeHint().width() > w.width() and not _elided_with_tooltip(w, w.text()):
                problems.append(f"{name}: needs {w.sizeHint().width()} px, has {w.width()}")
        elif isinstance(w, QComboBox) and w.currentText():
            option = QStyleOptionComboBox()
            w.initStyleOption(option)
            field = w.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                             QStyle.SubControl.SC_ComboBoxEditField, w)
            icon = w.iconSize().width() + 4 if not w.itemIcon(w.currentIndex()).isNull() else 0
            need = w.fontMetrics().horizontalAdvance(w.currentText()) + icon
            if need > field.width() and w.currentText() not in w.toolTip():
                problems.append(f"{name} {w.currentText()!r}: needs {need} px, has {field.width()}")
        elif isinstance(w, QProgressBar) and w.isTextVisible():
            need = w.fontMetrics().horizontalAdvance(w.text())
            if need > w.contentsRect().width() and not (hasattr(w, "full_text") and w.full_text() in w.toolTip()):
                problems.append(f"progress text {w.text()!r}: needs {need} px, has {w.contentsRect().width()}")
        elif isinstance(w, QGroupBox) and w.title():
            need = w.fontMetrics().horizontalAdvance(w.title())
            if need > w.contentsRect().width():
                problems.append(f"group {w.title()!r}: needs {need} px, has {w.contentsRect().width()}")
    return problems


def laid_out(qtbot, page: QWidget, shown: QWidget) -> None:
    """Wait until ``page`` is shown in ``shown`` (what the dock shows of it) and its layout has settled."""
    from qtpy.QtWidgets import QApplication

    qtbot.waitUntil(lambda: page.isVisible() and shown.width() > 100, timeout=10_000)
    before = None
    while before != (page.geometry(), shown.geometry()):  # each round can post the next layout request
        before = (page.geometry(), shown.geometry())
        QApplication.processEvents()


def test_every_text_of_the_dock_is_readable_at_1280x800(make_widget, qtbot, project):
    from napari_ktal._napari._qt.elided import ElidedButton

    viewer, widget = make_widget()
    window = viewer.window._qt_window
    assert (window.width(), window.height()) == SCREEN
    setup_page = widget.pages.widget(0)
    laid_out(qtbot, widget.setup, setup_page.viewport())
    problems = [f"setup: {p}" for p in unreadable(widget.setup, setup_page.viewport())]

    widget.panel.auto_train.setChecked(False)
    s = widget.open_project(project.root)
    for name in LONG_NAMES:
        widget.add_class(name)
    widget.assign(LONG_NAMES[0])
    widget.controller.events.status.emit("Undone: membrane-bound ribosome (80S) near the ER on 4 volumes "
                                         "(sub_000069.mrc, sub_000070.mrc, sub_000071.mrc, sub_000072.mrc): "
                                         "all 4 are unlabeled again.")
    widget.panel.progress.show_progress("cycle 12: epoch 25/30 · loss 0.412 · ~12 min 20 s left", 25, 30)
    session_page = widget.pages.widget(1)
    laid_out(qtbot, widget.panel, session_page.viewport())
    assert (window.width(), window.height()) == SCREEN  # the docks' minimum sizes fit the screen
    for k in range(widget.panel.tabs.count()):
        widget.panel.tabs.setCurrentIndex(k)
        laid_out(qtbot, widget.panel, session_page.viewport())
        problems += [f"dock, tab {k}: {p}" for p in unreadable(widget.panel, session_page.viewport())]
    browser = widget.browser_panel
    for k in range(browser.count()):
        browser.setCurrentIndex(k)
        laid_out(qtbot, browser.currentWidget(), browser)
        problems += [f"{browser.tabText(k)}: {p}" for p in unreadable(browser, browser)]
    assert not problems, "\n".join(problems)
    # what just happened (an undo, a key with no class, training) shows without scrolling the dock
    session_page.verticalScrollBar().setValue(0)
    shown = _global_rect(session_page.viewport())
    assert shown.contains(_global_rect(widget.panel.status)), "the status line is below the fold"
    # the long class name is elided on its button, whole in the tooltip
    button = widget.panel.class_buttons[s.classes.index(LONG_NAMES[0])]
    assert isinstance(button, ElidedButton) and button.elided and LONG_NAMES[0] in button.toolTip()
