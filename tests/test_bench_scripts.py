"""The benchmark scripts: each one starts (its --help), and the one that reads a finished run directory
(bench/bg_gap_masks.py) computes the BG-Gap the report computes, from the same saved predictions."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "bench").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_bench_script_starts(script: Path) -> None:
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()


def test_bg_gap_masks_reads_a_run_directory_as_the_report_does(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from bglab.experiment.config import parse_config
    from bglab.experiment.runner import run_experiment
    from tests.test_experiment import micro_config, write_shapes

    root = write_shapes(tmp_path / "data", 30, 0)
    raw = micro_config(root, studies={"s": {"arms": ["original", "keyed"], "test_arms": ["original", "keyed"],
                                            "bg_gap": ["original", "keyed"]}},
                       train={"epochs": 1, "batch_size": 16, "lr": 0.003, "eval_every": 1})
    run = tmp_path / "run"
    summary = run_experiment(parse_config(raw), run)
    cfg_file = tmp_path / "micro.yaml"
    cfg_file.write_text(yaml.safe_dump(raw), encoding="utf-8")

    spec = importlib.util.spec_from_file_location("bg_gap_masks", REPO / "bench" / "bg_gap_masks.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "gaps.json"
    assert script.main([str(cfg_file), str(run), "--pair", "mine=original,keyed", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["train_arm"], r["test_set"]) for r in rows} == {(a, t) for a in ("original", "keyed")
                                                               for t in ("screen", "clutter")}
    for r in rows:
        want = summary["bg_gap"]["cross"][r["test_set"]][r["train_arm"]]["mean"]
        assert r["mine"]["gap"] == pytest.approx(want)
        assert r["mine"]["seeds"] == [0]
    with pytest.raises(SystemExit):
        script.main([str(cfg_file), str(run), "--pair", "broken"])
