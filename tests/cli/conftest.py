"""Fixtures of the command-line tests."""

from pathlib import Path

import pytest

TINY_TOML = """
name = "tiny"
[model]
width = 4
stem = "strided"
teacher_depth = 10
[train]
epochs = 1
lr_milestones = []
batch_size = 8
eval_batch_size = 64
"""


@pytest.fixture(scope="session")
def tiny_recipe_file(tmp_path_factory):
    """``tiny_recipe_file(extra="")``: a recipe file (ResNet-10/10 at width 4, one epoch), plus ``extra`` TOML."""

    def write(extra: str = "") -> Path:
        path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
        path.write_text(TINY_TOML + extra)
        return path

    return write
