"""One process behaves as before the SPMD rewrite of several processes (issue 20): the seeded
oracle runs of ``same_history/run.py`` give the reference history.csv (clock columns aside) and
queries byte for byte. The references were recorded on this project's CPU machine; float kernels
differ between CPUs, so the test is ``slow`` (run it where the references were made)."""

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parent / "same_history" / "run.py"


def test_one_process_gives_the_reference_history_and_queries(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    spec = importlib.util.spec_from_file_location("same_history_run", SCRIPT)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert run.differences(run.run(tmp_path)) == []
