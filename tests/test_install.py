"""How napari-ktal installs, and what each install gives.

- The plain package brings neither napari nor Qt (napari's plugin guide: the plugin manager installs
  it into napari's environment, where napari is; on a GPU node napari is dead weight), and the
  ``[napari]`` extra brings napari still without a Qt binding: pip's own resolution says so
  (``--dry-run --report``).
- Without napari, ``import napari_ktal``, its API and ``ktal-cryo`` run, from simulating to training
  (the README's main job), and importing the plugin's views says in one line what to install: in this
  environment with napari and Qt made unimportable (fast), and in a fresh virtual environment where
  pip installed the plain package and nothing else (slow).
- Both kinds of install give a plugin napari finds: ``pip install -e .`` and a built wheel. Each is
  installed on its own (``--prefix`` / ``--target``, no dependencies: those come from this
  environment) and checked in a fresh interpreter where it comes first on the path: the package is
  imported from where that install put it, npe2 reads the manifest of that distribution and imports
  every command it names, the shipped recipes load, and the sample data is made.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from gui_packages import GUI_DISTRIBUTIONS, GUI_MODULES, QT_BINDINGS, QT_DISTRIBUTIONS
from packaging.requirements import Requirement

from napari_ktal.core.loop import load_recipe

ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = 'pip install "napari-ktal[napari]"'

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
    return str(md.distribution("napari-ktal")._path)


@pytest.fixture(autouse=True)
def _environment_untouched():
    before = _installed()
    yield
    assert _installed() == before, "installing elsewhere changed this environment's napari-ktal"


def _pip(*args: str, python: str | Path = sys.executable) -> None:
    done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stderr[-3000:]}"


def _check(site_dir: Path, package_root: Path) -> str:
    done = subprocess.run([sys.executable, "-s", "-c", CHECK, str(site_dir), str(package_root)],
                          capture_output=True, text=True, timeout=300, cwd=site_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_an_editable_install_gives_a_working_plugin(tmp_path):
    _pip("install", "--no-deps", "--ignore-installed", "-e", str(ROOT), "--prefix", str(tmp_path / "prefix"))
    (site_dir,) = (tmp_path / "prefix").glob("lib/python*/site-packages")
    assert "plugin OK" in _check(site_dir, ROOT / "napari_ktal")


@pytest.mark.slow
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


# -- what pip resolves ----------------------------------------------------------------------------
def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, set[str]]:
    """The distributions pip would install for the plain package and for ``[napari]``, into an empty
    environment (``--ignore-installed``). torch is pinned to this environment's build: which torch
    is not the question, and a CUDA build's dependencies would only slow the resolution down. The
    two resolutions run side by side (mostly waiting on the index)."""
    tmp = tmp_path_factory.mktemp("resolve")
    pin = tmp / "torch.txt"
    pin.write_text(f"torch=={md.version('torch')}\n")
    runs = {}
    for extra in ("", "[napari]"):
        report = tmp / f"report{extra}.json"
        command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--quiet",
                   "--dry-run", "--ignore-installed", "--constraint", str(pin), "--report", str(report),
                   f"{ROOT}{extra}"]
        runs[extra] = report, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True)
    names = {}
    for extra, (report, pip) in runs.items():
        _, err = pip.communicate(timeout=600)
        assert pip.returncode == 0, f"pip --dry-run napari-ktal{extra}:\n{err[-3000:]}"
        installs = json.loads(report.read_text())["install"]
        names[extra] = {_canonical(item["metadata"]["name"]) for item in installs}
    return names


@pytest.mark.slow
def test_the_plain_package_brings_neither_napari_nor_qt(resolved):
    plain = resolved[""]
    assert {"napari-ktal", "torch", "numpy", "matplotlib"} <= plain, plain  # a real resolution
    assert not plain & GUI_DISTRIBUTIONS, sorted(plain & GUI_DISTRIBUTIONS)


@pytest.mark.slow
def test_the_napari_extra_brings_napari_but_no_qt_binding(resolved):
    with_napari = resolved["[napari]"]
    assert {"napari-ktal", "napari", "qtpy"} <= with_napari, with_napari
    assert resolved[""] < with_napari
    assert not with_napari & QT_DISTRIBUTIONS, sorted(with_napari & QT_DISTRIBUTIONS)


# -- without napari -------------------------------------------------------------------------------
# The start of a script run in a fresh interpreter: the top-level modules named in argv[1] cannot be
# imported, as where pip never installed them; argv[2:] are the script's own arguments.
WITHOUT = r'''
import importlib.abc
import sys

BLOCKED = set(sys.argv.pop(1).split(","))


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled())
'''

# Every module outside the plugin and every name of the API import, then ktal-cryo runs each command
# of the JSON list argv[1] in this interpreter.
API_AND_CLI = r'''
import importlib
import json
from pathlib import Path

import napari_ktal

for name in napari_ktal.__all__:
    getattr(napari_ktal, name)
package = Path(napari_ktal.__file__).parent
for path in sorted(package.rglob("*.py")):
    parts = path.relative_to(package.parent).with_suffix("").parts
    if "_napari" not in parts:
        importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))

from napari_ktal.cli import main

for args in json.loads(sys.argv[1]):
    try:
        code = main(args)
    except SystemExit as done:  # --help
        code = done.code
    assert code == 0, (args, code)
print("without napari OK")
'''

VIEWS = r'''
try:
    import napari_ktal._napari._qt.widget
except ImportError as error:
    print(error)
else:
    print("imported")
'''


def _main_job(folder: Path) -> list[list[str]]:
    """ktal-cryo's help, then the README's main job shrunk to seconds: simulate 2 classes of 8 small
    volumes, train with the quick recipe cut to narrow ResNet-10s, one epoch a cycle, two cycles.
    The project lands in ``folder / "project"``."""
    recipe = folder / "tiny.toml"
    recipe.write_text(load_recipe("quick").replace(
        model={"teacher_depth": 10, "width": 4},
        train={"epochs": 1, "min_steps": 0, "lr_milestones": [], "batch_size": 8},
        active={"initial_fraction": 0.25, "step_fraction": 0.25, "final_fraction": 0.5}).to_toml())
    data = folder / "data"
    return [["--help"],
            ["simulate", str(data), "--classes", "2", "--per-class", "8", "--test-per-class", "2", "--box", "16",
             "--seed", "0"],
            ["train", str(data / "train"), "--project", str(folder / "project"), "--recipe", str(recipe),
             "--oracle", str(data / "train" / "labels.csv"), "--test", str(data / "test" / "labels.csv"),
             "--device", "cpu", "--seed", "0"]]


def _run_without(blocked: set[str], script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT + script, ",".join(sorted(blocked)), *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_without_napari_the_api_and_ktal_cryo_run(tmp_path):
    done = _run_without(GUI_MODULES, API_AND_CLI, json.dumps(_main_job(tmp_path)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "without napari OK" in done.stdout and "test acc" in done.stdout, done.stdout[-3000:]
    assert (tmp_path / "project" / "learning_curve.png").stat().st_size > 0  # matplotlib, no display


@pytest.mark.parametrize(("blocked", "says"), [
    (GUI_MODULES, INSTALL_HINT),  # the plain package: neither napari nor qtpy
    (QT_BINDINGS, "needs a Qt binding"),  # the [napari] extra alone: napari, but no binding to draw with
], ids=["no napari", "no Qt binding"])
def test_importing_the_plugin_views_says_what_to_install(tmp_path, blocked, says):
    done = _run_without(blocked, VIEWS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    message = done.stdout.strip()
    assert says in message and "\n" not in message, message


def _share_torch(python: Path, folder: Path) -> None:
    """Lend this environment's torch to the environment of ``python`` instead of installing it again
    (a CUDA build is gigabytes): ``folder`` gets a link to every top-level file or folder that torch
    and what it requires recorded at install (their RECORD), and a .pth file puts ``folder`` on that
    environment's path. pip then counts torch as installed, outside that environment, which it never
    changes; nothing else of this environment (napari above all) becomes visible there."""
    folder.mkdir()
    todo, done = ["torch"], set()
    while todo:
        dist = md.distribution(todo.pop())
        if _canonical(dist.metadata["Name"]) in done:
            continue
        done.add(_canonical(dist.metadata["Name"]))
        needs = map(Requirement, dist.requires or [])
        todo += [r.name for r in needs if not r.marker or r.marker.evaluate({"extra": ""})]
        assert dist.files, f"{dist.metadata['Name']} has no RECORD: cannot tell which files are its"
        for top in {f.parts[0] for f in dist.files} - {"..", "__pycache__"}:
            if not (folder / top).exists():
                (folder / top).symlink_to(dist.locate_file(top))
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "torch-of-the-test-environment.pth").write_text(f"{folder}\n")


@pytest.mark.slow
def test_a_fresh_environment_with_the_plain_package_runs_ktal_cryo(tmp_path):
    """What the README's main command does (``pip install .`` after torch), in a virtual environment
    that sees nothing of this one but its torch: no napari, no Qt; then ktal-cryo's help, a tiny
    simulate + train, the API, and the one-line message where the plugin's views are imported."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    scripts = Path(sysconfig.get_path("scripts", "venv", vars={"base": str(venv), "platbase": str(venv)}))
    python = scripts / Path(sys.executable).name
    _share_torch(python, tmp_path / "torch")
    _pip("install", "--no-compile", str(ROOT), python=python)  # no .pyc for scipy & co.: seconds saved
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=600, env=env,
                              cwd=tmp_path)

    present = run(python, "-c", "import importlib.util as u; "
                                f"print([m for m in {sorted(GUI_MODULES)} if u.find_spec(m)])")
    assert present.stdout.strip() == "[]", present.stdout + present.stderr[-2000:]  # the premise

    for args in _main_job(tmp_path):
        done = run(scripts / "ktal-cryo", *args)
        assert done.returncode == 0, f"ktal-cryo {' '.join(args)}:\n{done.stderr[-3000:]}"
    assert "test acc" in done.stdout, done.stdout[-3000:]
    assert (tmp_path / "project" / "learning_curve.png").stat().st_size > 0

    api = run(python, "-c", "import napari_ktal as k; print(k.load_recipe('quick').name, k.__file__)")
    assert api.returncode == 0 and api.stdout.startswith("quick "), api.stderr[-3000:]
    assert Path(api.stdout.split()[1]).is_relative_to(venv)  # the installed copy, not the checkout
    views = run(python, "-c", VIEWS)
    assert INSTALL_HINT in views.stdout and views.stdout.count("\n") == 1, views.stdout + views.stderr[-2000:]
