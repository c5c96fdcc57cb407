"""The napari shell of napari-ktal: reader, sample data and the active-learning dock widget.

Everything here is thin. The work is done by :mod:`napari_ktal.core`, the same code the
``ktal-cryo`` command line drives, and the widget keeps no state of its own beyond the
current view: a project folder is the whole truth, so napari and the CLI can take turns.

- ``reader``           MRC volumes, volume stacks and tomograms -> Image layers (npe2 reader)
- ``sample_data``      a small simulated data set (npe2 sample)
- ``controller``       what the dock does, without Qt: session, background training, messages
- ``browser``          what the gallery, review table and examples show, without Qt (their jobs)
- ``thumbnails``       thumbnails of pool volumes, made in a worker and cached
- ``palette``          one colour per class, for the gallery, the buttons and the plot
- ``volume_view``      one subtomogram: projection + central slices, or 3D + slices (viewer layers)
- ``viewer_bindings``  the keys and the text overlay the dock sets on the viewer
- ``_qt/``             the dock widget, the gallery/review/examples dock and their panels (Qt)
"""
