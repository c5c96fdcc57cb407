"""The Qt views of the napari plugin: the dock widget and its panels (no logic of their own:
see :mod:`napari_ktal._napari.controller`)."""
