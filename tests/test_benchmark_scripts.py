"""The benchmark scripts run end to end in their small modes (what CI can afford)."""

import csv
import json
import math
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
    # a recipe variant on the same data and seeds, then the report pairs it with the rung's own kt runs
    _run("ladder.py", "tiny", "--variant", "warm", "--strategies", "kt", "--seeds", "2", "--root", str(tmp_path),
         "--device", "cpu", monkeypatch=monkeypatch)
    warm = tmp_path / "tiny" / "variant-warm"
    assert 'reinit_each_cycle = false' in (warm / "recipe.toml").read_text()
    assert json.loads((warm / "ladder.json").read_text())["benchmark"]["variant"] == "warm"
    _run("verdict_report.py", "--root", str(tmp_path), monkeypatch=monkeypatch)
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| warm | kt |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "2" and cells[6] in ("0/2", "1/2", "2/2")
    # tiny trains 2 epochs with no floor; warm's floor of 100 steps after cycle 0 makes its runs longer
    variant_steps, rung_steps = (int(v) for v in cells[7].split(" (")[0].split(" / "))
    assert variant_steps > rung_steps > 0
    assert "warm: curve noise: " in (tmp_path / "report.md").read_text()  # how much the variant's curves jump
    with open(warm / "benchmark" / "results.csv", newline="") as f:  # the epochs each cycle trained
        assert {(r["cycle"] == "0", r["epochs"]) for r in csv.DictReader(f)} == {(True, "2"), (False, "100")}
        # cycle 0: tiny's 2 epochs; then the warm floor of 100 steps, one step an epoch on 4-7 labels
    # a variant's teacher alone on the final number of random labels: no strategy runs, network.json beside them
    _run("ladder.py", "tiny", "--network", "--variant", "warm", "--seeds", "1", "--root", str(tmp_path),
         "--device", "cpu", monkeypatch=monkeypatch)
    network = json.loads((warm / "network.json").read_text())["network"]
    assert network["variant"] == "warm" and [r["labeled"] for r in network["runs"]] == [7]
    assert network["runs"][0]["teacher_loss"] > 0 and (warm / "network" / "seed0").is_dir()
    # the rung's own teacher on the same labels; the report pairs them (one cycle: warm start changes nothing)
    _run("ladder.py", "tiny", "--network", "--seeds", "1", "--root", str(tmp_path), "--device", "cpu",
         monkeypatch=monkeypatch)
    _run("verdict_report.py", "--root", str(tmp_path), monkeypatch=monkeypatch)
    report = (tmp_path / "report.md").read_text()
    assert "Teacher alone on 7 random labels (`ladder.py --network`):\n\n- the rung's recipe: " in report
    assert "- variant warm: " in report and "paired with the rung's: +0.0 points" in report
    # a later seed joins the ones run before
    _run("ladder.py", "tiny", "--network", "--variant", "warm", "--seeds", "1", "--first-seed", "1",
         "--root", str(tmp_path), "--device", "cpu", monkeypatch=monkeypatch)
    network = json.loads((warm / "network.json").read_text())["network"]
    assert [r["seed"] for r in network["runs"]] == [0, 1] and math.isfinite(network["accuracy_std"])
    # steps-N: the step floor at N (7 labels in one batch of 8: one step an epoch, so 5 epochs for 5 steps)
    _run("ladder.py", "tiny", "--network", "--variant", "steps-5", "--seeds", "1", "--root", str(tmp_path),
         "--device", "cpu", monkeypatch=monkeypatch)
    network = json.loads((tmp_path / "tiny" / "variant-steps-5" / "network.json").read_text())["network"]
    assert [r["epochs"] for r in network["runs"]] == [5]


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


def test_verdict_report_tables_finished_runs_paired_by_seed(tmp_path, monkeypatch, capsys):
    from napari_ktal.core.loop import load_recipe

    rung = tmp_path / "10c-snr01"  # named as a verdict rung, so that --docs takes its table
    (rung / "benchmark").mkdir(parents=True)
    recipe = load_recipe("quick").replace(active={"initial_fraction": 0.1, "step_fraction": 0.1, "final_fraction": 0.3})
    (rung / "recipe.toml").write_text(recipe.to_toml())
    (rung / "baseline.json").write_text(json.dumps({"baseline": {
        "labeled": 30, "pool": 100, "chance": 0.25, "accuracy_mean": 0.3, "accuracy_std": 0.02}}))
    rows = []
    for seed in range(6):  # kt ahead of random by 0.05-0.10 at every budget after the first
        for strategy, lift in (("kt", 0.05 + 0.01 * seed), ("random", 0.0)):
            for cycle, n in enumerate((10, 20, 30)):
                rows.append({"strategy": strategy, "seed": seed, "cycle": cycle, "n_labeled": n,
                             "test_accuracy": 0.4 + 0.1 * cycle + (lift if cycle else 0.0), "query_seconds": "",
                             "train_seconds": 1.0})
    rows += [{"strategy": "margin", "seed": 0, "cycle": 0, "n_labeled": 10, "test_accuracy": 0.4,
              "query_seconds": "", "train_seconds": 1.0}]  # still running
    rows += [{"strategy": "entropy", "seed": 0, "cycle": cycle, "n_labeled": n, "test_accuracy": acc,
              "query_seconds": "", "train_seconds": 1.0}  # finished, falling by 15 points in its last cycle
             for cycle, (n, acc) in enumerate(((10, 0.4), (20, 0.6), (30, 0.45)))]
    with open(rung / "benchmark" / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n<!-- verdict:start -->\nold table\n<!-- verdict:end -->\nafter\n")
    _run("verdict_report.py", "--root", str(tmp_path), "--docs", str(docs), monkeypatch=monkeypatch)
    text = (tmp_path / "report.md").read_text()
    updated = docs.read_text()
    assert "old table" not in updated and updated.endswith("<!-- verdict:end -->\nafter\n")
    assert text.strip() in updated  # the one rung's section, as the report has it
    kt = next(line for line in text.splitlines() if line.startswith("| kt |"))
    cells = [c.strip() for c in kt.strip("|").split("|")]
    # final 0.6 + lift (mean 0.075, sd 0.0187); AUBC over fractions 0.1-0.3: 0.5 + 0.75 * lift against 0.5
    assert cells[1] == "6 (0,1,2,3,4,5)" and cells[2] == "67.5 +- 1.9" and cells[3].startswith("55.6 [")
    assert cells[4].startswith("+5.6 [") and cells[5] == "0.0312" and cells[6] == "6/6"  # exact p, 6 of 6 seeds
    assert cells[7] == "22"  # random's final 0.6, reached between 20 (0.575) and 30 (0.675) labels: 22.5
    assert "| margin |" not in text and "margin-seed0 (1/3 cycles)" in text and "30.0 +- 2.0%" in text
    # 13 finished runs of 3 cycles: 26 steps, one of them a fall of over 10 points; 10c-snr01 tests on 300
    assert ("Curve noise: 1 of 26 steps from one cycle to the next lost more than 10 points of accuracy "
            "(the worst -15.0 points); the test set's sampling error is 2.9 points") in text
    assert "### `10c-snr01`" in capsys.readouterr().out


def _rung_with_runs(folder: Path, runs: dict[tuple[str, int], float], recipe) -> None:
    """A rung folder as ladder.py leaves it: 3 cycles per run, each run's curve lifted by its value."""
    (folder / "benchmark").mkdir(parents=True)
    (folder / "recipe.toml").write_text(recipe.to_toml())
    (folder / "baseline.json").write_text(json.dumps({"baseline": {
        "labeled": 30, "pool": 100, "chance": 0.25, "accuracy_mean": 0.3, "accuracy_std": 0.02}}))
    config = {"data": str(folder / "data"), "recipe": recipe.to_dict()}
    (folder / "benchmark" / "benchmark.json").write_text(json.dumps(config))
    with open(folder / "benchmark" / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["strategy", "seed", "cycle", "n_labeled", "test_accuracy", "query_seconds",
                               "train_seconds"])
        w.writeheader()
        for (strategy, seed), lift in runs.items():
            w.writerows({"strategy": strategy, "seed": seed, "cycle": c, "n_labeled": n,
                         "test_accuracy": 0.4 + 0.1 * c + lift, "query_seconds": "", "train_seconds": 1.0}
                        for c, n in enumerate((10, 20, 30)))


def test_verdict_report_takes_whole_seeds_run_elsewhere_where_the_rung_lacks_them(tmp_path, monkeypatch):
    from napari_ktal.core.loop import load_recipe

    recipe = load_recipe("quick").replace(active={"initial_fraction": 0.1, "step_fraction": 0.1, "final_fraction": 0.3})
    here, there = tmp_path / "cpu", tmp_path / "gpu"
    # here: seeds 0-1 whole, and kt alone of seed 2; there: seeds 1-3 whole (seed 1 is here already)
    _rung_with_runs(here / "10c-snr01", {("kt", 0): 0.1, ("random", 0): 0.0, ("kt", 1): 0.1, ("random", 1): 0.0,
                                         ("kt", 2): 0.5}, recipe)
    _rung_with_runs(there / "10c-snr01", {(s, k): (0.05 if s == "kt" else 0.0) for k in (1, 2, 3)
                                          for s in ("kt", "random")}, recipe)
    _run("verdict_report.py", "--root", str(here), "--also", f"{there}=the GPU node", monkeypatch=monkeypatch)
    text = (here / "report.md").read_text()
    kt = [c.strip() for c in next(ln for ln in text.splitlines() if ln.startswith("| kt |")).strip("|").split("|")]
    assert kt[1] == "4 (0,1,2*,3*)"  # seed 1 from here; 2 and 3 whole from there, kt-seed2 of here set aside
    assert kt[4].startswith("+7.5 [")  # lifts 0.1, 0.1 (here), 0.05, 0.05 (there) on every cycle
    assert "Seeds marked * (2, 3) ran on the GPU node" in text and "set aside for them: kt-seed2" in text
    # the seeds together are one benchmark's files, whose summary is the table's
    pooled = here / "10c-snr01" / "pooled"
    with open(pooled / "summary.csv", newline="") as f:
        summary = {r["strategy"]: r for r in csv.DictReader(f)}
    assert summary["kt"]["n_runs"] == "4" and float(summary["kt"]["vs_random_aubc_diff"]) == pytest.approx(0.075, abs=1e-3)
    assert json.loads((pooled / "pooled.json").read_text()) == {
        "seeds": {"0": "10c-snr01/benchmark", "1": "10c-snr01/benchmark", "2": "the GPU node", "3": "the GPU node"},
        "set_aside": ["kt-seed2"]}
    # a root whose recipe differs cannot join
    changed = recipe.replace(train={"lr": 0.01})
    (there / "10c-snr01" / "benchmark" / "benchmark.json").write_text(json.dumps({"recipe": changed.to_dict()}))
    monkeypatch.setattr(sys, "argv", ["verdict_report.py", "--root", str(here), "--also", f"{there}=x"])
    with pytest.raises(SystemExit, match="its recipe differs"):
        runpy.run_path(str(ROOT / "benchmarks" / "verdict_report.py"), run_name="__main__")


def test_ladder_jobs_runs_side_by_side_merges_finished_runs_and_stops_at_the_deadline(tmp_path, monkeypatch):
    _run("ladder_jobs.py", "--root", str(tmp_path), "--device", "cpu", "--parallel", "2", "tiny:random,kt:0",
         monkeypatch=monkeypatch)
    out = tmp_path / "tiny" / "benchmark"
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["strategy"], r["seed"]) for r in rows} == {("random", "0"), ("kt", "0")} and len(rows) == 10
    assert [line.split(",")[0] for line in (out / "summary.csv").read_text().splitlines()[1:]] == ["random", "kt"]
    config = json.loads((out / "benchmark.json").read_text())
    assert config["data"] == str((tmp_path / "tiny" / "data" / "train").resolve())  # the rung's data, not a job's
    # a run stopped at the deadline is not merged; the finished ones stay
    monkeypatch.setattr(sys, "argv", ["ladder_jobs.py", "--root", str(tmp_path), "--device", "cpu",
                                      "tiny@warm:kt:1", "--deadline", "0.5"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "benchmarks" / "ladder_jobs.py"), run_name="__main__")
    assert done.value.code == 1
    report = json.loads((tmp_path / "ladder_jobs.json").read_text())
    assert report["jobs"] == [{"job": "tiny@warm-kt-1", "status": "stopped at the deadline",
                               "seconds": report["jobs"][0]["seconds"]}]
    assert not (tmp_path / "tiny" / "variant-warm" / "benchmark").exists() and len(rows) == 10
    # called again, the stopped job continues in its own folder (kept, log appended) and is merged
    kept = tmp_path / "jobs" / "tiny@warm-kt-1"
    assert kept.is_dir() and (kept / "tiny" / "data").is_symlink()
    _run("ladder_jobs.py", "--root", str(tmp_path), "--device", "cpu", "tiny@warm:kt:1", monkeypatch=monkeypatch)
    with open(tmp_path / "tiny" / "variant-warm" / "benchmark" / "results.csv", newline="") as f:
        assert {(r["strategy"], r["seed"]) for r in csv.DictReader(f)} == {("kt", "1")}
    assert (tmp_path / "jobs" / "tiny@warm-kt-1.log").read_text().count("benchmark of kt") >= 1


def test_precision_pairs_tiny_mode_pairs_the_shipped_speed_with_float32(tmp_path, monkeypatch, capsys):
    from napari_ktal.core.engine import describe_speed
    import torch

    out = tmp_path / "pairs.json"
    _run("precision_pairs.py", "--tiny", "--seeds", "0,1", "--parallel", "2", "--threads", "1",
         "--out", str(out), monkeypatch=monkeypatch)
    report = json.loads(out.read_text())
    pairs = report["sets"]["tiny"]["pairs"]
    assert [p["seed"] for p in pairs] == [0, 1] and [p["order"][0] for p in pairs] == ["auto", "fp32"]
    for p in pairs:
        assert p["auto"]["epochs"] == p["fp32"]["epochs"] == 2  # same steps
        assert p["auto"]["speed"] == describe_speed(None, torch.device("cpu"))
        assert p["fp32"]["speed"] == "training fp32; scoring fp32"
        assert math.isfinite(p["auto"]["teacher_loss"]) and math.isfinite(p["fp32"]["teacher_loss"])
        assert p["speedup"] == pytest.approx(p["fp32"]["train_s"] / p["auto"]["train_s"])
    assert report["sets"]["tiny"]["summary"]["pairs"] == 2 and isinstance(report["machine"]["native_bf16"], bool)
    assert "tiny: " in capsys.readouterr().out


def test_verdict_report_counts_steps_from_recorded_epochs_where_the_recipe_does_not_fix_them():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import verdict_report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from napari_ktal.core.loop import load_recipe

    quick = load_recipe("quick")  # fit_loss: the epochs a cycle trains depend on the loss
    fixed = quick.replace(train={"fit_loss": 0.0})
    budgets = [100, 150]  # 4 and 5 steps of 32 per epoch; the floor of 300 steps: 75 and 60 epochs
    assert verdict_report.run_steps(fixed, budgets, 10) == 75 * 4 + 60 * 5
    rows = [{"strategy": "kt", "seed": "0", "cycle": "0", "epochs": "80"},
            {"strategy": "kt", "seed": "0", "cycle": "1", "epochs": "60"},
            {"strategy": "kt", "seed": "1", "cycle": "0", "epochs": "100"},
            {"strategy": "kt", "seed": "1", "cycle": "1", "epochs": "70"},
            {"strategy": "kt", "seed": "2", "cycle": "0", "epochs": "90"},  # unfinished: not counted
            {"strategy": "random", "seed": "0", "cycle": "0", "epochs": "75"},
            {"strategy": "random", "seed": "0", "cycle": "1", "epochs": "60"}]
    assert verdict_report.run_steps(quick, budgets, 10, rows, "kt") == ((80 * 4 + 60 * 5) + (100 * 4 + 70 * 5)) / 2
    assert verdict_report.run_steps(quick, budgets, 10, rows, "kt", {1}) == 100 * 4 + 70 * 5
    assert verdict_report.run_steps(quick, budgets, 10, [{**r, "epochs": ""} for r in rows], "kt") is None
    assert verdict_report._steps_cell(None, 620.0) == "not recorded / 620"
    assert verdict_report._steps_cell(310.0, 620.0) == "310 / 620 (0.50x)"
