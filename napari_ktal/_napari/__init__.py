"""The napari shell of napari-ktal: reader, sample data and the active-learning dock widget.

Everything here is thin. The work is done by :mod:`napari_ktal.core`, the same code the
``ktal-cryo`` command line drives, and the widget keeps no state of its own beyond the
current view: a project folder is the whole truth, so napari and the CLI can take turns.

Modules, each named for what it holds:

- ``reader``       MRC volumes and volume stacks -> Image layers (npe2 reader)
- ``sample_data``  a small simulated data set (npe2 sample)
- ``session``      the labeling session: batch, position, labels, undo (plain Python, no Qt)
- ``tasks``        the long jobs (import, train a cycle, predict): plain functions run in workers
- ``worker``       runs tasks off the GUI thread, relays progress, cancels, drops stale results
- ``volume_view``  shows one subtomogram in 3D plus three orthogonal central slices
- ``plot``         the per-cycle plot in the dock
- ``fields``       small input widgets (recipe chooser, path field, class list)
- ``setup_panel``  the first page: open a project, or create one
- ``session_panel`` the second page: the volume, class buttons, training, plot, settings
- ``widget``       the dock widget that ties these together
"""
