"""Issue 18, parts 2 and 3: verdicts that check their inputs, honest intervals, the power note, early config checks.

The rules on synthetic correctness arrays (fast), then a real micro experiment through the ``bglab experiment``
command (2 seeds, barely trained: the issue's "small user experiment").
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bglab.errors import BackendError, ConfigError, DatasetError
from bglab.experiment import checks, stats
from tests.test_experiment import data_root, micro_config  # noqa: F401 - data_root is a fixture

N = 90  # test images, 3 balanced classes


def _correct(acc: float, seeds: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((seeds, N)) < acc


def _at_chance(seeds: int) -> np.ndarray:
    """A model that answers one class for everything: right on exactly a third of the images."""
    row = np.zeros(N, bool)
    row[: N // 3] = True
    return np.stack([row] * seeds)


# ---------------------------------------------------------------------------------------------- the checks


def test_chance_check_flags_an_arm_whose_interval_includes_chance() -> None:
    chance = checks.chance_rate(3, [30, 30, 30])
    assert chance == pytest.approx(1 / 3) and checks.chance_rate(3, [60, 20, 10]) == pytest.approx(60 / 90)
    why = checks.chance_check("original", "webcam", _at_chance(1), chance)
    assert "at chance" in why and "33.3 %" in why
    assert checks.chance_check("remove", "webcam", _correct(0.9, 3), chance) == ""


def test_training_check_flags_low_and_rising_train_accuracy_only() -> None:
    rising = {1: 0.40, 2: 0.54, 3: 0.66, 4: 0.76}
    assert "under-trained" in checks.training_check("original", rising)
    assert checks.training_check("original", {**rising, 4: 0.97}) == "", "converged"
    assert checks.training_check("original", {1: 0.70, 2: 0.75, 3: 0.76, 4: 0.76}) == "", "a plateau, not rising"


def test_fewer_than_three_seeds_is_inconclusive_not_rejected() -> None:
    """Issue 18: 2 seeds, arms at chance, and a bold ``REJECTED ... (p=0.036)``."""
    a, b = _at_chance(2), _correct(0.7, 2)
    c = stats.compare("original", "remove", "webcam", a, b, n_boot=500)
    assert stats.verdict([c])[0], "the raw paired test alone rejects"
    problems = [[checks.seeds_check(2), checks.chance_check("original", "webcam", a, 1 / 3, n_boot=500)]]
    v = checks.checked_verdict([c], problems, [checks.min_detectable_difference(a, b)])
    assert v.status == "inconclusive" and not v.rejected
    assert "REJECTED" not in v.text and "INCONCLUSIVE" in v.text
    assert "2 seed" in v.text and "at chance" in v.text and "cannot back" in v.text


def test_checked_inputs_may_reject_and_not_rejected_reads_as_not_detected() -> None:
    a, b = _correct(0.6, 3, 1), _correct(0.95, 3, 2)
    c = stats.compare("original", "remove", "webcam", a, b, n_boot=500)
    v = checks.checked_verdict([c], [[]], [checks.min_detectable_difference(a, b)])
    assert v.status == "rejected" and v.rejected and "REJECTED" in v.text
    same = _correct(0.8, 3, 3)
    c0 = stats.compare("original", "remove", "webcam", same, same, n_boot=300)
    mde = checks.min_detectable_difference(same, same)
    v0 = checks.checked_verdict([c0], [[]], [mde])
    assert v0.status == "not rejected" and "no difference detected at this size" in v0.text
    assert f"{100 * mde:.1f} points" in v0.text and 0 < mde < 1


def test_min_detectable_difference_shrinks_with_more_test_images() -> None:
    small = checks.min_detectable_difference(_correct(0.7, 3, 4)[:, :30], _correct(0.7, 3, 5)[:, :30])
    large = checks.min_detectable_difference(_correct(0.7, 3, 4), _correct(0.7, 3, 5))
    assert 0 < large < small <= 1


def test_no_t_interval_over_two_seeds_and_intervals_stay_in_range() -> None:
    """Issue 18: a 95 % CI over seeds of ``[-105.5, 141.6]`` and final-accuracy intervals ``[0.0, 100.0]``."""
    from bglab.experiment.report import _ci, _ci_cell

    c2 = stats.compare("a", "b", "t", _correct(0.3, 2, 6), _correct(0.8, 2, 7), n_boot=200)
    assert math.isnan(c2.seed_ci[0]) and math.isnan(c2.seed_ci[1])
    c3 = stats.compare("a", "b", "t", _correct(0.1, 3, 6), _correct(0.95, 3, 7), n_boot=200)
    assert -1.0 <= c3.seed_ci[0] <= c3.seed_ci[1] <= 1.0
    cell = _ci([0.33, 0.70])
    assert math.isnan(cell["lo"]) and _ci_cell(cell) == "51.5 (n=2)"
    cell["img_lo"], cell["img_hi"] = 0.41, 0.62
    assert _ci_cell(cell) == "51.5 [41.0, 62.0] img"
    three = _ci([0.98, 0.99, 1.0])
    assert three["hi"] <= 1.0 and three["lo"] >= 0.0


# ------------------------------------------------------------------------------- a real micro experiment


def _write(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def test_experiment_command_prints_the_table_and_an_inconclusive_verdict(data_root: Path, tmp_path: Path,  # noqa: F811
                                                                          capsys) -> None:
    """Issue 18: 2 seeds, barely trained: the terminal printed only a REJECTED line; the report [0.0, 100.0]."""
    from bglab.cli.app import main

    raw = micro_config(data_root, seeds=[0, 1], evaluate={"distortions": {}, "bootstrap": 200},
                       train={"epochs": 2, "batch_size": 16, "lr": 0.0003, "eval_every": 1})
    out = tmp_path / "run"
    assert main(["experiment", str(_write(tmp_path / "m.yaml", raw)), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "final accuracy" in text and "test screen" in text and "test clutter" in text
    assert "img" in text or "(n=2)" in text, "two seeds: no t-interval, the image bootstrap or n"
    assert "REJECTED" not in text and "INCONCLUSIVE" in text and "2 seed(s)" in text
    summary = json.loads((out / "summary.json").read_text())
    (v,) = [v for v in summary["verdicts"] if v["distortion"] == "clean"]
    assert v["status"] == "inconclusive" and not v["rejected"] and v["reasons"]
    html = (out / "report.html").read_text()
    assert "[0.0, 100.0]" not in html and "INCONCLUSIVE" in html and "needs 3" in html
    # the keyed arm's chroma key finds no screen on the clutter photos: kept, but counted and named as suspect
    sus = json.loads((out / "data.json").read_text())["suspect_masks"]
    assert set(sus) == {"keyed"} and sus["keyed"]["count"] >= 90 and "full" in sus["keyed"]["examples"][0]
    assert "failed QC" in html
    for c in summary["analysis"]["studies"]["main"]["protocols"]["cross"]["comparisons"]:
        assert c["seed_ci"] == [None, None] and c["problems"] and 0 < c["min_detectable"] <= 1


def test_quick_without_a_quick_section_is_refused(data_root: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    """Issue 18: ``--quick`` on a config without ``quick:`` silently ran the full profile."""
    from bglab.cli.app import main
    from bglab.experiment.config import parse_config

    with pytest.raises(ConfigError, match="no quick: section") as info:
        parse_config(micro_config(data_root), quick=True)
    assert "quick: {seeds" in (info.value.hint or "")
    out = tmp_path / "run"
    assert main(["experiment", str(_write(tmp_path / "m.yaml", micro_config(data_root))), "--quick",
                 "--out", str(out)]) != 0
    assert "quick" in capsys.readouterr().err and not out.exists()


def test_bad_source_or_missing_backend_fails_before_the_run_directory(data_root: Path, tmp_path: Path,  # noqa: F811
                                                                      monkeypatch) -> None:
    """Issue 18: a bad source path failed only after the run directory was created."""
    from bglab.experiment.config import parse_config
    from bglab.experiment.runner import run_experiment
    from bglab.foreground import registry

    raw = micro_config(data_root)
    raw["sources"]["clutter"] = {"path": str(tmp_path / "no-such-folder")}
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match="clutter"):
        run_experiment(parse_config(raw), out)
    assert not out.exists()
    monkeypatch.setitem(registry._BACKENDS, "needs-extra", registry.BackendInfo(
        "needs-extra", "segmenter", "bglab.foreground.chroma", "create", "test", extra="x",
        requires=("bglab_no_such_module",)))
    raw = micro_config(data_root, arms={"original": [], "odd": [{"segment": {"backend": "needs-extra"}},
                                                                 {"background": {"mode": "remove"}}]})
    with pytest.raises(BackendError, match="needs-extra.*not available"):
        run_experiment(parse_config(raw), out)
    assert not out.exists()
