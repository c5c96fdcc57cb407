"""Bad input through the user's entry point: one line naming the file, exit 2, nothing stored damaged.

Every case runs ``napari_ktal.cli.main([...])`` as a user would and checks:

- exit code 2 and exactly one line on stderr, starting ``ktal-cryo: error:``, naming the file
  that is wrong and saying what is wrong (the words of the case), with no traceback;
- a project that existed before the command is byte-identical after it (its lock file, which
  only records who last opened the project, excepted); a project the command was to create
  does not exist.

The corpus is generated here (numpy, mrcfile, text): nothing binary is committed. The reader-
level cases and the hypothesis fuzz test of the MRC reader are in ``test_volumes.py``; this
module adds the entry-point view and what that module does not cover (duplicates, encodings,
recipes, project folders, checkpoints), plus a fuzz test of the whole import.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mrcfiles import noise, poke, write_mrc

from napari_ktal.cli import main
from napari_ktal.core.data.mrc import read_labels_csv
from napari_ktal.core.errors import InputError, KtalError
from napari_ktal.core.project import Project
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

CLASSES = "class_00,class_01,class_02"


@dataclass(frozen=True)
class World:
    train: Path  # a simulated data folder (12 volumes of 16^3) with labels.csv
    base: Path  # a project of it: 2 labels, one trained cycle (checkpoint 0), batch 1 queried
    recipe: Path  # the tiny recipe
    truth: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_recipe_file) -> World:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("inputs")
    labels, _ = simulate_dataset(tmp / "sim", SimulationConfig(classes=3, per_class=4, snr=1, box=16, seed=3))
    train = labels.parent
    with open(labels, newline="") as f:
        truth = {r["path"]: r["label"] for r in csv.DictReader(f)}
    recipe = tiny_recipe_file()
    base = tmp / "base"
    assert main(["train", str(train), "--project", str(base), "--recipe", str(recipe), "--device", "cpu",
                 "--classes", CLASSES]) == 0
    batch = Project(base).read_query(0)
    answers = train / "answers.csv"
    answers.write_text("path,label\n" + "".join(f"{q.key},{truth[q.key]}\n" for q in batch))
    assert main(["import-labels", str(answers), "--project", str(base)]) == 0
    assert main(["train", "--project", str(base), "--device", "cpu"]) == 0
    assert Project(base).checkpoint_cycles() == [0]
    # files the label cases point at: a valid volume outside the pool, one outside the tree, a broken one
    write_mrc(train / "more" / "extra.mrc", noise(16, 16, 16))
    (train / "more" / "junk.mrc").write_bytes(b"not a volume\n" * 100)
    write_mrc(train.parent / "outside.mrc", noise(16, 16, 16))
    write_mrc(tmp / "elsewhere" / "far.mrc", noise(16, 16, 16))
    torch.set_num_threads(threads)
    return World(train, base, recipe, truth)


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` but the lock file."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@dataclass
class Ctx:
    world: World
    tmp: Path
    project: Path  # a copy of the base project, ready to be damaged

    @property
    def train(self) -> Path:
        return self.world.train

    def labels_csv(self, name: str, text: str | bytes) -> Path:
        path = self.train / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path


def run_failing(argv: list[str], capsys, name: str, words: list[str]) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err, captured.out)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ktal-cryo: error:"), err
    assert name in err, err
    for word in words:
        assert word in err, err
    return err


# ----------------------------------------------------------------------------- data


def _folder(ctx: Ctx, extra) -> Path:
    """A data folder: two good 8^3 volumes and what ``extra(folder)`` adds."""
    folder = ctx.tmp / "data"
    write_mrc(folder / "good_1.mrc", noise(8, 8, 8))
    write_mrc(folder / "good_2.mrc", noise(8, 8, 8))
    extra(folder)
    return folder


def _bad(maker):
    """``maker(path)`` writes the bad file ``bad.mrc`` into the folder."""
    return lambda folder: maker(folder / "bad.mrc")


def _field(name, value, data=None):
    def make(path):
        write_mrc(path, noise(8, 8, 8) if data is None else data)
        poke(path, name, value)

    return make


def _with(value) -> np.ndarray:
    array = noise(8, 8, 8)
    array[1, 2, 3] = value
    return array


def _truncated(path):
    write_mrc(path, noise(8, 8, 8))
    path.write_bytes(path.read_bytes()[:-100])


def _stack_nan(path):
    data = noise(3, 8, 8, 8)
    data[1, 0, 0, 0] = np.nan
    write_mrc(path, data)


def _copy_of_good(folder):
    shutil.copyfile(folder / "good_1.mrc", folder / "copy.mrc")


def _symlink_of_good(folder):
    (folder / "link.mrc").symlink_to(folder / "good_1.mrc")


def _hardlink_of_good(folder):
    os.link(folder / "good_1.mrc", folder / "hard.mrc")


def _empty(folder):
    for p in folder.iterdir():
        p.unlink()


def _only_text(folder):
    _empty(folder)
    (folder / "notes.txt").write_text("no volumes here")


DATA_CASES = [
    # (id, what to add to the folder, the file named, words)
    ("random-bytes", _bad(lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096))), "bad.mrc",
     ["not an MRC file"]),
    ("text-file", _bad(lambda p: p.write_text("path,label\nsub_1.mrc,x\n")), "bad.mrc", ["not an MRC file"]),
    ("empty-file", _bad(lambda p: p.write_bytes(b"")), "bad.mrc", ["not an MRC file"]),
    ("truncated", _bad(_truncated), "bad.mrc", ["truncated"]),
    ("nx-negative", _bad(_field("nx", -8)), "bad.mrc", ["corrupt header", "nx=-8"]),
    ("ny-huge", _bad(_field("ny", 2**30)), "bad.mrc", ["corrupt header", "ny="]),
    ("nz-zero", _bad(_field("nz", 0)), "bad.mrc", ["corrupt header", "nz=0"]),
    ("nsymbt-huge", _bad(_field("nsymbt", 2**31 - 1)), "bad.mrc", ["truncated"]),
    ("mode-unknown", _bad(_field("mode", 99)), "bad.mrc", ["unknown data mode 99"]),
    ("mode-3-complex", _bad(_field("mode", 3)), "bad.mrc", ["complex", "mode 3"]),
    ("mode-4-complex", _bad(lambda p: write_mrc(p, noise(8, 8, 8).astype(np.complex64))), "bad.mrc",
     ["complex", "mode 4"]),
    ("not-cubic", _bad(lambda p: write_mrc(p, noise(8, 8, 16))), "bad.mrc", ["not cubic"]),
    ("side-not-multiple-of-8", _bad(lambda p: write_mrc(p, noise(12, 12, 12))), "bad.mrc", ["multiple of 8"]),
    ("2d-image", _bad(lambda p: write_mrc(p, noise(8, 8))), "bad.mrc", ["2D"]),
    ("stack-without-ispg", _bad(lambda p: write_mrc(p, noise(16, 8, 8))), "bad.mrc", ["ispg=401"]),
    ("stack-mz-not-dividing", _bad(_field("mz", 3, noise(2, 8, 8, 8))), "bad.mrc", ["corrupt header", "mz=3"]),
    ("mixed-box-sizes", _bad(lambda p: write_mrc(p, noise(16, 16, 16))), "bad.mrc",
     ["box 16 differs from box 8", "same size"]),
    ("nan-voxel", _bad(lambda p: write_mrc(p, _with(np.nan))), "bad.mrc", ["NaN"]),
    ("inf-voxel", _bad(lambda p: write_mrc(p, _with(np.inf))), "bad.mrc", ["Inf"]),
    ("nan-in-stack-frame-2", _bad(_stack_nan), "bad.mrc", ["NaN", "frame 2 of 3"]),
    ("big-endian-nan", _bad(lambda p: write_mrc(p, _with(np.nan).astype(">f4"))), "bad.mrc", ["NaN"]),
    ("constant-volume", _bad(lambda p: write_mrc(p, np.full((8, 8, 8), 7, np.float32))), "bad.mrc",
     ["constant"]),
    ("zero-volume", _bad(lambda p: write_mrc(p, np.zeros((8, 8, 8), np.int16))), "bad.mrc", ["constant"]),
    ("duplicate-copy", _copy_of_good, "copy.mrc", ["same voxels", "duplicate"]),
    ("duplicate-symlink", _symlink_of_good, "link.mrc", ["same file as good_1.mrc"]),
    ("duplicate-hardlink", _hardlink_of_good, "hard.mrc", ["same file as"]),
    ("empty-folder", _empty, "data", ["no volume files"]),
    ("folder-without-volumes", _only_text, "data", ["no volume files", ".mrc"]),
]


@pytest.mark.parametrize(("make", "name", "words"), [pytest.param(*c[1:], id=c[0]) for c in DATA_CASES])
def test_bad_data_folder(world, tmp_path, capsys, make, name, words):
    ctx = Ctx(world, tmp_path, world.base)
    folder = _folder(ctx, make)
    before = snapshot(world.base)
    new = tmp_path / "new"
    run_failing(["train", folder, "--project", new, "--device", "cpu"], capsys, name, words)
    assert not new.exists()  # nothing half-created
    assert snapshot(world.base) == before


@pytest.mark.parametrize(
    ("source", "name", "words"),
    [
        pytest.param("missing", "missing", ["does not exist"], id="data-missing"),
        pytest.param("notes.txt", "notes.txt", ["neither a volume file nor a labels CSV"], id="data-wrong-kind"),
        pytest.param("bad.mrcs", "bad.mrcs", ["not an MRC file"], id="data-single-bad-file"),
    ],
)
def test_bad_data_path(tmp_path, capsys, source, name, words):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "bad.mrcs").write_bytes(b"\0" * 2000)
    new = tmp_path / "new"
    run_failing(["train", tmp_path / source, "--project", new, "--device", "cpu"], capsys, name, words)
    assert not new.exists()


def test_into_a_non_empty_folder_leaves_it_alone(tmp_path, capsys, world):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    run_failing(["train", world.train, "--project", target, "--device", "cpu"], capsys, "mine", ["not empty"])
    assert [p.name for p in target.iterdir()] == ["thesis.tex"]


GOOD_DATA = [
    pytest.param(np.int8, id="int8"),
    pytest.param(np.int16, id="int16"),
    pytest.param(np.uint16, id="uint16"),
    pytest.param(np.float16, id="float16"),
    pytest.param(np.float32, id="float32"),
    pytest.param(">f4", id="float32-big-endian"),
    pytest.param(">i2", id="int16-big-endian"),
    pytest.param(">u2", id="uint16-big-endian"),
]


@pytest.mark.parametrize("dtype", GOOD_DATA)
def test_each_readable_mode_imports(tmp_path, capsys, dtype):
    rng = np.random.default_rng(5)
    raw = [rng.standard_normal((8, 8, 8)) * 20 + 100 for _ in range(3)]
    for k, volume in enumerate(raw):
        write_mrc(tmp_path / "data" / f"v{k}.mrc", volume.astype(dtype))
    assert main(["train", str(tmp_path / "data"), "--project", str(tmp_path / "p"), "--device", "cpu",
                 "--classes", "a,b"]) == 0
    assert "error" not in capsys.readouterr().err
    pool = Project(tmp_path / "p").pool
    for k, volume in enumerate(raw):
        exact = volume.astype(dtype).astype(np.float32)
        expected = (exact - exact.mean()) / exact.std()
        np.testing.assert_allclose(pool.read([k])[0], expected, atol=1e-2)


def test_slightly_off_header_imports_with_one_warning_line(tmp_path, capsys):
    for k in range(2):
        write_mrc(tmp_path / "data" / f"v{k}.mrc", noise(8, 8, 8))
    poke(tmp_path / "data" / "v1.mrc", "map", b"\0\0\0\0")
    assert main(["train", str(tmp_path / "data"), "--project", str(tmp_path / "p"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ktal-cryo: warning:") and "v1.mrc" in err[0], err


# --------------------------------------------------------------------------- labels

LABEL_CASES = [
    # (id, csv file name, csv text or bytes (or None: no file), the file named, words, extra args)
    ("missing-path", "a.csv", "path,label\nsub_000000.mrc,class_00\nnope.mrc,class_01\n", "a.csv",
     ["line 3", "nope.mrc", "does not exist"]),
    ("relative-escape", "b.csv", "path,label\n../outside.mrc,class_00\n", "b.csv", ["line 2", "outside"]),
    ("absolute-escape", "c.csv", "path,label\n{far},class_00\n", "c.csv", ["line 2", "outside"]),
    ("unknown-class", "d.csv", "path,label\nsub_000000.mrc,ribosome\n", "d.csv",
     ["unknown class", "ribosome", "--add-classes"]),
    ("conflicting-duplicate-rows", "e.csv", "path,label\nsub_000000.mrc,class_00\n./sub_000000.mrc,class_01\n",
     "e.csv", ["line 3", "'class_01'", "'class_00'"]),
    ("wrong-columns", "f.csv", "file,class\nsub_000000.mrc,class_00\n", "f.csv",
     ["no 'path' or 'label' column", "file, class"]),
    ("missing-label-column", "g.csv", "path,klass\nsub_000000.mrc,class_00\n", "g.csv", ["no 'label' column"]),
    ("latin-1", "h.csv", "path,label\nsub_000000.mrc,caf\xe9\n".encode("latin-1"), "h.csv",
     ["line 2", "not UTF-8", "save it as UTF-8"]),
    ("utf-16-without-bom", "i.csv", "path,label\nsub_000000.mrc,class_00\n".encode("utf-16-le"), "i.csv",
     ["NUL bytes"]),
    ("binary", "j.csv", bytes(range(256)) * 4, "j.csv", ["not a text file"]),
    ("empty-file", "k.csv", "", "k.csv", ["no 'path' or 'label' column"]),
    ("header-only", "l.csv", "path,label\n", "l.csv", ["no labelled rows"]),
    ("empty-label", "m.csv", "path,label\nsub_000000.mrc,\n", "m.csv", ["line 2", "empty label"]),
    ("not-in-pool", "n.csv", "path,label\nmore/extra.mrc,class_00\n", "n.csv", ["not in the project's pool"]),
    ("names-a-broken-volume", "o.csv", "path,label\nmore/junk.mrc,class_00\n", "o.csv",
     ["line 2", "junk.mrc", "not an MRC file"]),
    ("frame-of-a-single-volume", "q.csv", "path,label\n2@sub_000000.mrc,class_00\n", "q.csv", ["frame 2"]),
    ("frame-zero", "r.csv", "path,label\n0@sub_000000.mrc,class_00\n", "r.csv", ["frame 0", "from 1"]),
    ("labels-file-missing", "gone.csv", None, "gone.csv", ["does not exist"]),
]


@pytest.mark.parametrize(("name", "text", "named", "words"), [pytest.param(*c[1:], id=c[0]) for c in LABEL_CASES])
def test_bad_labels_file_leaves_the_project_byte_identical(world, tmp_path, capsys, name, text, named, words):
    project = tmp_path / "P"
    shutil.copytree(world.base, project)
    ctx = Ctx(world, tmp_path, project)
    if text is not None:
        if isinstance(text, str):
            text = text.replace("{far}", str(world.train.parents[1] / "elsewhere" / "far.mrc"))
        path = ctx.labels_csv(name, text)
    else:
        path = world.train / name
    before = snapshot(project)
    run_failing(["import-labels", path, "--project", project], capsys, named, words)
    assert snapshot(project) == before


@pytest.mark.parametrize(
    ("encoding", "separator"),
    [("utf-8", ","), ("utf-8-sig", ","), ("utf-16", ","), ("utf-32", ","), ("utf-8", ";"), ("utf-16", "\t")],
)
def test_labels_in_other_encodings_and_separators_are_read(world, tmp_path, capsys, encoding, separator):
    project = tmp_path / "P"
    shutil.copytree(world.base, project)
    keys = sorted(world.truth)[:4]
    rows = [f"path{separator}label"] + [f"{k}{separator}{world.truth[k]}" for k in keys]
    path = world.train / f"enc_{encoding}_{ord(separator)}.csv"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode(encoding))
    assert main(["import-labels", str(path), "--project", str(project)]) == 0, capsys.readouterr().err
    labels = Project(project).labels()
    pool = Project(project).pool
    assert {pool.keys[i]: lab for i, lab in labels.items() if pool.keys[i] in keys} == {k: world.truth[k] for k in keys}


def test_repeated_identical_rows_are_kept_once_with_a_warning(world, tmp_path, capsys):
    project = tmp_path / "P"
    shutil.copytree(world.base, project)
    key = sorted(world.truth)[5]
    path = world.train / "repeat.csv"
    path.write_text(f"path,label\n{key},{world.truth[key]}\n./{key},{world.truth[key]}\n")
    assert main(["import-labels", str(path), "--project", str(project)]) == 0
    err = capsys.readouterr().err
    assert "ktal-cryo: warning:" in err and "repeats line 2" in err


# --------------------------------------------------------------------------- recipes

RECIPE_CASES = [
    ("typo-key", "[train]\nepoch = 2\n", ["train.epoch", "did you mean 'epochs'"]),
    ("typo-table", "[trian]\nepochs = 2\n", ["'trian'", "did you mean 'train'"]),
    ("out-of-range", "[train]\nlr = 50.0\n", ["train.lr", "(0, 10]"]),
    ("negative-epochs", "[train]\nepochs = -1\n", ["train.epochs", "between 1 and 10000"]),
    ("wrong-type", "[train]\nepochs = \"ten\"\n", ["train.epochs", "must be a int"]),
    ("bool-for-number", "[train]\nbatch_size = true\n", ["train.batch_size"]),
    ("nan", "[transfer]\nweight = nan\n", ["transfer.weight", "finite"]),
    ("inf", "[active]\nsubset_factor = inf\n", ["active.subset_factor", "finite"]),
    ("unknown-strategy", "[active]\nstrategy = \"magic\"\n", ["active.strategy", "must be one of"]),
    ("final-below-initial", "[active]\ninitial_fraction = 0.5\nfinal_fraction = 0.2\n",
     ["active.final_fraction"]),
    ("milestone-beyond-epochs", "[train]\nepochs = 5\nlr_milestones = [9]\n", ["train.lr_milestones"]),
    ("bad-depth", "[model]\nteacher_depth = 19\n", ["model.teacher_depth"]),
    ("not-toml", "[train\nepochs = 2\n", ["not valid TOML"]),
    ("python-code", "import os; os.system('touch /tmp/ktal-pwned')\n", ["not valid TOML"]),
]


@pytest.mark.parametrize(("text", "words"), [pytest.param(*c[1:], id=c[0]) for c in RECIPE_CASES])
def test_bad_recipe_names_the_key(world, tmp_path, capsys, text, words):
    project = tmp_path / "P"
    shutil.copytree(world.base, project)
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    before = snapshot(project)
    run_failing(["train", "--project", project, "--recipe", recipe, "--device", "cpu"], capsys, "r.toml", words)
    assert snapshot(project) == before
    assert not Path("/tmp/ktal-pwned").exists()


def test_missing_recipe_file(world, tmp_path, capsys):
    run_failing(["train", world.train, "--project", tmp_path / "P", "--recipe", tmp_path / "none.toml"], capsys,
                "none.toml", ["not found"])
    assert not (tmp_path / "P").exists()


# ---------------------------------------------------------------- project folders


def _edit_json(name, change):
    def prepare(project: Path):
        path = project / name
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return prepare


def _write(name, content: str | bytes):
    def prepare(project: Path):
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return prepare


def _append(name, content: str):
    def prepare(project: Path):
        with open(project / name, "a") as f:
            f.write(content)

    return prepare


def _remove(name):
    return lambda project: (project / name).unlink()


def _object_pool(project: Path):
    path = project / "pool" / "volumes.npy"
    n = np.load(path, mmap_mode="r").shape[0]
    np.save(path, np.array([{"evil": k} for k in range(n)], dtype=object), allow_pickle=True)


def _meta_width(project: Path):
    path = project / "checkpoints" / "cycle_000" / "meta.json"
    meta = json.loads(path.read_text())
    meta["model"]["width"] = 16
    path.write_text(json.dumps(meta))


def _truncate(name, keep=200):
    def prepare(project: Path):
        path = project / name
        path.write_bytes(path.read_bytes()[:keep])

    return prepare


def _tensor_instead_of_state(project: Path):
    torch.save(torch.zeros(3), project / "checkpoints" / "cycle_000" / "teacher.pt")


def _malicious(project: Path):
    torch.save({"fc.weight": _Evil()}, project / "checkpoints" / "cycle_000" / "teacher.pt")


class _Evil:
    marker = Path("/tmp/ktal-evil-marker")

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


IMPORT = ["import-labels", "{project}/../answers.csv", "--project", "{project}"]
TRAIN = ["train", "--project", "{project}", "--device", "cpu"]
ORACLE = ["train", "--project", "{project}", "--device", "cpu", "--oracle", "{train}/labels.csv"]
PREDICT = ["predict", "--project", "{project}", "--device", "cpu"]

PROJECT_CASES = [
    # (id, damage, command, the file named, words)
    ("format-newer", _edit_json("project.json", lambda d: d.update(format_version=99)), IMPORT, "project.json",
     ["newer", "upgrade napari-ktal"]),
    ("format-older", _edit_json("project.json", lambda d: d.update(format_version=0)), TRAIN, "project.json",
     ["version 0", "not supported"]),
    ("format-missing", _edit_json("project.json", lambda d: d.pop("format_version")), PREDICT, "project.json",
     ["version None"]),
    ("project-json-not-json", _write("project.json", "{not json"), IMPORT, "project.json", ["cannot be read"]),
    ("project-json-a-list", _write("project.json", "[1, 2]"), IMPORT, "project.json", ["not a JSON object"]),
    ("classes-not-a-list", _edit_json("project.json", lambda d: d.update(classes="a,b")), TRAIN, "project.json",
     ["'classes'"]),
    ("no-project-json", _remove("project.json"), TRAIN, "P", ["not a napari-ktal project"]),
    ("pool-missing", _remove("pool/volumes.npy"), IMPORT, "pool", ["missing or damaged"]),
    ("pool-of-objects", _object_pool, IMPORT, "pool", ["missing or damaged", "Python objects"]),
    ("pool-index-short", _truncate("pool/index.csv", 60), IMPORT, "pool", ["index.csv lists"]),
    ("history-damaged", _write("history.csv", "cycle,n_labeled\nzero,3\n"), TRAIN, "history.csv", ["damaged"]),
    ("query-damaged", _write("queries/cycle_000.csv", "rank,index\n0,banana\n"), ORACLE, "cycle_000.csv",
     ["damaged", "delete the file"]),
    ("query-index-outside-pool", _write("queries/cycle_000.csv", "rank,index,key,score,predicted,confidence\n"
                                        "0,999,x.mrc,,,\n"), ORACLE, "cycle_000.csv", ["999", "outside the pool"]),
    ("journal-from-another-project", _append("labels.jsonl", '{"op":"set","index":999,"key":"x","label":"class_00"}\n'),
     TRAIN, "labels.jsonl", ["999", "pool holds 12"]),
    ("journal-from-newer-version", _append("labels.jsonl", '{"op":"merge","t":1}\n'), TRAIN, "labels.jsonl",
     ["unknown journal record", "newer"]),
    ("recipe-toml-typo", _write("recipe.toml", "[train]\nepoch = 2\n"), TRAIN, "recipe.toml", ["train.epoch"]),
    ("checkpoint-truncated", _truncate("checkpoints/cycle_000/teacher.pt"), PREDICT, "teacher.pt",
     ["damaged or not a checkpoint"]),
    ("checkpoint-empty", _write("checkpoints/cycle_000/student.pt", b""), PREDICT, "student.pt", ["damaged"]),
    ("checkpoint-missing", _remove("checkpoints/cycle_000/teacher.pt"), PREDICT, "teacher.pt", ["missing"]),
    ("checkpoint-malicious-pickle", _malicious, PREDICT, "teacher.pt", ["refused", "more than tensors"]),
    ("checkpoint-not-a-state-dict", _tensor_instead_of_state, PREDICT, "teacher.pt", ["not a state dict"]),
    ("checkpoint-vs-its-meta", _meta_width, PREDICT, "teacher.pt", ["does not match its meta.json"]),
    ("checkpoint-meta-damaged", _write("checkpoints/cycle_000/meta.json", "{"), PREDICT, "meta.json", ["damaged"]),
    ("no-checkpoint-yet", lambda p: shutil.rmtree(p / "checkpoints"), PREDICT, "P", ["no trained models yet"]),
]


@pytest.mark.parametrize(("damage", "command", "named", "words"),
                         [pytest.param(*c[1:], id=c[0]) for c in PROJECT_CASES])
def test_damaged_project_is_one_line_and_not_made_worse(world, tmp_path, capsys, damage, command, named, words):
    project = tmp_path / "P"
    shutil.copytree(world.base, project)
    shutil.copyfile(world.train / "answers.csv", tmp_path / "answers.csv")
    damage(project)
    before = snapshot(project)
    argv = [a.format(project=project, train=world.train) for a in command]
    run_failing(argv, capsys, named, words)
    assert snapshot(project) == before
    assert not _Evil.marker.exists()


def test_checkpoint_of_another_architecture_refuses_a_warm_start(world, tmp_path, capsys, tiny_recipe_file):
    project = tmp_path / "P"
    shutil.copytree(world.base, project)
    recipe = tiny_recipe_file("[active]\nreinit_each_cycle = false\n")
    recipe.write_text(recipe.read_text().replace("width = 4", "width = 8"))
    before = snapshot(project)
    run_failing(["train", "--project", project, "--recipe", recipe, "--device", "cpu"], capsys, "cycle_000",
                ["width = 4", "width = 8", "reinit_each_cycle = true"])
    assert snapshot(project) == before


# ------------------------------------------------------------------- fuzz: the import

_FIELDS = ["nx", "ny", "nz", "mode", "mz", "ispg", "nsymbt"]
_VALUES = [0, 1, -1, 3, 4, 8, 12, 16, 99, 401, 2**31 - 1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(_FIELDS),
    value=st.sampled_from(_VALUES),
    cut=st.one_of(st.none(), st.integers(0, 3200)),
    special=st.sampled_from([None, "nan", "inf", "constant"]),
)
def test_import_of_a_mutated_volume_gives_a_project_or_one_clean_error(tmp_path_factory, field, value, cut,
                                                                       special):
    """A folder with one mutated file: the import succeeds, or fails with an InputError/KtalError
    naming a file, and leaves no folder behind (the reader alone is fuzzed in test_volumes.py)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    data = tmp / "data"
    write_mrc(data / "a.mrc", noise(8, 8, 8))
    volume = noise(8, 8, 8)
    if special == "constant":
        volume[...] = 3.0
    elif special is not None:
        volume[0, 0, 0] = float(special)
    path = write_mrc(data / "b.mrc", volume)
    poke(path, field, value)
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    root = tmp / "p"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            project = Project.create(root, data, _recipe())
        except KtalError as error:
            assert "b.mrc" in str(error) or "a.mrc" in str(error), error
            assert "\n" not in str(error)
            assert not root.exists()
            return
    assert len(project.pool) >= 2 and np.isfinite(project.pool.read(np.arange(len(project.pool)))).all()


def _recipe():
    from napari_ktal.core.loop import load_recipe
    return load_recipe("quick")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300), encoding=st.sampled_from(["utf-8", "utf-16", "latin-1", None]))
def test_any_labels_file_gives_rows_or_one_input_error(tmp_path_factory, raw, encoding):
    """Whatever bytes a labels file holds: rows, or an InputError naming it on one line."""
    folder = tmp_path_factory.mktemp("csvfuzz")
    write_mrc(folder / "a.mrc", noise(8, 8, 8))
    if encoding is not None:  # a plausible start, then noise
        raw = "path,label\na.mrc,x\n".encode(encoding) + raw
    path = folder / "labels.csv"
    path.write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pairs = read_labels_csv(path)
        except InputError as error:
            assert "labels.csv" in str(error) and "\n" not in str(error)
            return
    assert pairs and all(ref.path.is_file() for ref, _ in pairs)
