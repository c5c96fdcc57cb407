"""The compute core: data, pool, models, losses, strategies, training, project folder.

Nothing in this package imports Qt or napari. Shells call into it and receive
progress through plain callbacks; cancellation reaches it through a flag.
"""
