"""The benchmark scripts run end to end in their small modes (what CI can afford)."""

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _run(script: str, *args: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")
    assert done.value.code == 0


def test_gpu_protocol_dry_mode_times_every_step(tmp_path, monkeypatch):
    _run("gpu_protocol.py", "--dry", "--out", str(tmp_path), monkeypatch=monkeypatch)
    result = json.loads((tmp_path / "gpu_protocol.json").read_text())
    assert result["dry"] and result["throughput"]["train_samples_per_s"] > 0
    cycle = result["cycle_40pct"]
    assert cycle["labeled"] == 14 and cycle["queried"] == 2 and cycle["epochs_run"] == 2  # 35% of 40, then 5%
    assert result["ddp_2gpu"].startswith("skipped")


def test_ladder_tiny_mode_runs_the_benchmark_and_the_baseline(tmp_path, monkeypatch, capsys):
    _run("ladder.py", "--tiny", "--root", str(tmp_path), "--device", "cpu", monkeypatch=monkeypatch)
    result = json.loads((tmp_path / "tiny" / "ladder.json").read_text())
    assert 0 <= result["baseline"]["accuracy_mean"] <= 1 and result["baseline"]["labeled"] == 7
    assert [r["labeled"] for r in result["network"]["runs"]] == [7, 7]  # the teacher on as many random labels
    assert "vs_random_wilcoxon_p" in result["benchmark"]["summary"]
    assert "AUBC % [95% CI]" in capsys.readouterr().out


def test_throughput_tiny_mode_measures_every_speed_variant_against_both_ceilings(tmp_path, monkeypatch, capsys):
    out = tmp_path / "throughput.json"
    _run("throughput.py", "--tiny", "--device", "cpu", "--cycle", "--out", str(out), monkeypatch=monkeypatch)
    result = json.loads(out.read_text())
    assert set(result["ceilings"]) == {"fp32", "bf16"} and all(c["flops_per_s"] > 0 for c in result["ceilings"].values())
    rows = {(r["model"], r["variant"]): r for r in result["results"]}
    assert set(rows) == {(m, v) for m in ("paper", "quick") for v in ("fp32", "cl", "bf16", "bf16+cl", "auto")}
    for r in rows.values():
        assert r["train_samples_per_s"] > 0 and r["score_samples_per_s"] > 0 and r["train_teacher_alone_samples_per_s"] > 0
        assert r["train_share_of_fp32_ceiling"] > 0 and r["train_share_of_bf16_ceiling"] > 0
    assert rows[("quick", "bf16+cl")]["train_speed"] == "bf16, channels_last"
    assert set(result["cycle"]) == {"fp32", "auto"} and result["cycle"]["fp32"]["train_speed"] == "fp32"
    assert "x fp32" in capsys.readouterr().out


def test_pool_scale_tiny_mode_measures_every_phase(tmp_path, monkeypatch, capsys):
    _run("pool_scale.py", "--tiny", "--dir", str(tmp_path), monkeypatch=monkeypatch)
    result = json.loads((tmp_path / "pool_scale.json").read_text())
    assert result["n"] == 48 and result["generate"]["stacks"] == 3
    assert result["dd"]["read_MBps"] > 0 and result["dd"]["write_MBps"] > 0
    assert result["import"]["volumes"] == 48 and result["import"]["pool_bytes"] >= 48 * 32**3 * 2
    assert result["score"]["scored"] == 24 and result["score"]["selected"] == 2
    assert result["predict"]["predicted"] == 48
    for phase in ("generate", "dd", "import", "score", "predict"):
        assert 0 < result[phase]["peak_VmRSS_MB"] < 100_000 and result[phase]["ru_maxrss_MB"] > 0
        assert result[phase].get("wall_s", 1) > 0 and result[phase]["threads"] == 1
    assert "predict" in capsys.readouterr().out


def test_extract_scale_tiny_mode_cuts_the_picks_into_a_pool_and_mrc_files(tmp_path, monkeypatch, capsys):
    _run("extract_scale.py", "--tiny", "--dir", str(tmp_path), monkeypatch=monkeypatch)
    result = json.loads((tmp_path / "extract_scale.json").read_text())  # not in benchmarks/results
    assert result["generate"]["tomograms"] == 2 and result["generate"]["picks"] == 24
    assert result["read"]["MBps"] > 0 and result["read"]["bytes"] == 2 * 96 * 96 * 64 * 4 + 2 * 1024
    for phase in ("pool", "mrc"):
        assert result[phase]["picks"] == 24 and result[phase]["picks_per_s"] > 0
        assert 0 < result[phase]["peak_VmRSS_MB"] < 100_000 and result[f"{phase}_vs_read"] > 0
    assert not (tmp_path / "tomograms").exists()  # cleaned up without --keep
    assert "x the plain read" in capsys.readouterr().out


def test_trust_tiny_mode_measures_suspects_calibration_and_the_audit(tmp_path, monkeypatch, capsys):
    out = tmp_path / "trust.json"
    _run("trust.py", "--tiny", "--out", str(out), monkeypatch=monkeypatch)
    result = json.loads(out.read_text())
    assert result["pool"] == 32 and result["labeled"] == 16 and result["flipped"] == 1 and result["folds"] == 3
    assert result["repeats"] == 2  # the shipped recipe's [trust] repeats: what review runs
    assert 0 <= result["flipped_in_top_2k"] <= 1 and result["temperature"] > 0
    audit = result["audit_estimate"]
    assert 0 <= audit["low"] <= audit["accuracy"] <= audit["high"] <= 1 and audit["n"] == 16
    assert 0 <= result["true_accuracy_rest"] <= 1 and result["rest"] == 16
    # the temperature minimises the NLL (T = 1 among the candidates); the ECE it need not lower
    assert result["nll_crossfit_after"] <= result["nll_crossfit_before"] + 1e-6  # up to the search tolerance
    assert 0 <= result["ece_crossfit_after"] <= 1 and 0 <= result["ece_crossfit_before"] <= 1
    assert result["crossfit_seconds"] > 0 and result["cycle_train_seconds"] > 0
    assert "top 2K suspects" in capsys.readouterr().out
