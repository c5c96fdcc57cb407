"""One process behaves as before the SPMD rewrite of several processes (issue 20): the seeded
oracle runs of ``same_history/run.py`` give the reference history.csv (clock columns aside) and
queries byte for byte. Float kernels differ between CPUs and torch versions, so the comparison
runs only on the kind of machine the references were recorded on (``reference/machine.json``)
and is skipped, saying why, elsewhere."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parent / "same_history" / "run.py"


def _script():
    spec = importlib.util.spec_from_file_location("same_history_run", SCRIPT)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run


@pytest.mark.usefixtures("one_torch_thread")  # as the references were recorded (OMP_NUM_THREADS=1)
def test_one_process_gives_the_reference_history_and_queries(tmp_path):
    run = _script()
    if run.machine() != run.recorded_machine():
        pytest.skip(f"references recorded on {run.recorded_machine()}, this is {run.machine()}")
    assert run.differences(run.run(tmp_path)) == []


def test_the_references_name_their_machine():
    run = _script()
    assert set(run.recorded_machine()) == set(run.machine())
