"""The benchmark scripts: each one starts (its --help), and the one that reads a finished run directory
(bench/bg_gap_masks.py) computes the BG-Gap the report computes, from the same saved predictions."""

from __future__ import annotations

import csv
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

    script = _script("bg_gap_masks")
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


def _script(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_audit_scores_every_line_without_the_struck_groups(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    import numpy as np

    from bglab.data.dataset import default_group
    from bglab.experiment.config import parse_config
    from bglab.experiment.runner import run_experiment
    from tests.test_experiment import micro_config, write_shapes

    root = write_shapes(tmp_path / "data", 30, 0)
    studies = {"s": {"arms": ["original", "keyed"], "ensembles": {"both": ["original", "keyed"]}}}
    raw = micro_config(root, studies=studies,
                       train={"epochs": 1, "batch_size": 16, "lr": 0.003, "eval_every": 1})
    run = tmp_path / "run"
    run_experiment(parse_config(raw), run)
    cfg_file = tmp_path / "micro.yaml"
    cfg_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    classes = json.loads((run / "data.json").read_text())["classes"]
    with np.load(run / "predictions" / "cross__original__base__s0" / "clutter__clean.npz") as z:
        keys, y_true, y_pred = z["keys"], z["y_true"], z["y_pred"]
    groups = [f"{classes[int(y)]}/{default_group(Path(str(k)).name)}" for k, y in zip(keys, y_true, strict=True)]
    struck = {groups[0], groups[-1]}
    audit = tmp_path / "audit.csv"
    audit.write_text("group,judgement,note\n" + "".join(f"{g},wrong label,by eye\n" for g in struck),
                     encoding="utf-8")
    out = tmp_path / "audit.json"
    assert _script("label_audit").main([str(cfg_file), str(run), str(audit), "--json", str(out)]) == 0
    rows = {(r["test_set"], r["line"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(t, line) for t in ("screen", "clutter") for line in ("original", "keyed", "both")}
    keep = np.array([g not in struck for g in groups])
    got = rows[("clutter", "original")]["seeds"][0]
    assert got["struck"] == int((~keep).sum()) >= 2
    assert got["all"] == pytest.approx(float((y_true == y_pred).mean()))
    assert got["kept"] == pytest.approx(float((y_true == y_pred)[keep].mean()))
    both = rows[("clutter", "both")]["seeds"][0]
    assert both["struck"] == got["struck"] and both["n"] == got["n"]  # the ensemble: the same photos
    bad = tmp_path / "bad.csv"
    bad.write_text("photo,label\na,b\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="columns group, judgement"):
        _script("label_audit").main([str(cfg_file), str(run), str(bad)])


def test_bench_segment_nohand_set_scores_empty_truth_and_leaves_out_trained_pets(tmp_path: Path) -> None:
    """`--sets nohand`: background and pet photos with an empty truth; a candidate's trained pets3 photos
    (its splits.json) are left out; an empty mask scores 1 there and a mask with foreground 0."""
    import cv2
    import numpy as np

    spec = importlib.util.spec_from_file_location("bench_segment", REPO / "bench" / "bench_segment.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (tmp_path / "backgrounds").mkdir()
    (tmp_path / "pets3" / "Bengal" / "images").mkdir(parents=True)
    img = np.full((40, 60, 3), 120, np.uint8)
    cv2.imwrite(str(tmp_path / "backgrounds" / "room.jpg"), img)
    for stem in ("Bengal_1", "Bengal_2"):
        cv2.imwrite(str(tmp_path / "pets3" / "Bengal" / "images" / f"{stem}.jpg"), img)
    split = tmp_path / "splits.json"
    split.write_text(json.dumps({"real_train": ["Bengal/Bengal_1"], "real_val": []}))
    items = bench.nohand_set(tmp_path, split)
    assert [k for k, _, _ in items] == ["backgrounds/room", "Bengal/Bengal_2"]
    assert len(bench.nohand_set(tmp_path, None)) == 3

    class Fixed:  # a segmenter that finds "a hand" in the first image only
        def __init__(self) -> None:
            self.calls = 0

        def predict(self, image, *, source=None):  # noqa: ANN001, ANN202
            self.calls += 1
            m = np.zeros(image.shape[:2], np.float32)
            if self.calls == 1:
                m[:10, :10] = 1.0
            return m

    res = bench.run_one(Fixed(), items, 1)
    assert res["iou"] == pytest.approx(0.5) and res["qc"]["not-found"] == 1
    assert res["fg_mean"] == pytest.approx(100 / 2400 / 2, abs=1e-4)


def test_sxsw_clips_groups_frames_of_one_recording(tmp_path: Path) -> None:
    """bench/sxsw_clips.py: frames of one video / EgoHands session share a group across classes; Roboflow's
    copies of a photo fall together; sessions split at gaps over 10 minutes."""
    clips = _script("sxsw_clips")
    names = {
        "rock": ["training__rock.egohands-public-1620914959610_png_jpg.rf.aa_01.jpg",
                 "training__rock.IMG_7043_MOV-142_jpg.rf.bb_02.jpg",
                 "training__rock.Screen-Shot-2022-02-08-at-12-51-02-PM_png.rf.cc_03.jpg",
                 "training__rock.0101_png.rf.dd_04.jpg"],
        "paper": ["training__paper.egohands-public-1620914960773_png_jpg.rf.ee_05.jpg",
                  "training__paper.egohands-public-1620914960773_png_jpg.rf.ff_06.jpg",
                  "training__paper.egohands-public-1620999999999_png_jpg.rf.gg_07.jpg",
                  "training__paper.IMG_7043_MOV-9_jpg.rf.hh_08.jpg",
                  "training__paper.20220216_222247_jpg.rf.ii_09.jpg",
                  "training__paper.youtube-17_jpg.rf.jj_10.jpg"],
    }
    for label, files in names.items():
        (tmp_path / "sxsw" / label).mkdir(parents=True)
        for f in files:
            (tmp_path / "sxsw" / label / f).write_bytes(b"")
    out = tmp_path / "clips.csv"
    assert clips.main([str(tmp_path / "sxsw"), str(out)]) == 0
    with out.open() as fh:
        group = {Path(r["path"]).name.split(".rf.")[1]: r["group"] for r in csv.DictReader(fh)}
    assert group["aa_01.jpg"] == group["ee_05.jpg"] == group["ff_06.jpg"] == "egohands/00"  # 1.2 s apart
    assert group["gg_07.jpg"] == "egohands/01"                                             # a day later
    assert group["bb_02.jpg"] == group["hh_08.jpg"] == "video/IMG_7043"
    assert group["cc_03.jpg"] == "Screen-Shot/2022-02-08" and group["ii_09.jpg"] == "phone/20220216"
    assert group["dd_04.jpg"] == "numbered-frames" and group["jj_10.jpg"] == "youtube"


@pytest.mark.parametrize("script", sorted((REPO / "bench").glob("*.sh")), ids=lambda p: p.name)
def test_every_bench_shell_script_parses(script: Path) -> None:
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_train_layout_bench_times_both_layouts(tmp_path: Path) -> None:
    """bench/bench_train_layout.py: one row per model and layout with a positive rate, and the speed-up row."""
    pytest.importorskip("torch")
    bench = _script("bench_train_layout")
    out = tmp_path / "layout.json"
    assert bench.main(["--models", "unet,effunet", "--size", "64", "--batch", "2", "--steps", "1",
                       "--repeats", "2", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    timed = [(r["model"], r["layout"]) for r in rows if r["layout"] != "speed-up"]
    assert timed == [("unet", "nchw"), ("unet", "channels_last"), ("effunet", "nchw"), ("effunet", "channels_last")]
    assert all(r["img_per_s_median"] > 0 and len(r["rounds"]) == 2 for r in rows if r["layout"] != "speed-up")
    assert [r["channels_last_over_nchw"] > 0 for r in rows if r["layout"] == "speed-up"] == [True, True]


def test_bench_experiment_gives_pretrained_studies_the_two_minute_quick_target() -> None:
    """The issue's --quick target is 2 min for a study on a pretrained backbone (found in its variants, the
    pose reader's frozen fallback included), 5 min otherwise; a config is named as the CLI takes it."""
    bench = _script("bench_experiment")
    assert [bench._uses_pretrained(c) for c in ("rps-reference", "rps-recipe", "rps-pretrained", "rps-ensemble-lite2",
                                                "rps-handpose", "pets3-pretrained")] == [False, False, True, True,
                                                                                         True, True]
