"""What only the napari plugin may use, and so what the plain ``napari-ktal`` must never bring.

Import names (what ``import`` sees) and distribution names (what pip installs, PEP 503 normalised).
tests/test_layering.py reads the source for the first, tests/test_install.py asks pip for the second.
"""

QT_BINDINGS = {"PyQt5", "PyQt6", "PySide2", "PySide6"}
# napari, its GUI companions, the Qt shim and the bindings: only napari_ktal._napari imports them
GUI_MODULES = {"napari", "magicgui", "superqt", "vispy", "app_model", "npe2", "qtpy", *QT_BINDINGS}

# A Qt binding and the wheels it comes in: no extra but [test] may bring one (napari leaves the
# choice to the user, and so does napari-ktal)
QT_DISTRIBUTIONS = {
    "pyqt5", "pyqt5-qt5", "pyqt5-sip", "pyqt6", "pyqt6-qt6", "pyqt6-sip",
    "pyside2", "shiboken2", "pyside6", "pyside6-essentials", "pyside6-addons", "shiboken6",
}
GUI_DISTRIBUTIONS = {m.lower().replace("_", "-") for m in GUI_MODULES} | QT_DISTRIBUTIONS
