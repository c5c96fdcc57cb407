"""Both kinds of install give a plugin napari finds: ``pip install -e .`` and a built wheel.

Each is installed on its own (``--prefix`` / ``--target``, no dependencies: those come from this
environment) and checked in a fresh interpreter where it comes first on the path: the package is
imported from where that install put it, npe2 reads the manifest of that distribution and imports
every command it names, the shipped recipes load, and the sample data is made.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # two pip builds

CHECK = r'''
import importlib.metadata as md
import sys
from pathlib import Path

site_dir, package_root = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
sys.path.insert(0, str(site_dir))
for pth in site_dir.glob("*.pth"):  # what site.py does for a site folder, but first on the path
    for line in pth.read_text().splitlines():
        if line.strip() and not line.startswith(("#", "import")):
            sys.path.insert(0, line.strip())

import napari_ktal
assert Path(napari_ktal.__file__).resolve().is_relative_to(package_root), napari_ktal.__file__
dist = md.distribution("napari-ktal")
assert Path(dist._path).resolve().parent == site_dir, dist._path

from npe2 import PluginManifest
manifest = PluginManifest.from_distribution("napari-ktal")
manifest.validate_imports()  # every python_name the manifest names imports
assert {c.id for c in manifest.contributions.commands} >= {"napari-ktal.get_reader", "napari-ktal.make_al_widget"}

from napari_ktal.core.loop import load_recipe
from napari_ktal.core.recipe import builtin_recipe_dir, builtin_recipes
assert {"quick", "paper-simulated", "paper-real"} <= set(builtin_recipes()), builtin_recipes()
assert builtin_recipe_dir().resolve().is_relative_to(package_root.parent if package_root.name == "napari_ktal"
                                                     else package_root)
load_recipe("quick")
from napari_ktal._napari.sample_data import simulated_subtomograms
(data, kwargs, kind), = simulated_subtomograms()
assert data.shape == (12, 32, 32, 32) and kind == "image"
print("plugin OK from", napari_ktal.__file__)
'''


def _installed() -> str:
    """Where this environment's napari-ktal is installed (the test must leave it alone)."""
    import importlib.metadata as md

    return str(md.distribution("napari-ktal")._path)


@pytest.fixture(autouse=True)
def _environment_untouched():
    before = _installed()
    yield
    assert _installed() == before, "installing elsewhere changed this environment's napari-ktal"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True,
                   capture_output=True, text=True, timeout=600)


def _check(site_dir: Path, package_root: Path) -> str:
    done = subprocess.run([sys.executable, "-s", "-c", CHECK, str(site_dir), str(package_root)],
                          capture_output=True, text=True, timeout=300, cwd=site_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_an_editable_install_gives_a_working_plugin(tmp_path):
    _pip("install", "--no-deps", "--ignore-installed", "-e", str(ROOT), "--prefix", str(tmp_path / "prefix"))
    (site_dir,) = (tmp_path / "prefix").glob("lib/python*/site-packages")
    assert "plugin OK" in _check(site_dir, ROOT / "napari_ktal")


def test_a_wheel_carries_the_manifest_recipes_and_sample_data_and_works(tmp_path):
    _pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT))
    (wheel,) = (tmp_path / "dist").glob("napari_ktal-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert z.read("napari_ktal/napari.yaml") == (ROOT / "napari_ktal" / "napari.yaml").read_bytes()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "napari-ktal = napari_ktal:napari.yaml" in entry_points
    assert {f"napari_ktal/models/{r}.toml" for r in ("quick", "paper-simulated", "paper-real")} <= names
    assert {f"napari_ktal/sample_data/{p.name}" for p in (ROOT / "sample_data").iterdir()} <= names
    _pip("install", "--no-deps", "--ignore-installed", "--target", str(tmp_path / "target"), str(wheel))
    target = tmp_path / "target"
    assert "plugin OK" in _check(target, target / "napari_ktal")
