"""The project lock: one writer at a time, a clear message naming the holder, never stale.

Two processes: a subprocess takes the lock as ``ktal-cryo train`` would and keeps it; the
CLI in this process is refused with one line naming it, and the project is unchanged. When
the holder is SIGKILLed the operating system releases the lock and the CLI goes ahead.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from napari_ktal.cli import main
from napari_ktal.core.errors import ProjectError
from napari_ktal.core.project import Project
from napari_ktal.core.project import lock as lock_module
from napari_ktal.core.project.lock import LOCK_FILE, ProjectLock, ProjectLocked, read_lock_info

REPO = Path(__file__).resolve().parents[3]
HOLDER = """
import sys, time
from napari_ktal.core.project.lock import ProjectLock
lock = ProjectLock(sys.argv[1], sys.argv[2]).acquire()
print("locked", flush=True)
time.sleep(120)
"""

SECOND = """
import sys
from napari_ktal.core.project.lock import ProjectLock, ProjectLocked
try:
    ProjectLock(sys.argv[1], "second").acquire()
except ProjectLocked as exc:
    print("refused by", exc.holder.pid)
else:
    print("locked")
"""


def _second_process_tries(folder: Path) -> str:
    """What another process gets when it asks for the lock of ``folder``: "locked" or who refused it."""
    done = subprocess.run([sys.executable, "-c", SECOND, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, timeout=120)
    return done.stdout.strip()


@pytest.fixture
def holder():
    """Start a process that holds the lock of a folder; SIGKILL it at the end."""
    started = []

    def start(folder: Path, purpose: str = "ktal-cryo train") -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), purpose], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        started.append(proc)
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def _answers(project: Project, truth: dict[str, str], folder: Path) -> Path:
    path = folder / "lock_answers.csv"
    batch = project.read_query(0) if project.query_cycles() else []
    keys = [q.key for q in batch] or sorted(truth)[:2]
    path.write_text("path,label\n" + "".join(f"{k},{truth[k]}\n" for k in keys))
    return path


def test_cli_is_refused_while_another_process_holds_the_project(project, sim_train_dir, sim_truth, holder, capsys):
    proc = holder(project.root)
    answers = _answers(project, sim_truth, sim_train_dir)
    before = snapshot(project.root)
    for argv in (["import-labels", str(answers), "--project", str(project.root)],
                 ["train", "--project", str(project.root), "--device", "cpu"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("ktal-cryo: error:")
        assert f"project {project.root} is in use by ktal-cryo train (pid {proc.pid} on {socket.gethostname()}) since" \
            in err, err
    assert snapshot(project.root) == before
    # a reader is not refused: predict says why it cannot predict, not that the project is busy
    assert main(["predict", "--project", str(project.root), "--device", "cpu"]) == 2
    assert "in use" not in capsys.readouterr().err

    proc.send_signal(signal.SIGKILL)  # the holder dies without releasing anything
    proc.wait()
    assert main(["import-labels", str(answers), "--project", str(project.root), "--add-classes"]) == 0
    assert len(Project(project.root).labels()) >= 2


def test_a_second_process_gets_the_lock_only_after_the_first_dies(tmp_path, holder):
    """The lock itself, between two processes other than this one: refused while the first holds it,
    granted once the first is SIGKILLed (the system releases a dead process's flock)."""
    first = holder(tmp_path)
    assert _second_process_tries(tmp_path) == f"refused by {first.pid}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert _second_process_tries(tmp_path) == "locked"


def test_two_windows_in_one_process_exclude_each_other(project):
    first = Project(project.root)
    first.acquire_lock("napari (window 1)")
    second = Project(project.root)
    with pytest.raises(ProjectLocked) as caught:
        second.acquire_lock("napari (window 2)")
    assert f"pid {os.getpid()}" in str(caught.value) and "napari (window 1)" in str(caught.value)
    assert caught.value.holder.purpose == "napari (window 1)"
    first.release_lock()
    second.acquire_lock("napari (window 2)")
    assert read_lock_info(project.root).purpose == "napari (window 2)"
    second.release_lock()


def test_locked_context_releases_on_errors_and_keeps_an_outer_lock(project):
    p = Project(project.root)
    with pytest.raises(RuntimeError), p.locked("job"):
        assert p.is_locked
        raise RuntimeError("boom")
    assert not p.is_locked
    with ProjectLock(project.root, "check"):  # free again
        pass
    p.acquire_lock("outer")
    with p.locked("inner"):
        pass
    assert p.is_locked  # the outer holder keeps it
    p.release_lock()


def test_project_opened_with_lock_argument(project):
    p = Project(project.root, lock="script")
    with pytest.raises(ProjectLocked, match="in use by script"):
        Project(project.root, lock="other script")
    p.release_lock()
    Project(project.root, lock="other script").release_lock()


def test_an_import_into_a_folder_being_imported_is_refused(tmp_path, sim_train_dir, tiny_recipe, holder):
    root = tmp_path / "new"
    root.mkdir()
    holder(root, "a project import")
    with pytest.raises(ProjectLocked, match="in use by a project import"):
        Project.create(root, sim_train_dir, tiny_recipe)
    assert [p.name for p in root.iterdir()] == [LOCK_FILE]


def test_benchmark_folder_is_locked(tmp_path, sim_train_dir, holder, capsys):
    out = tmp_path / "bench"
    out.mkdir()
    holder(out, "ktal-cryo benchmark")
    argv = ["benchmark", str(sim_train_dir), "--oracle", str(sim_train_dir / "labels.csv"), "--strategies",
            "random", "--seeds", "1", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 2
    assert "is in use by ktal-cryo benchmark" in capsys.readouterr().err


def test_a_foreign_benchmark_folder_gets_no_lock_file(tmp_path, sim_train_dir, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["benchmark", str(sim_train_dir), "--oracle", str(sim_train_dir / "labels.csv"), "--strategies",
            "random", "--seeds", "1", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_file_system_without_locks_warns_and_goes_on(project, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match="cannot lock files"):
        lock = ProjectLock(project.root, "job").acquire()
    lock.release()


def test_a_read_only_project_folder_cannot_be_locked_for_writing(project, monkeypatch):
    real_open = os.open

    def refuse(path, flags, *args):
        if str(path).endswith(LOCK_FILE):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(lock_module.os, "open", refuse)
    with pytest.raises(ProjectError, match="cannot create the project's lock file"):
        ProjectLock(project.root, "job").acquire()


def test_lock_file_garbage_still_gives_a_message(project, holder):
    holder(project.root)
    (project.root / LOCK_FILE).write_text("garbage")  # the holder keeps the lock; only the text is lost
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ProjectLocked, match="is in use by another program"):
            ProjectLock(project.root, "job").acquire()
