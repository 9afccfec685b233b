"""Label check: test photos that every run gives the same wrong class (candidate label errors), on hand-made
predictions: agreement, disagreement, too few runs, runs that read different photos or disagree on a label."""

from __future__ import annotations

import numpy as np

from bglab.experiment.label_check import MIN_RUNS, agreed_errors

KEYS = np.array(["a", "b", "c", "d", "e"])
Y = np.array([0, 1, 2, 0, 1])


def _run(pred: list[int], keys: np.ndarray = KEYS, y: np.ndarray = Y) -> dict[str, np.ndarray]:
    return {"keys": keys, "y_true": y, "y_pred": np.asarray(pred)}


def test_photos_every_run_calls_the_same_other_class_are_flagged() -> None:
    # a: all right; b: all say 2 (flagged); c: wrong but split between 0 and 1 (not flagged); d: all say 1 (flagged)
    runs = [_run([0, 2, 0 if i % 2 else 1, 1, 1]) for i in range(MIN_RUNS)]
    got = agreed_errors(runs, ["paper", "rock", "scissors"])
    assert got is not None
    assert (got["runs"], got["photos"], got["count"]) == (MIN_RUNS, 5, 2)
    assert got["share"] == 0.4 and got["ceiling"] == 0.6
    assert got["suspects"] == [{"key": "b", "label": "rock", "predicted": "scissors"},
                               {"key": "d", "label": "paper", "predicted": "rock"}]
    # one run right on b is enough to clear it
    runs[3] = _run([0, 1, 1, 1, 1])
    got = agreed_errors(runs)
    assert got is not None and [s["key"] for s in got["suspects"]] == ["d"] and got["suspects"][0]["label"] == "0"
    assert agreed_errors(runs, limit=0)["suspects"] == [] and agreed_errors(runs, limit=0)["count"] == 1


def test_too_few_runs_flag_nothing() -> None:
    runs = [_run([1, 1, 1, 1, 1])] * (MIN_RUNS - 1)
    assert agreed_errors(runs) is None
    assert agreed_errors(runs, min_runs=MIN_RUNS - 1)["count"] == 3  # a, c, d
    assert agreed_errors([]) is None


def test_runs_are_aligned_by_key_and_photos_a_run_could_not_read_are_left_out() -> None:
    order = np.array([4, 2, 0, 3, 1])
    runs = [_run([0, 2, 2, 1, 1])] * (MIN_RUNS - 1)
    # the same predictions in another order, without photo "c" (unreadable in that run's arm)
    shuffled = _run(np.array([0, 2, 2, 1, 1])[order], keys=KEYS[order], y=Y[order])
    keep = shuffled["keys"] != "c"
    runs.append({k: v[keep] for k, v in shuffled.items()})
    got = agreed_errors(runs)
    assert got is not None and got["photos"] == 4
    assert [s["key"] for s in got["suspects"]] == ["b", "d"]


def test_runs_that_disagree_on_a_label_or_share_no_photo_are_not_checked() -> None:
    runs = [_run([1, 1, 1, 1, 1])] * MIN_RUNS
    assert agreed_errors([*runs[1:], _run([1, 1, 1, 1, 1], y=np.array([0, 1, 2, 0, 2]))]) is None
    assert agreed_errors([*runs[1:], _run([1], keys=np.array(["z"]), y=np.array([0]))]) is None


def test_the_terminal_names_each_test_set_with_flagged_photos() -> None:
    from bglab.cli.experiment import label_check_lines

    check = {"runs": 12, "photos": 751, "count": 7, "share": 7 / 751, "ceiling": 744 / 751, "suspects": []}
    summary = {"label_check": {"background": {"combined": {"sxsw": check, "webcam": {**check, "count": 0}}}}}
    assert label_check_lines(summary) == [
        "background / combined: 7 of 751 sxsw test photos get the same wrong class from all 12 runs: check their "
        "labels (report: Photos every model gets wrong)"]
    assert label_check_lines({}) == []


def test_flagged_photos_are_found_in_folder_sources_and_drawn(tmp_path) -> None:
    import base64

    import cv2
    import pytest

    pytest.importorskip("matplotlib")
    from bglab.experiment.config import parse_config
    from bglab.experiment.figures import photos_fig
    from bglab.experiment.report import _photo_path

    for rel in ("shots/rock/a.png", "shots/paper/deeper/b.png", "shots/paper/deeper/c[1].png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), np.full((20, 30, 3), 90, np.uint8))
    cfg = parse_config({"name": "t", "sources": {"shots": {"path": str(tmp_path / "shots")}},
                        "protocols": {"p": {"split": {"shots": [0.6, 0.2, 0.2]}, "test_sets": {"shots": "shots/test"}}},
                        "arms": {"original": []}})
    assert _photo_path(cfg, "shots/rock/a.png") == tmp_path / "shots/rock/a.png"
    assert _photo_path(cfg, "shots/paper/b.png") == tmp_path / "shots/paper/deeper/b.png"  # in a subfolder
    assert _photo_path(cfg, "shots/paper/c[1].png") == tmp_path / "shots/paper/deeper/c[1].png"  # not a pattern
    assert _photo_path(cfg, "shots/rock/gone.png") is None and _photo_path(cfg, "other/rock/a.png") is None
    sheet = photos_fig([(tmp_path / "shots/rock/a.png", "rock -> paper"), (None, "paper -> rock")])
    png = base64.b64decode(sheet)
    assert png.startswith(b"\x89PNG") and cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape[1] > 60
    assert photos_fig([]) is None
    from bglab.experiment.report import _label_check_html

    def section(keys: list[str]) -> str:
        check = {"runs": 6, "photos": 10, "count": len(keys), "share": len(keys) / 10, "ceiling": 1 - len(keys) / 10,
                 "suspects": [{"key": k, "label": "rock", "predicted": "paper"} for k in keys]}
        return _label_check_html({"label_check": {"shots": check}}, cfg)

    assert "data:image/png" in section(["shots/rock/a.png", "shots/rock/gone.png"])
    text = section(["shots/rock/gone.png"])  # no file found (e.g. a CSV source): the table alone, no grey sheet
    assert "data:image/png" not in text and "shots/rock/gone.png" in text
    assert "no model can score above 90.0 %" in text


def test_eval_cls_scores_check_the_runs_per_protocol_and_write_every_answer() -> None:
    from bglab.experiment.evaluate import Scores

    rows = [{"run": f"{proto}__a__b__s{s}", "protocol": proto, "arm": "a"} for proto in ("cross", "comb")
            for s in range(MIN_RUNS)]
    rows.append({"run": "cross__all__s0", "protocol": "cross", "arm": "ensemble"})  # ensembles do not vote
    labels = np.array([0, 1, 2])
    predicted = {r["run"]: np.array([1, 1, 2]) for r in rows}
    predicted["comb__a__b__s0"] = np.array([-1, 0, 2])  # could not read photo 0; wrong on photo 1
    predicted["cross__all__s0"] = np.array([0, 1, 2])
    scores = Scores(rows, ["p/x.png", "p/y.png", "p/z.png"], labels, ["paper", "rock", "scissors"], predicted, {})
    checks = scores.label_check()
    assert checks["cross"]["runs"] == MIN_RUNS and checks["cross"]["suspects"] == [
        {"key": "p/x.png", "label": "paper", "predicted": "rock"}]
    assert checks["comb"]["photos"] == 2 and checks["comb"]["count"] == 0  # photo 0 unread by one run
    lines = scores.predictions_csv().splitlines()
    assert lines[0] == "path,label," + ",".join(r["run"] for r in rows)
    assert lines[1].startswith("p/x.png,paper,rock,") and ",," in lines[1] and lines[1].endswith(",paper")
    assert len(lines) == 4
