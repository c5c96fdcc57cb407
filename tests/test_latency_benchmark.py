"""CI runs the latency benchmark in its short mode: it must run in a real napari window and
write its numbers (the full numbers, and what they mean, are in docs/performance.md).

No timing is asserted here: CI machines differ; the numbers are for people to read.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_latency_benchmark_short_mode_writes_its_numbers(tmp_path):
    out = tmp_path / "latency.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency.py"), "--short", "--out", str(out)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "short" and result["machine"]["cpus"] >= 1
    numbers = [
        result["keys_idle"]["next_prev"]["drawn"]["median_ms"],
        result["keys_idle"]["label"]["drawn"]["p95_ms"],
        result["keys_training"]["next_prev"]["drawn"]["median_ms"],
        result["keys_training_busy"]["next_prev"]["drawn"]["p95_ms"],
        result["event_loop_training"]["max_gap_ms"],
        result["event_loop_training_busy"]["max_gap_ms"],
        result["gallery_after_cycle_busy"]["gallery_drawn_ms"],
        result["gallery_after_cycle_busy"]["event_loop_max_gap_ms"],
        result["big_gallery"]["scroll_page_ms"]["max_ms"],
        result["big_gallery"]["thumbnails_made_s"],
    ]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in numbers), numbers
    assert result["big_gallery"]["batch"] >= 90 and result["gallery_after_cycle_busy"]["busy_process"]
    assert "cores_busy_by_others" in result["event_loop_training_busy"]["cpu"]
