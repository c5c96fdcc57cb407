"""The Qt views of the napari plugin: the dock widget and its panels (no logic of their own:
see :mod:`napari_ktal._napari.controller`).

Only this package needs napari and a Qt binding. The plain ``napari-ktal`` installs neither (the
``ktal-cryo`` command line and the Python API need none of it): importing a view without them is
one line saying what to install, not a traceback about a module the user never asked for.
"""

try:
    import napari  # noqa: F401
    from qtpy import QtCore  # noqa: F401
except ModuleNotFoundError as error:
    raise ModuleNotFoundError(
        f"napari-ktal's napari plugin needs {error.name}, which the plain package leaves out: "
        f'pip install "napari-ktal[napari]" (ktal-cryo and the Python API work without it)',
        name=error.name) from error
except ImportError as error:  # qtpy.QtBindingsNotFoundError: napari is there, no Qt binding is
    raise ImportError(
        "napari-ktal's napari plugin needs a Qt binding, which napari-ktal leaves to you as napari "
        f'does: pip install "napari[pyqt6]" (or PySide6, PyQt5) ({error})') from error
