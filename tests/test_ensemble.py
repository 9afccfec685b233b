"""Ensembles: the soft vote on hand-made probabilities, config errors naming the key, and a micro study end to
end (the fused line's accuracy recomputed from the saved probabilities, compared with each member; an ensemble
added to a finished run directory without retraining; probabilities added to predictions saved without them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from bglab.errors import ConfigError  # noqa: E402
from bglab.experiment.config import parse_config  # noqa: E402
from bglab.experiment.ensemble import fuse  # noqa: E402
from tests.test_experiment import _one_thread, data_root, micro_config  # noqa: E402, F401

KEYS = np.array(["a", "b", "c", "d"])
Y = np.array([0, 1, 2, 0])


def _member(probs: list[list[float]], keys: np.ndarray = KEYS, y: np.ndarray = Y) -> dict[str, np.ndarray]:
    p = np.asarray(probs, np.float32)
    return {"y_true": y, "y_pred": p.argmax(1), "keys": keys, "probs": p}


def test_soft_vote_is_right_where_each_member_alone_is_not() -> None:
    a = _member([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.0, 0.2, 0.8], [0.4, 0.6, 0.0]])  # wrong on b, d
    b = _member([[0.1, 0.9, 0.0], [0.0, 1.0, 0.0], [0.4, 0.0, 0.6], [1.0, 0.0, 0.0]])  # wrong on a
    f = fuse([a, b])
    assert f is not None
    np.testing.assert_allclose(f["probs"], (a["probs"] + b["probs"]) / 2, atol=1e-7)
    assert f["y_pred"].tolist() == [0, 1, 2, 0]
    assert (a["y_pred"] == Y).mean() == 0.5 and (b["y_pred"] == Y).mean() == 0.75 and (f["y_pred"] == Y).all()
    assert f["keys"].tolist() == KEYS.tolist() and f["y_true"].tolist() == Y.tolist()


def test_soft_vote_refuses_members_that_do_not_line_up() -> None:
    a = _member([[1, 0, 0]] * 4)
    assert fuse([a, _member([[1, 0, 0]] * 4, keys=KEYS[::-1])]) is None  # other images
    assert fuse([a, _member([[1, 0, 0]] * 4, y=Y[::-1])]) is None  # other labels
    assert fuse([a, {k: v for k, v in a.items() if k != "probs"}]) is None  # saved without probabilities
    assert fuse([a, _member([[1, 0]] * 4)]) is None  # another number of classes
    assert fuse([]) is None


def _study(**ens: object) -> dict:
    return {"s": {"protocols": ["cross"], "arms": ["original", "keyed"], "variants": ["base", "wide"],
                  **({"ensembles": ens} if ens else {})}}


_VARIANTS = {"base": {}, "wide": {"model": {"widths": [12, 24]}}}


@pytest.mark.parametrize(("ens", "key", "msg"), [
    ({"e": ["original/base"]}, "studies.s.ensembles.e", "two or more"),
    ({"e": "original/base"}, "studies.s.ensembles.e", "two or more"),
    ({"e": ["original/base", "blur/base"]}, "studies.s.ensembles.e[1]", "not a run of this study"),
    ({"e": ["original/base", "original/none"]}, "studies.s.ensembles.e[1]", "not a run of this study"),
    ({"e": ["original/base", "original"]}, "studies.s.ensembles.e[1]", "ARM/VARIANT"),
    ({"e": ["original/base", "original/base"]}, "studies.s.ensembles.e[1]", "twice"),
    ({"keyed": ["original/base", "keyed/base"]}, "studies.s.ensembles.keyed", "already an arm"),
    ({"bad name": ["original/base", "keyed/base"]}, "studies.s.ensembles.bad name", "letters, digits"),
])
def test_ensemble_config_errors_name_the_key(data_root: Path, ens: dict, key: str, msg: str) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=msg) as exc:
        parse_config(micro_config(data_root, studies=_study(**ens), variants=_VARIANTS))
    assert str(exc.value).startswith(f"{key}: ")


def test_member_may_name_the_arm_or_the_variant_alone_when_the_other_is_one(data_root: Path) -> None:  # noqa: F811
    arms = {"s": {"protocols": ["cross"], "arms": ["original", "keyed"], "ensembles": {"both": ["original", "keyed"]}}}
    cfg = parse_config(micro_config(data_root, studies=arms))
    assert cfg.studies["s"].ensembles == {"both": (("original", "base"), ("keyed", "base"))}
    variants = {"s": {"protocols": ["cross"], "arms": ["keyed"], "variants": ["base", "wide"],
                      "ensembles": {"both": ["base", "wide"]}}}
    cfg = parse_config(micro_config(data_root, studies=variants, variants=_VARIANTS))
    assert cfg.studies["s"].ensembles == {"both": (("keyed", "base"), ("keyed", "wide"))}


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].copy() for k in z.files}


def test_ensemble_line_in_a_micro_study_and_added_later_without_retraining(data_root: Path,  # noqa: F811
                                                                          tmp_path: Path) -> None:
    from bglab.experiment.runner import run_experiment

    train = {"epochs": 2, "batch_size": 16, "lr": 0.003, "eval_every": 1}
    seeds = [0, 1]
    run_experiment(parse_config(micro_config(data_root, seeds=seeds, studies=_study(), variants=_VARIANTS,
                                             train=train)), tmp_path)
    # predictions saved before probabilities were stored: take them out of one member's files
    member = tmp_path / "predictions" / "cross__keyed__wide__s1"
    saved = {p.name: _npz(p) for p in member.glob("*.npz")}
    assert saved and all(v["probs"].shape == (len(v["keys"]), 3) for v in saved.values())
    for name, arrays in saved.items():
        np.savez(member / name, **{k: v for k, v in arrays.items() if k != "probs"})

    lines: list[str] = []
    cfg = parse_config(micro_config(data_root, seeds=seeds, variants=_VARIANTS, train=train,
                                    studies=_study(both=["original/base", "keyed/wide"])))
    summary = run_experiment(cfg, tmp_path, log=lines.append)
    assert set(summary["runs"].values()) == {"skipped"}  # nothing retrained
    assert any("class probabilities added to" in line and "cross__keyed__wide__s1" in line for line in lines)
    for name, arrays in saved.items():  # scored again from the checkpoint: the same probabilities
        again = _npz(member / name)
        np.testing.assert_allclose(again["probs"], arrays["probs"], atol=1e-6)
        assert np.array_equal(again["y_pred"], arrays["y_pred"])
    assert "ensembles" in (tmp_path / "config.yaml").read_text(encoding="utf-8")

    res = summary["analysis"]["studies"]["s"]["protocols"]["cross"]
    assert "both" in res["lines"]
    assert summary["analysis"]["studies"]["s"]["ensembles"] == {"both": ["original / base", "keyed / wide"]}
    for test in ("screen", "clutter"):
        for dist in ("clean", "noise25"):
            want = []
            for s in seeds:
                a = _npz(tmp_path / "predictions" / f"cross__original__base__s{s}" / f"{test}__{dist}.npz")
                b = _npz(tmp_path / "predictions" / f"cross__keyed__wide__s{s}" / f"{test}__{dist}.npz")
                assert np.array_equal(a["keys"], b["keys"])
                want.append(float(((a["probs"] + b["probs"]).argmax(1) == a["y_true"]).mean()))
            cell = res["final"]["both"][f"{test}|{dist}"]
            assert cell["values"] == pytest.approx(want) and cell["mean"] == pytest.approx(np.mean(want))
    comps = [c for c in res["comparisons"] if c["what"] == "combining the models"]
    assert {(c["a"], c["b"]) for c in comps} == {("original / base", "both"), ("keyed / wide", "both")}
    assert any("Combining the models does not matter" in v["text"] for v in res["verdicts"])
    assert f"{'both'}|screen" in res["confusion"] and f"{'both'}|screen" in res["per_class"]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert ">both<" in html and "<code>both</code> = original / base + keyed / wide" in html
    written = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert "both" in written["analysis"]["studies"]["s"]["protocols"]["cross"]["lines"]
    # the label check: photos all 8 trained runs (not the ensemble) give the same wrong class, recomputed here
    for test in ("screen", "clutter"):
        runs = [_npz(tmp_path / "predictions" / f"cross__{a}__{v}__s{s}" / f"{test}__clean.npz")
                for a in ("original", "keyed") for v in ("base", "wide") for s in seeds]
        assert all(np.array_equal(r["keys"], runs[0]["keys"]) for r in runs)
        votes = np.stack([r["y_pred"] for r in runs])
        flagged = (votes == votes[0]).all(0) & (votes[0] != runs[0]["y_true"])
        check = written["label_check"]["s"]["cross"][test]
        assert check["runs"] == 8 and check["photos"] == len(runs[0]["keys"])
        assert [x["key"] for x in check["suspects"]] == sorted(runs[0]["keys"][flagged].tolist())
        assert check["count"] == int(flagged.sum()) and check["ceiling"] == pytest.approx(1 - flagged.mean())
    assert "Photos every model gets wrong" in html and "get the same wrong class from all 8 runs" in html

    # changing the ensemble again keeps the runs; changing what a run trains does not
    cfg2 = parse_config(micro_config(data_root, seeds=seeds, variants=_VARIANTS, train=train,
                                     studies=_study(all4=["original/base", "keyed/base", "original/wide",
                                                          "keyed/wide"])))
    summary2 = run_experiment(cfg2, tmp_path)
    assert set(summary2["runs"].values()) == {"skipped"}
    with pytest.raises(ConfigError, match="different experiment"):
        run_experiment(parse_config(micro_config(data_root, seeds=seeds, variants=_VARIANTS,
                                                 train={**train, "epochs": 3}, studies=_study())), tmp_path)

    # eval-cls scores the ensembles too: on the whole clutter source (the experiment's test set `clutter`, read
    # again through each member's pipeline) the same accuracy per seed as the report's
    from bglab.experiment.evaluate import by_arm, evaluate_run_dir

    rows = evaluate_run_dir(tmp_path, data_root / "clutter")
    ens = sorted((r for r in rows if r["arm"] == "ensemble"), key=lambda r: (r["variant"], r["seed"]))
    assert [(r["variant"], r["seed"]) for r in ens] == [("all4", 0), ("all4", 1)]  # the config.yaml's ensemble now
    assert ens[0]["members"] == ["cross__original__base__s0", "cross__keyed__base__s0", "cross__original__wide__s0",
                                 "cross__keyed__wide__s0"]
    want = summary2["analysis"]["studies"]["s"]["protocols"]["cross"]["final"]["all4"]["clutter|clean"]["values"]
    assert [r["accuracy"] for r in ens] == pytest.approx(want)
    assert ens[0]["n"] == 90 and ens[0]["failed"] == 0
    assert any(a["arm"] == "ensemble" and a["variant"] == "all4" and a["seeds"] == [0, 1] for a in by_arm(rows))

    # each photo's answers (--predictions) agree with the rows, and the label check reads the 8 runs' answers
    from bglab.cli.app import main

    csv_path = tmp_path / "answers.csv"
    assert main(["eval-cls", str(tmp_path), str(data_root / "clutter"), "--json", "--predictions",
                 str(csv_path)]) == 0
    import csv

    with csv_path.open(encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 90 and all(Path(t["path"]).is_file() for t in table)
    for r in rows:
        assert np.mean([t[r["run"]] == t["label"] for t in table]) == pytest.approx(r["accuracy"]), r["run"]
    runs = [r["run"] for r in rows if r["arm"] != "ensemble"]
    assert len(runs) == 8
    flagged = sorted(t["path"] for t in table
                     if len({t[r] for r in runs}) == 1 and t[runs[0]] != t["label"])
    from bglab.experiment.evaluate import score_run_dir

    check = score_run_dir(tmp_path, data_root / "clutter").label_check()["cross"]
    assert check["runs"] == 8 and check["photos"] == 90 and check["count"] == len(flagged)
    assert [x["key"] for x in check["suspects"]] == flagged


@pytest.mark.slow  # the tuned network and the pose reader on the small profile: about 50 s on 2 cores each
@pytest.mark.parametrize(("config", "ensembles"), [("rps-ensemble", ("tuned+pose", "all")),
                                                   ("rps-ensemble-lite2", ("lite2+pose", "all"))])
def test_rps_ensemble_quick_profile_on_shared_data(tmp_path: Path, config: str, ensembles: tuple[str, str]) -> None:
    """The shipped studies with real MediaPipe: every run finishes, both ensembles are scored on every test set
    with the same images as their members, and the summary compares each with its members."""
    pytest.importorskip("mediapipe")
    from conftest import shared_path

    from bglab.experiment.config import load_experiment_config
    from bglab.experiment.runner import run_experiment

    shared_path("rps", "webcam")
    shared_path("rps", "sxsw")
    cfg = load_experiment_config(Path(__file__).resolve().parents[1] / f"bglab/configs/{config}.yaml", quick=True)
    summary = run_experiment(cfg, tmp_path)
    assert summary["complete"] is True and set(summary["runs"].values()) == {"done"} and len(summary["runs"]) == 8
    for proto, tests in (("cross-domain", ("webcam", "sxsw")), ("combined", ("sxsw",))):
        res = summary["analysis"]["studies"]["background"]["protocols"][proto]
        for ens in ensembles:
            for t in tests:
                cell = res["final"][ens][f"{t}|clean"]
                assert cell["n"] == 1 and 0.0 <= cell["mean"] <= 1.0
        assert {c["b"] for c in res["comparisons"] if c["what"] == "combining the models"} == set(ensembles)
    webcam = summary["analysis"]["studies"]["background"]["protocols"]["cross-domain"]["final"][ensembles[0]]
    assert webcam["webcam|clean"]["mean"] >= 0.75  # held-out studio hands: far above chance


def test_eval_cls_reads_a_study_that_leaves_variants_and_protocols_to_their_defaults(data_root: Path,  # noqa: F811
                                                                                     tmp_path: Path) -> None:
    from bglab.experiment.evaluate import evaluate_run_dir
    from bglab.experiment.runner import run_experiment

    studies = {"s": {"arms": ["original", "keyed"], "ensembles": {"both": ["original", "keyed"]}}}
    train = {"epochs": 1, "batch_size": 16, "lr": 0.003, "eval_every": 1}
    summary = run_experiment(parse_config(micro_config(data_root, studies=studies, train=train)), tmp_path)
    rows = evaluate_run_dir(tmp_path, data_root / "screen")
    ens = [r for r in rows if r["arm"] == "ensemble"]
    assert [(r["protocol"], r["variant"], r["seed"]) for r in ens] == [("cross", "both", 0)]
    assert ens[0]["members"] == ["cross__original__base__s0", "cross__keyed__base__s0"] and ens[0]["n"] == 90
    assert summary["analysis"]["studies"]["s"]["protocols"]["cross"]["final"]["both"]["screen|clean"]["n"] == 1


def test_eval_cls_names_an_unreadable_run_config_instead_of_dropping_the_ensembles(data_root: Path,  # noqa: F811
                                                                                   tmp_path: Path) -> None:
    from bglab.errors import BglabError
    from bglab.experiment.evaluate import evaluate_run_dir
    from bglab.experiment.runner import run_experiment

    studies = {"s": {"arms": ["original", "keyed"], "ensembles": {"both": ["original", "keyed"]}}}
    train = {"epochs": 1, "batch_size": 16, "lr": 0.003, "eval_every": 1}
    run_experiment(parse_config(micro_config(data_root, studies=studies, train=train)), tmp_path)
    (tmp_path / "config.yaml").write_text("studies: [unclosed\n", encoding="utf-8")
    with pytest.raises(BglabError, match="cannot read the run directory's config") as exc:
        evaluate_run_dir(tmp_path, data_root / "screen")
    assert "config.yaml" in str(exc.value)
    (tmp_path / "config.yaml").unlink()  # no record at all: the runs alone
    assert {r["arm"] for r in evaluate_run_dir(tmp_path, data_root / "screen")} == {"original", "keyed"}


def test_an_ensemble_is_a_row_of_the_train_x_test_matrix(data_root: Path, tmp_path: Path) -> None:  # noqa: F811
    """A matrix study's ensemble gets its own row: each cell the soft vote of its members' predictions on the
    test images seen through that test arm, recomputed here from the saved probabilities."""
    from bglab.experiment.runner import run_experiment

    studies = {"s": {"arms": ["original", "keyed"], "test_arms": ["original", "keyed"],
                     "ensembles": {"both": ["original", "keyed"]}}}
    train = {"epochs": 1, "batch_size": 16, "lr": 0.003, "eval_every": 1}
    summary = run_experiment(parse_config(micro_config(data_root, studies=studies, train=train)), tmp_path)
    mx = summary["analysis"]["matrix"]
    assert mx["rows"][-1] == "both" and mx["ensembles"] == ["both"]
    assert mx["row_runs"]["both"] == [["original", "base"], ["keyed", "base"]]
    cells = mx["protocols"]["cross"]["cells"]
    for test_arm in ("original", "keyed"):
        members = []
        for arm in ("original", "keyed"):
            npz = tmp_path / "predictions" / f"cross__{arm}__base__s0" / "matrix" / f"clutter__{test_arm}.npz"
            with np.load(npz) as z:
                members.append({k: z[k] for k in ("y_true", "keys", "probs")})
        probs = (members[0]["probs"].astype(np.float64) + members[1]["probs"]) / 2
        want = float((probs.argmax(1) == members[0]["y_true"]).mean())
        assert cells[f"both|clutter|{test_arm}"]["values"] == pytest.approx([want])
    assert summary["matrix"]["cross"]["clutter"]["both"]["keyed"] == pytest.approx(
        cells["both|clutter|keyed"]["mean"])
    # matrix predictions saved before probabilities were stored get them from the checkpoint, like the others
    member = tmp_path / "predictions" / "cross__keyed__base__s0" / "matrix"
    stripped = sorted(member.glob("*.npz"))
    assert stripped
    for p in stripped:
        arrays = _npz(p)
        np.savez(p, **{k: v for k, v in arrays.items() if k != "probs"})
    lines: list[str] = []
    again = run_experiment(parse_config(micro_config(data_root, studies=studies, train=train)), tmp_path,
                           log=lines.append)
    assert set(again["runs"].values()) == {"skipped"}
    assert any(f"class probabilities added to {len(stripped)} saved" in line and "cross__keyed__base__s0" in line
               for line in lines)
    assert all("probs" in _npz(p) for p in stripped)
    cells_again = again["analysis"]["matrix"]["protocols"]["cross"]["cells"]
    assert cells_again.keys() == cells.keys()
    assert all(cells_again[k]["values"] == pytest.approx(cells[k]["values"]) for k in cells)


def test_a_seed_whose_ensemble_members_do_not_line_up_is_left_out_and_said(data_root: Path,  # noqa: F811
                                                                           tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Members whose saved predictions cover other test images cannot be averaged: that seed drops out of the
    ensemble's line and its matrix row, and the report, summary.json and the terminal say which and why."""
    import yaml

    from bglab.cli.app import main

    studies = {"s": {"arms": ["original", "keyed"], "test_arms": ["original", "keyed"],
                     "ensembles": {"both": ["original", "keyed"]}}}
    train = {"epochs": 1, "batch_size": 16, "lr": 0.003, "eval_every": 1}
    config, out = tmp_path / "micro.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(micro_config(data_root, studies=studies, train=train)), encoding="utf-8")
    assert main(["experiment", str(config), "--out", str(out)]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert first.get("notes", []) == []
    assert first["analysis"]["matrix"]["row_runs"] == {"original": [["original", "base"]],
                                                       "keyed": [["keyed", "base"]],
                                                       "both": [["original", "base"], ["keyed", "base"]]}
    changed = sorted((out / "predictions" / "cross__keyed__base__s0").rglob("*.npz"))
    assert changed
    for p in changed:
        arrays = _npz(p)
        np.savez(p, **{**arrays, "keys": arrays["keys"][::-1].copy()})
    capsys.readouterr()
    assert main(["experiment", str(config), "--out", str(out)]) == 0  # nothing to train: reported again
    assert "ensemble both, cross, seed 0" in " ".join(capsys.readouterr().out.split())
    summary = json.loads((out / "summary.json").read_text())
    assert any(n.startswith("ensemble both, cross, seed 0, test set clutter (clean): the members' saved "
                            "predictions do not line up") for n in summary["notes"])
    assert any("test set clutter through test arm keyed" in n for n in summary["notes"])
    studies_out = summary["analysis"]["studies"]["s"]["protocols"]["cross"]
    assert studies_out["final"]["both"]["clutter|clean"]["n"] == 0
    assert summary["analysis"]["matrix"]["protocols"]["cross"]["cells"]["both|clutter|keyed"]["n"] == 0
    assert studies_out["final"]["keyed"]["clutter|clean"]["n"] == 1  # the member itself still counts
    assert "do not line up" in (out / "report.html").read_text(encoding="utf-8")


def test_rps_ensemble_lite2_keeps_rps_ensembles_split_and_trains_on_the_sxsw_val_photos() -> None:
    """rps-ensemble-lite2 restates rps-ensemble's protocols (same split, so the same test photos) and, in the
    combined one only, lets the sxsw val photos train (docs/pretrained.md, "Training on the validation photos
    too"); the webcam val photos still watch both."""
    from bglab.experiment.config import load_experiment_config

    root = Path(__file__).resolve().parents[1] / "bglab/configs"
    lite2, base = (load_experiment_config(root / f"{n}.yaml") for n in ("rps-ensemble-lite2", "rps-ensemble"))
    for name in ("cross-domain", "combined"):
        a, b = lite2.protocols[name], base.protocols[name]
        assert (a.split, a.test_sets) == (b.split, b.test_sets) and b.train_on_val == ()
    assert lite2.protocols["combined"].train_on_val == ("sxsw",) and lite2.protocols["cross-domain"].train_on_val == ()
