"""The simulator: macromolecule-like templates under random poses, CTF, missing wedge and noise.

- :mod:`.templates`  procedural densities of K distinct classes, rotation and rendering
- :mod:`.optics`     the contrast transfer function and the missing wedge
- :mod:`.junk`       what pickers return besides particles (ice, membranes, carbon, gold, ...)
- :mod:`.dataset`    one noisy subtomogram, and whole data sets with labels CSVs
- :mod:`.scene`      whole tomograms with particles and junk, and their picks as RELION 5 STAR files
"""

from .dataset import JUNK_KINDS, JUNK_LABEL, SimulationConfig, class_name, simulate_dataset, simulate_volume
from .scene import SceneConfig, simulate_scene, write_scene
from .templates import Template, make_templates

__all__ = ["JUNK_KINDS", "JUNK_LABEL", "SceneConfig", "SimulationConfig", "Template", "class_name",
           "make_templates", "simulate_dataset", "simulate_scene", "simulate_volume", "write_scene"]
