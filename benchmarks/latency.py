"""Latency of the napari dock as an expert feels it, in a real napari window (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/latency.py          # full numbers
    xvfb-run -a python benchmarks/latency.py --short --out /tmp/latency.json     # CI's short mode

Measured, each with the numbers written to JSON (``--out``) and printed:

- **key to drawn**: a key press on the canvas (a class key that labels the volume and moves to
  the next, or N / P) until the canvas has drawn the new volume: the time from the key event
  to the end of the next vispy draw, with ``glFinish``. Idle, with a cycle training in the
  background, and with a cycle training plus a second CPU-bound process (``--busy``).
- **event-loop gaps** during background training: a 10 ms QTimer's longest gap between ticks
  (and its 99th percentile), with and without a second CPU-bound process on the machine.
- **gallery after a cycle**: from the moment a trained cycle's result reaches the GUI thread
  until the gallery of the new 30-volume batch has drawn every thumbnail.
- **a 300-volume gallery**: thumbnails computed in the background (wall time), and scrolling
  it page by page: the time of each repaint.

The second CPU-bound process is a Python busy loop in a subprocess started by this script;
the JSON records the load average before and after, the CPU count and what ran.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch  # before Qt (imported inside the functions below)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latency.json"
BUSY_LOOP = "while True: pass"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def cpu_counters() -> tuple[float, float, float]:
    """(machine busy CPU seconds, machine total CPU seconds, this process's CPU seconds incl. threads)."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    t = os.times()
    return (sum(fields) - idle) / tick, sum(fields) / tick, t.user + t.system


class CpuWatch:
    """What the machine's CPUs did between start and stop: cores busy in all, and by others than us."""

    def __init__(self):
        self.start = cpu_counters()
        self.wall = time.perf_counter()

    def stop(self, busy_child: bool = False) -> dict:
        end = cpu_counters()
        wall = time.perf_counter() - self.wall
        busy = (end[0] - self.start[0]) / wall
        ours = (end[2] - self.start[2]) / wall
        return {"wall_s": round(wall, 2), "cores_busy": round(busy, 2), "cores_busy_this_process": round(ours, 2),
                "cores_busy_by_others": round(max(0.0, busy - ours), 2),
                "of_which_our_busy_loop": 1.0 if busy_child else 0.0, "load_average": load_average()}


def stats(ms: list[float]) -> dict:
    """Median, 95th percentile and max of a list of milliseconds (rounded)."""
    if not ms:
        return {"n": 0}
    a = np.asarray(ms, dtype=float)
    return {"n": len(a), "median_ms": round(float(np.median(a)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "max_ms": round(float(a.max()), 1)}


@contextmanager
def busy_process(on: bool):
    """A second CPU-bound process on the machine (a Python busy loop) while the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if on else None
    try:
        if proc is not None:
            time.sleep(0.5)  # let the scheduler see it
        yield proc
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


# -- data ------------------------------------------------------------------------------------
def make_data(tmp: Path, per_class: int) -> tuple[Path, dict[str, str], list[str]]:
    from napari_ktal.core.simulate import SimulationConfig, class_name, simulate_dataset

    simulate_dataset(tmp / "sim", SimulationConfig(classes=4, per_class=per_class, snr=1.0, seed=0))
    with open(tmp / "sim" / "train" / "labels.csv", newline="") as f:
        truth = {row["path"]: row["label"] for row in csv.DictReader(f)}
    return tmp / "sim" / "train", truth, [class_name(c, 4) for c in range(4)]


def make_project(root: Path, data: Path, classes: list[str], *, epochs: int, batch_fraction: float):
    """A project whose batches hold ``batch_fraction`` of the pool (cycle 0 and every later one)."""
    from napari_ktal.core.loop import load_recipe
    from napari_ktal.core.project import Project

    recipe = load_recipe("quick").replace(
        train={"min_steps": 0, "epochs": epochs, "lr_milestones": []},
        active={"initial_fraction": batch_fraction, "step_fraction": batch_fraction,
                "final_fraction": min(1.0, 3 * batch_fraction)})
    return Project.create(root, data, recipe, classes)


# -- the window ------------------------------------------------------------------------------
class Window:
    """A napari viewer (1280 x 800) with the Active learning dock, and clocks on its canvas."""

    def __init__(self):
        import napari
        from qtpy.QtWidgets import QApplication

        from napari_ktal._napari._qt.widget import ActiveLearningWidget

        self.viewer = napari.Viewer(show=True)
        self.app = QApplication.instance()
        self.viewer.window._qt_window.resize(1280, 800)
        self.widget = ActiveLearningWidget(self.viewer)
        self.viewer.window.add_dock_widget(self.widget, name="Active learning", area="right")
        self.canvas = self.viewer.window._qt_viewer.canvas
        self.draws: list[float] = []  # end of each canvas frame (glFinish)
        self.presented: list[float] = []  # the event-loop turn that drew it is over: the window is composed
        self.canvas._scene_canvas.events.draw.connect(self._drawn, position="last")
        self.pump(0.3)

    def _drawn(self, event=None) -> None:
        try:
            self.canvas._scene_canvas.context.finish()  # the frame is really rendered
        except Exception:  # noqa: BLE001 - a context without finish(): the time is still the draw's end
            pass
        self.draws.append(time.perf_counter())
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, lambda: self.presented.append(time.perf_counter()))

    def pump(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self.app.processEvents()
            time.sleep(0.002)

    def wait_until(self, condition, timeout: float = 120.0) -> bool:
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            self.app.processEvents()
            if condition():
                return True
            time.sleep(0.002)
        return False

    def key_to_draw(self, key: str, timeout: float = 5.0) -> tuple[float, float, float]:
        """For one key press: ms until it was handled, until the canvas drew the next frame, and until
        that event-loop turn was over (the window composed, what reaches the screen)."""
        from qtpy.QtTest import QTest

        self.settle()
        t0 = time.perf_counter()
        QTest.keyClick(self.canvas.native, key)
        handled = time.perf_counter()
        # the first frame that began after the key was handled shows the new volume (the GUI thread
        # was busy handling it until then)
        self.wait_until(lambda: any(t > handled for t in self.presented), timeout)
        drawn = next((t for t in self.draws if t > handled), float("nan"))
        presented = next((t for t in self.presented if t > drawn), float("nan"))
        return 1000 * (handled - t0), 1000 * (drawn - t0), 1000 * (presented - t0)

    def settle(self, quiet: float = 0.1, limit: float = 2.0) -> None:
        """Pump events until no frame has been drawn for ``quiet`` seconds (at most ``limit``)."""
        end = time.perf_counter() + limit
        while time.perf_counter() < end:
            self.pump(0.02)
            last = max(self.presented[-1:] + self.draws[-1:] + [0.0])
            if time.perf_counter() - last > quiet:
                return

    def gl_renderer(self) -> str:
        try:
            from vispy.gloo import gl

            self.canvas.native.makeCurrent()
            return f"{gl.glGetParameter(gl.GL_RENDERER)} / {gl.glGetParameter(gl.GL_VERSION)}"
        except Exception as exc:  # noqa: BLE001 - only for the record
            return f"unknown ({exc})"

    def close(self) -> None:
        self.widget.teardown()
        self.viewer.close()


def class_key(session, truth) -> str:
    try:
        from napari_ktal.core.loop.session import key_of_class
    except ImportError:  # baseline
        def key_of_class(k):
            return str(k + 1)
    return key_of_class(session.classes.index(truth[session.item.key]))


# -- measurements ----------------------------------------------------------------------------
def measure_keys(win: Window, truth: dict, presses: int, label_keys: bool) -> dict:
    """N / P presses (and, with ``label_keys``, class keys that label and move on)."""
    s = win.widget.session
    nav = {"handled": [], "drawn": [], "presented": []}
    lab = {"handled": [], "drawn": [], "presented": []}
    for k in range(presses):
        key = "n" if k % 2 == 0 else "p"
        for name, v in zip(nav, win.key_to_draw(key)):
            nav[name].append(v)
    if label_keys:
        for _ in range(presses):
            if s.n_open <= 1:  # keep the batch open: the last label would start training
                break
            for name, v in zip(lab, win.key_to_draw(class_key(s, truth))):
                lab[name].append(v)
    out = {"next_prev": {k: stats(v) for k, v in nav.items()}}
    if label_keys:
        out["label"] = {k: stats(v) for k, v in lab.items()}
    return out


def tick_timer():
    """A started clock, a 10 ms QTimer (not started) that appends the clock's time at each tick, and
    the list it fills: the gaps between ticks are how long the event loop was blocked."""
    from qtpy.QtCore import QElapsedTimer, QTimer

    clock = QElapsedTimer()
    clock.start()
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(clock.elapsed()))
    return clock, timer, ticks


def measure_event_loop(win: Window, seconds: float) -> dict:
    """A 10 ms QTimer's gaps while a cycle trains (training must outlast ``seconds``)."""
    task = win.widget.runner.running("train")
    _, timer, ticks = tick_timer()
    timer.start()
    win.pump(seconds)
    timer.stop()
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([0])
    still = task is not None and not task.done.is_set()
    return {"seconds": seconds, "ticks": len(ticks), "max_gap_ms": int(gaps.max()),
            "p99_gap_ms": float(np.percentile(gaps, 99)), "median_gap_ms": float(statistics.median(gaps)),
            "longest_5_ms": [int(g) for g in np.sort(gaps)[::-1][:5]], "training_ran_throughout": bool(still)}


def visible_rows(g) -> list[int]:
    """Rows of the gallery whose cells are (at least partly) on screen."""
    view = g.list.viewport().rect()
    return [r for r in range(g.model.rowCount()) if g.list.visualRect(g.model.index(r)).intersects(view)]


def measure_gallery_after_cycle(win: Window, truth: dict, busy: bool) -> dict:
    """Press the batch's last key: a short cycle trains; time from its result reaching the GUI thread
    until the gallery has painted every thumbnail of the new batch; the event loop's gaps throughout."""
    from qtpy.QtTest import QTest

    w = win.widget
    s = w.session
    g = w.browser_panel.gallery
    trained: list[float] = []
    original_trained = w.controller._on_trained

    def on_trained(report):
        trained.append(time.perf_counter())
        original_trained(report)

    w.controller._on_trained = on_trained
    clock, timer, ticks = tick_timer()
    try:
        with busy_process(busy):
            watch = CpuWatch()
            timer.start()
            t_key = time.perf_counter() - clock.elapsed() / 1000  # the clock's zero, in perf_counter time
            QTest.keyClick(win.canvas.native, class_key(s, truth))  # the batch's last label: the cycle trains
            assert win.wait_until(lambda: bool(trained), 300), "the cycle did not finish"

            def all_drawn() -> bool:  # every visible cell has painted its thumbnail (made while painting)
                return s.cycle == 1 and bool(visible_rows(g)) and all(
                    g._pixmaps.get(g.model.rows[r].index) is not None for r in visible_rows(g))

            assert win.wait_until(all_drawn, 60), "the gallery did not fill"
            drawn = time.perf_counter()
            win.pump(0.3)
            timer.stop()
            cpu = watch.stop(busy)
    finally:
        w.controller._on_trained = original_trained
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([0])
    # where the longest gaps were: seconds before (-) or after (+) the cycle's result reached the GUI
    t_trained = (trained[0] - t_key) * 1000
    worst = np.argsort(gaps)[::-1][:5]
    where = [round((ticks[k] - t_trained) / 1000, 2) for k in worst]
    return {"batch": len(s), "visible_cells": len(visible_rows(g)), "longest_gaps_at_s_from_result": where,
            "cycle_seconds": round(t_trained / 1000, 2), "gallery_drawn_ms": round(1000 * (drawn - trained[0]), 1),
            "event_loop_max_gap_ms": int(gaps.max()), "event_loop_p99_gap_ms": float(np.percentile(gaps, 99)),
            "event_loop_longest_5_ms": [int(x) for x in np.sort(gaps)[::-1][:5]],
            "busy_process": busy, "cpu": cpu}


def measure_big_gallery(win: Window, steps: int) -> dict:
    """A big batch: thumbnails made in the background (wall time), then scrolling it page by page."""
    w = win.widget
    s = w.session
    g = w.browser_panel.gallery
    w.browser_panel.setCurrentWidget(g)
    b = w.controller.browser
    t0 = time.perf_counter()
    assert win.wait_until(lambda: all(b.thumbnail(q.index) is not None for q in s.batch), 120)
    made = time.perf_counter() - t0

    bar = g.list.verticalScrollBar()
    frames = []
    for k in range(steps):
        value = (k + 1) * bar.pageStep() % max(1, bar.maximum())
        win.pump(0.02)
        t = time.perf_counter()
        bar.setValue(value)
        g.list.viewport().repaint()  # synchronous: the time to draw one screenful
        frames.append(1000 * (time.perf_counter() - t))
    return {"batch": len(s), "thumbnails_made_s": round(made, 2), "scroll_range_px": bar.maximum(),
            "scroll_page_ms": stats(frames), "visible_cells": len(visible_rows(g))}


def start_background_training(win: Window, project, truth: dict) -> None:
    """Label the rest of the open batch by key presses: the cycle trains by itself."""
    s = win.widget.session
    while s.n_open:
        from qtpy.QtTest import QTest

        QTest.keyClick(win.canvas.native, class_key(s, truth))
    assert win.wait_until(lambda: win.widget.panel.progress.value() > 0, 60), "training did not start"


def run(args) -> dict:
    from napari_ktal._napari import controller as tasks

    short = args.short
    result: dict = {
        "mode": "short" if short else "full",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "worker_torch_threads": tasks.worker_threads(),
                    "gl": None},
        "load_before": load_average(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "busy_process": f"a second process running `python -c '{BUSY_LOOP}'` where a phase says busy",
    }
    presses = 6 if short else 40
    gap_seconds = 2.0 if short else 8.0
    tasks.warm_up()
    with tempfile.TemporaryDirectory(prefix="ktal-latency-") as tmp:
        tmp = Path(tmp)
        data, truth, classes = make_data(tmp, per_class=10 if short else 30)
        win = Window()
        result["machine"]["gl"] = win.gl_renderer()
        try:
            # -- keys, idle --------------------------------------------------------------------------
            project = make_project(tmp / "p_keys", data, classes, epochs=400, batch_fraction=0.25)
            s = win.widget.open_project(project.root)
            win.pump(1.0)
            win.widget.view.fit()
            result["batch_size"] = len(s)
            watch = CpuWatch()
            result["keys_idle"] = measure_keys(win, truth, presses, label_keys=True)
            result["keys_idle"]["cpu"] = watch.stop()
            print("keys idle:", json.dumps(result["keys_idle"]), flush=True)
            if not short and hasattr(win.widget.panel, "view_mode"):  # the rotatable 3D view, for the record
                modes = win.widget.panel.view_mode
                modes.setCurrentIndex(modes.findData("3d"))
                win.pump(1.0)
                result["keys_idle_3d_view"] = measure_keys(win, truth, presses // 2, label_keys=False)
                print("keys idle, 3D view:", json.dumps(result["keys_idle_3d_view"]), flush=True)
                modes.setCurrentIndex(modes.findData("panels"))
                win.pump(1.0)
            # -- training in the background ------------------------------------------------------
            start_background_training(win, project, truth)
            watch = CpuWatch()
            result["keys_training"] = measure_keys(win, truth, presses, label_keys=False)
            result["keys_training"]["cpu"] = watch.stop()
            print("keys while training:", json.dumps(result["keys_training"]), flush=True)
            watch = CpuWatch()
            result["event_loop_training"] = measure_event_loop(win, gap_seconds)
            result["event_loop_training"]["cpu"] = watch.stop()
            print("event loop while training:", json.dumps(result["event_loop_training"]), flush=True)
            with busy_process(True):
                watch = CpuWatch()
                result["event_loop_training_busy"] = measure_event_loop(win, gap_seconds)
                result["event_loop_training_busy"]["cpu"] = watch.stop(busy_child=True)
                print("event loop while training + busy process:", json.dumps(result["event_loop_training_busy"]),
                      flush=True)
                watch = CpuWatch()
                result["keys_training_busy"] = measure_keys(win, truth, presses, label_keys=False)
                result["keys_training_busy"]["cpu"] = watch.stop(busy_child=True)
                print("keys while training + busy process:", json.dumps(result["keys_training_busy"]), flush=True)
            win.widget.cancel_training()
            win.wait_until(lambda: not win.widget.runner.busy("train"), 30)
            if args.keys_only:
                result["load_after"] = load_average()
                return result

            # -- the gallery after a cycle ends (a short cycle), with a busy process -------------------
            p2 = make_project(tmp / "p_gallery", data, classes, epochs=2 if short else 5, batch_fraction=0.25)
            s2 = win.widget.open_project(p2.root)
            win.pump(1.0)
            for q in s2.batch[:-1]:
                s2.go_to(s2.batch.index(q))
                win.widget.assign(truth[q.key])
            win.pump(1.0)
            result["gallery_after_cycle_busy"] = measure_gallery_after_cycle(win, truth, busy=True)
            print("gallery after a cycle (+ busy process):", json.dumps(result["gallery_after_cycle_busy"]), flush=True)

            # -- a 300-volume batch --------------------------------------------------------------------
            big_data, _, _ = make_data(tmp / "big", per_class=24 if short else 80)
            n_big = 96 if short else 320
            p3 = make_project(tmp / "p_big", big_data, classes, epochs=2, batch_fraction=(90 if short else 300) / n_big)
            win.widget.open_project(p3.root)
            result["big_gallery"] = measure_big_gallery(win, steps=4 if short else 20)
            print("big gallery:", json.dumps(result["big_gallery"]), flush=True)
        finally:
            win.close()
    result["load_after"] = load_average()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a quick run (CI): fewer presses, shorter windows")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON file (default {DEFAULT_OUT})")
    parser.add_argument("--keys-only", action="store_true",
                        help="only the key and event-loop phases (these run on older versions too: before/after)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run at this nice value (its busy-loop child too; negative needs root): on a machine "
                             "shared with other people's jobs, -10 makes them background noise, so the numbers "
                             "approach those of a 2-core machine running only this and the busy loop")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    torch.set_num_threads(1)
    result = run(args)
    out = args.out or DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
