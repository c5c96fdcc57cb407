"""The simulator: macromolecule-like templates, CTF, missing wedge and noise."""
