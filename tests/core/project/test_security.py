"""A shared or downloaded project folder runs nothing and reads nothing outside what the user chose.

- checkpoints are loaded with ``torch.load(weights_only=True)`` only: a pickle that would run
  code is refused with a clear error, and the code does not run;
- the source paths a project records (project.json, pool/index.csv, pool/info.json) are
  provenance: nothing opens them, so a moved project works and a doctored one reads nothing
  (checked with an audit hook on every ``open``);
- labels files may only name files in their own folder tree (symbolic links included);
- recipe.toml is parsed as TOML; the source holds no eval/exec/pickle.load/allow_pickle=True.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

from napari_ktal.cli import main
from napari_ktal.core import loop as al
from napari_ktal.core.data.mrc import read_labels_csv
from napari_ktal.core.errors import InputError, ProjectError, RecipeError
from napari_ktal.core.loop import load_recipe
from napari_ktal.core.loop.session import LabelingSession
from napari_ktal.core.project import Project
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

PACKAGE = Path(__file__).resolve().parents[3] / "napari_ktal"
TINY = load_recipe("quick").replace(model={"width": 4}, train={"min_steps": 0, "epochs": 1, "lr_milestones": [], "batch_size": 8})
MARKER = Path("/tmp/ktal-security-marker")

_opened: list[str] | None = None


def _audit(event: str, args) -> None:
    if _opened is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # permanent for the process, inert unless a test records


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("secdata")
    labels, _ = simulate_dataset(out, SimulationConfig(classes=2, per_class=6, snr=1, box=16, seed=8))
    return labels.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    p = Project.create(tmp_path_factory.mktemp("secproj") / "P", data, TINY)
    oracle = al.oracle_for_pool(p.pool, data / "labels.csv")
    al.run_with_oracle(p, TINY.replace(active={"final_fraction": 0.1}), oracle, torch.device("cpu"))
    torch.set_num_threads(threads)
    return p.root


@pytest.mark.parametrize("kind", ["torch-zip", "plain-pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_and_never_run(trained, tmp_path, kind):
    root = tmp_path / "P"
    shutil.copytree(trained, root)
    MARKER.unlink(missing_ok=True)
    path = root / "checkpoints" / "cycle_000" / "teacher.pt"
    if kind == "torch-zip":
        torch.save({"fc.weight": _Evil()}, path)
    else:
        path.write_bytes(pickle.dumps({"fc.weight": _Evil()}))
    with pytest.raises(ProjectError) as caught:
        Project(root).load_models()
    message = str(caught.value)
    assert "teacher.pt: refused" in message and "do not trust it" in message
    assert "weights_only" not in message  # never advise loading it the unsafe way
    assert not MARKER.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def test_the_source_never_unpickles_or_evaluates_untrusted_data():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, owner, name in _calls(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            keywords = {k.arg: k.value for k in node.keywords}
            if owner == "torch" and name == "load":
                w = keywords.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if owner == "pickle" and name in ("load", "loads"):
                problems.append(f"{where}: pickle.{name}")
            if isinstance(node.func, ast.Name) and name in ("eval", "exec"):  # not model.eval()
                problems.append(f"{where}: {name}()")
            a = keywords.get("allow_pickle")
            if isinstance(a, ast.Constant) and a.value is True:
                problems.append(f"{where}: allow_pickle=True")
    assert not problems, problems


def _poison(root: Path) -> None:
    """Point every recorded source path somewhere that must never be opened."""
    index = root / "pool" / "index.csv"
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["path"] = f"../../../../../ktal-poison/{r['key']}"
    with open(index, "w", newline="") as f:
        w = csv.DictWriter(f, ["index", "key", "path", "frame"])
        w.writeheader()
        w.writerows(rows)
    for name, key in (("project.json", "source"), ("pool/info.json", "root")):
        cfg = json.loads((root / name).read_text())
        cfg[key] = "/ktal-poison/source"
        (root / name).write_text(json.dumps(cfg))


def test_recorded_source_paths_are_provenance_only(trained, data, tmp_path, capsys, one_torch_thread):
    global _opened
    root = tmp_path / "P"
    shutil.copytree(trained, root)
    _poison(root)
    answers = data / "sec_answers.csv"
    project = Project(root)
    batch = project.read_query(project.query_cycles()[-1])
    with open(data / "labels.csv", newline="") as f:
        truth = {r["path"]: r["label"] for r in csv.DictReader(f)}
    answers.write_text("path,label\n" + "".join(f"{q.key},{truth[q.key]}\n" for q in batch))
    _opened = []
    try:
        session = LabelingSession(Project(root))
        session.assign(session.classes[0])
        session.undo()
        assert main(["import-labels", str(answers), "--project", str(root)]) == 0
        assert main(["train", "--project", str(root), "--device", "cpu"]) == 0
        assert main(["predict", "--project", str(root), "--device", "cpu"]) == 0
        opened = list(_opened)
    finally:
        _opened = None
    assert opened, "the audit hook saw no file at all"
    assert not [p for p in opened if "ktal-poison" in p], [p for p in opened if "ktal-poison" in p]
    assert "Traceback" not in capsys.readouterr().err


def test_a_moved_project_works_without_its_source_data(data, tmp_path, one_torch_thread):
    source = tmp_path / "data"
    shutil.copytree(data, source)
    p = Project.create(tmp_path / "before", source, TINY)
    oracle = al.oracle_for_pool(p.pool, source / "labels.csv")
    p.add_classes(sorted(set(oracle.values())))
    batch = al.initial_query(p, TINY, seed=0)
    p.label_many({q.index: oracle[q.index] for q in batch})
    keys = dict(zip(p.pool.keys, p.pool.read(range(len(p.pool)))[:, 0, 0, 0]))
    labels = {p.pool.keys[i]: lab for i, lab in p.labels().items()}
    assert labels
    (tmp_path / "elsewhere").mkdir()
    os.rename(tmp_path / "before", tmp_path / "elsewhere" / "after")
    shutil.rmtree(source)  # the subtomograms are gone: the pool holds what the project needs
    moved = Project(tmp_path / "elsewhere" / "after")
    assert moved.root == (tmp_path / "elsewhere" / "after").resolve()
    assert {moved.pool.keys[i]: lab for i, lab in moved.labels().items()} == labels
    assert dict(zip(moved.pool.keys, moved.pool.read(range(len(moved.pool)))[:, 0, 0, 0])) == keys
    report = al.train_cycle(moved, TINY, torch.device("cpu"))
    assert report.cycle == 0 and moved.load_models()[2]["cycle"] == 0


def test_a_labels_file_cannot_reach_outside_its_folder_through_a_link(data, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    outside = min(data.glob("*.mrc"))
    (folder / "innocent.mrc").symlink_to(outside)
    csv_path = folder / "labels.csv"
    csv_path.write_text("path,label\ninnocent.mrc,x\n")
    with pytest.raises(InputError, match="points outside the CSV's folder"):
        read_labels_csv(csv_path)


def test_a_project_recipe_is_parsed_never_run(trained, tmp_path, capsys):
    root = tmp_path / "P"
    shutil.copytree(trained, root)
    MARKER.unlink(missing_ok=True)
    (root / "recipe.toml").write_text(f"__import__('os').system('touch {MARKER}')\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        Project(root).recipe()
    assert main(["train", "--project", str(root), "--device", "cpu"]) == 2
    assert "recipe.toml: not valid TOML" in capsys.readouterr().err
    assert not MARKER.exists()
