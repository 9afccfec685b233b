"""Experiments: config validation, statistics on hand-computed cases, a micro experiment end to end (run
directory, resumption after an interruption, determinism, report), and the CLI commands."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from bglab.data.dataset import Sample  # noqa: E402
from bglab.errors import ConfigError  # noqa: E402
from bglab.experiment import stats  # noqa: E402
from bglab.experiment.config import load_experiment_config, parse_config  # noqa: E402
from tests.conftest import csv_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # the runner sets torch's threads from the config (1 here); restore them afterwards
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
CLASSES = ("paper", "rock", "scissors")


# ------------------------------------------------------------------------------------------ synthetic data


def _image(cls: int, i: int, source: str, rng: np.random.Generator) -> np.ndarray:
    """A 40x40 RGB picture: a bright class shape (square / disc / cross) on a green screen or on clutter."""
    h = w = 40
    if source == "screen":
        img = np.zeros((h, w, 3), np.uint8)
        img[...] = (40, 180, 60)
    else:
        img = rng.integers(0, 120, size=(h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = 20 + rng.integers(-4, 5), 20 + rng.integers(-4, 5)
    if cls == 0:
        shape = (abs(yy - cy) < 9) & (abs(xx - cx) < 9)
    elif cls == 1:
        shape = (yy - cy) ** 2 + (xx - cx) ** 2 < 81
    else:
        shape = ((abs(yy - cy) < 3) & (abs(xx - cx) < 11)) | ((abs(xx - cx) < 3) & (abs(yy - cy) < 11))
    img[shape] = (230, 200, 190)
    return img


def write_shapes(root: Path, per_class: int, seed: int) -> Path:
    """``root/{screen,clutter}/<class>/*.png``: ``per_class`` synthetic pictures per class and source."""
    from bglab.io.files import write_image

    rng = np.random.default_rng(seed)
    for source in ("screen", "clutter"):
        for c, name in enumerate(CLASSES):
            d = root / source / name
            d.mkdir(parents=True)
            for i in range(per_class):
                write_image(d / f"{name}_{i:03d}.png", _image(c, i, source, rng))
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("expdata"), 30, 0)


def micro_config(root: Path, **over: object) -> dict:
    cfg = {
        "name": "micro",
        "seeds": [0],
        "threads": 1,
        "input": {"size": 32, "channels": 1},
        "sources": {"screen": {"path": str(root / "screen")}, "clutter": {"path": str(root / "clutter")}},
        "protocols": {"cross": {"split": {"screen": [0.6, 0.2, 0.2]},
                                "test_sets": {"screen": "screen/test", "clutter": "clutter"}}},
        "arms": {"original": [],
                 "keyed": [{"segment": {"backend": "chroma"}}, {"background": {"mode": "remove"}}]},
        "model": {"name": "cnn", "widths": [8, 16], "hidden": 32, "dropout": 0.5},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.003, "eval_every": 1},
        "evaluate": {"distortions": {"dropout25": {"dropout": 0.25}, "noise25": {"noise": 25}}, "bootstrap": 200},
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def reference_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from bglab.experiment.runner import run_experiment

    out = tmp_path_factory.mktemp("ref") / "run"
    cfg = parse_config(micro_config(data_root))
    summary = run_experiment(cfg, out)
    return out, summary


# ------------------------------------------------------------------------------------------------ config


def test_extends_replaces_top_level_keys_and_keeps_the_base_paths(tmp_path: Path) -> None:
    """A follow-up config names a base file; its keys replace the base's whole; the base's relative paths stay
    relative to the base's folder; a cycle or a missing base is a clear error."""
    import yaml

    from bglab.experiment.config import load_experiment_config

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    base = micro_config(Path("data"), quick={"sources": {"screen": {"path": "quickdata", "per_class": 2}}})
    base["arms"]["masked"] = {"steps": [{"segment": {"backend": "mask-files", "options": {"masks": "m"}}}],
                              "from": "trees/x"}
    base["sources"]["screen"] = {"path": "data/screen"}
    base["sources"]["clutter"] = "data/clutter"
    (tmp_path / "a" / "base.yaml").write_text(yaml.safe_dump(base))
    child = {"extends": "../a/base.yaml", "name": "follow-up", "seeds": [3, 4],
             "studies": {"s": {"protocols": ["cross"], "arms": ["original"], "variants": ["base"]}}}
    (tmp_path / "b" / "child.yaml").write_text(yaml.safe_dump(child))
    cfg = load_experiment_config(tmp_path / "b" / "child.yaml")
    a = (tmp_path / "a").resolve()
    assert cfg.name == "follow-up" and cfg.seeds == (3, 4) and "extends" not in cfg.raw
    assert cfg.sources["screen"].path == a / "data" / "screen" and cfg.sources["clutter"].path == a / "data/clutter"
    assert cfg.arms["masked"].source_dir == a / "trees" / "x"
    assert cfg.arms["masked"].steps[0]["segment"]["options"]["masks"] == str(a / "m")
    assert [k.arm for k in cfg.runs()] == ["original", "original"]  # the child's studies replaced the base's
    assert cfg.raw["model"] == base["model"] and cfg.size == 32  # the rest is kept
    quick = load_experiment_config(tmp_path / "b" / "child.yaml", quick=True)
    assert quick.sources["screen"].path == a / "quickdata"
    (tmp_path / "a" / "base.yaml").write_text(yaml.safe_dump({**base, "extends": "../b/child.yaml"}))
    with pytest.raises(ConfigError, match="cycle"):
        load_experiment_config(tmp_path / "b" / "child.yaml")
    (tmp_path / "b" / "bad.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_experiment_config(tmp_path / "b" / "bad.yaml")


def test_a_variant_extends_another_by_name(tmp_path: Path) -> None:
    """``extends: NAME`` in a variant starts from that variant (of the same file, else of the extended config; a
    variant naming itself means the extended config's) and merges its own model and train over it; a model of
    another name starts afresh; unknown names and cycles are clear errors naming the file."""
    import yaml

    from bglab.experiment.config import load_experiment_config

    pose_train = {"epochs": 5, "lr": 0.01, "augment": {"p": 0.5, "flip": False}}
    base = micro_config(Path("data"), variants={
        "base": {},
        "wide": {"model": {"widths": [16, 32], "dropout": 0.2}, "train": pose_train}})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    child = {"extends": "base.yaml", "name": "child", "variants": {
        "wide": {"extends": "wide", "model": {"dropout": 0.4}},                    # the base's wide, changed
        "wider": {"extends": "wide", "train": {"augment": {"flip": True}}},       # this file's wide
        "other": {"extends": "wide", "model": {"name": "vgg", "widths": [8, 16]}},  # another net: starts afresh
        "plain": {"extends": "base"}},
        "studies": {"s": {"protocols": ["cross"], "arms": ["original"],
                          "variants": ["wide", "wider", "other", "plain"]}}}
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    cfg = load_experiment_config(tmp_path / "child.yaml")
    wide, wider = cfg.variants["wide"], cfg.variants["wider"]
    assert wide.model["widths"] == [16, 32] and wide.model["dropout"] == 0.4 and wide.train.epochs == 5
    assert wide.train.augment.p == 0.5 and wide.train.augment.flip is False and wide.train.lr == 0.01
    assert wider.model == wide.model and wider.train.epochs == 5 and wider.train.augment.flip is True
    assert wider.train.augment.p == 0.5
    other = cfg.variants["other"]
    assert other.model["name"] == "vgg" and other.model["widths"] == [8, 16] and other.train.epochs == 5
    assert cfg.variants["plain"].model == parse_config(micro_config(Path("data"))).variants["base"].model
    assert all("extends" not in v for v in cfg.raw["variants"].values())  # the config as run: resolved
    # the same within one mapping, without a file
    inline = parse_config(micro_config(Path("data"), variants={
        "a": {"model": {"dropout": 0.1}}, "b": {"extends": "a", "train": {"epochs": 7}}}))
    assert inline.variants["b"].model == inline.variants["a"].model and inline.variants["b"].train.epochs == 7
    for variants, match in (
            ({"x": {"extends": "nope"}},
             r"variants\.x\.extends: unknown variant 'nope' \(defined: base, wide \(the extended config\)\)"),
            ({"x": {"extends": "y"}, "y": {"extends": "x"}}, r"cycle: x -> y -> x"),
            ({"x": {"extends": 3}}, r"variants\.x\.extends: expected a variant name")):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**child, "variants": variants}))
        with pytest.raises(ConfigError, match=match) as err:
            load_experiment_config(tmp_path / "bad.yaml")
        assert err.value.path == tmp_path / "bad.yaml"
    with pytest.raises(ConfigError, match=r"variants\.b\.extends: unknown variant 'c'"):
        parse_config(micro_config(Path("data"), variants={"b": {"extends": "c"}}))


def test_shipped_follow_up_configs_extend_the_reference() -> None:
    """The follow-up configs (rps-viewpoint, rps-recipe, rps-recipe-cosine, rps-swap) are the reference plus their
    own keys."""
    from bglab.experiment.config import load_experiment_config

    root = Path(__file__).resolve().parents[1] / "bglab" / "configs"
    ref = load_experiment_config(root / "rps-reference.yaml")
    for name in ("rps-viewpoint.yaml", "rps-recipe.yaml", "rps-recipe-cosine.yaml"):
        cfg = load_experiment_config(root / name)
        assert cfg.sources == ref.sources and cfg.arms == ref.arms and cfg.protocols == ref.protocols
        assert set(cfg.studies) != set(ref.studies)
    cosine = load_experiment_config(root / "rps-recipe-cosine.yaml")  # extends rps-recipe, which extends ...
    assert cosine.variants["recipe"] == load_experiment_config(root / "rps-recipe.yaml").variants["recipe"]
    assert cosine.variants["recipe-cosine"].train.schedule == "cosine"
    swap = load_experiment_config(root / "rps-swap.yaml")
    assert swap.sources == ref.sources and swap.protocols == ref.protocols
    assert swap.arms["original"] == ref.arms["original"] and swap.arms["swap"].sources == ("webcam",)
    backgrounds = (REPO.parent / "shared/data/backgrounds").resolve()
    assert Path(swap.arms["swap"].steps[1]["background"]["image"]) == backgrounds
    assert len(load_experiment_config(root / "rps-swap.yaml", quick=True).runs()) == 4
    pose = load_experiment_config(root / "rps-pose-recipe.yaml")
    turns = load_experiment_config(root / "rps-pose-turns.yaml")
    for cfg in (pose, turns):  # restated arms equal the reference's, so their runs can be copied across
        assert cfg.sources == ref.sources and cfg.protocols == ref.protocols
        assert all(cfg.arms[a] == ref.arms[a] for a in cfg.arms if a in ref.arms)
    assert pose.variants["recipe-cosine"] == cosine.variants["recipe-cosine"]
    assert pose.arms["pose-or-photo"].steps[0]["pose"]["on_missing"] == "keep"
    assert turns.arms["pose-turns"].steps[0]["pose"]["options"] == {"min_confidence": 0.1, "rotations": True}
    assert all(turns.arms[a] == pose.arms[a] for a in pose.arms if a in turns.arms)
    assert turns.variants["base"] == ref.variants["base"]
    assert turns.variants["recipe-cosine"] == pose.variants["recipe-cosine"]
    both = load_experiment_config(root / "rps-pose-photo.yaml")
    assert both.channels == 3 and both.variants["recipe-cosine"] == pose.variants["recipe-cosine"]
    assert both.arms["pose-and-photo"].steps[0]["pose"]["with_photo"] is True
    looks = {p.stem: load_experiment_config(p) for p in sorted((root / "looks").glob("*.yaml"))}
    assert set(looks) == {"longer-wider", "rgb", "swap-recipe", "sxsw-only"}
    assert all(c.seeds == (0,) for c in looks.values()), "the looks are one-seed runs"
    assert looks["rgb"].channels == 3 and looks["swap-recipe"].arms["swap"] == swap.arms["swap"]


def test_reference_config_parses_with_and_without_quick() -> None:
    full = load_experiment_config(REPO / "bglab" / "configs" / "rps-reference.yaml")
    quick = load_experiment_config(REPO / "bglab" / "configs" / "rps-reference.yaml", quick=True)
    assert full.seeds == (0, 1, 2) and quick.seeds == (0,)
    assert full.size == 64 and quick.size == 32
    assert set(full.arms) == {"original", "crop", "crop+remove", "remove", "pose"}
    assert full.arms["crop"].pipeline["steps"][-2:] == [{"resize": {"size": 64}}, "grey"]
    assert next(iter(full.arms["pose"].pipeline["steps"][0])) == "pose"
    # the pose arm needs MediaPipe's landmarks: the quick profile (CI) leaves it out
    assert "pose" in full.used_arms() and "pose" not in quick.used_arms()
    # the full profile removes backgrounds with hand-grabcut (real scenes); quick (CI, no MediaPipe) with the U-Net
    for name in ("crop+remove", "remove"):
        assert {"segment": {"backend": "hand-grabcut"}} in full.arms[name].pipeline["steps"]
        assert {"segment": {"backend": "unet"}} in quick.arms[name].pipeline["steps"]
    assert full.variants["base"].train.epochs == 20 and quick.variants["base"].train.epochs == 10
    assert full.variants["none"].model["dropout"] == 0.0 and full.variants["both"].model["batchnorm"] is True
    assert full.variants["noise-aug"].train.augment.noise == 25
    assert full.protocols["combined"].test_sets["sxsw"].part == "test"
    runs = full.runs()
    assert len(runs) == len({r.id for r in runs}) == (10 + 3 + 2) * 3  # shared base runs are trained once


@pytest.mark.parametrize(("change", "key"), [
    ({"epochz": 3}, "epochz"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"protocols": {"p": {"split": {"screen": [0.6, 0.2, 0.2]}, "test_sets": {"t": "screen"}}}},
     "protocols.p.test_sets.t"),  # testing on a whole source that also trains: a leak
    ({"protocols": {"p": {"split": {"nope": [0.6, 0.2, 0.2]}, "test_sets": {"t": "clutter"}}}},
     "protocols.p.split.nope"),
    ({"arms": {"a": [{"resize": {"size": 64}}]}}, "arms.a[0]"),
    ({"arms": {"a": [{"segment": {"backend": "no-such-backend"}}]}}, "arms.a"),
    ({"model": {"name": "transformer"}}, "variants.base"),
    ({"studies": {"s": {"arms": ["missing"]}}}, "studies.s.arms[0]"),
    ({"evaluate": {"distortions": {"d": {"dropout": 2}}}}, "evaluate.distortions.d.dropout"),
    ({"evaluate": {"distortion_curves": "often"}}, "evaluate.distortion_curves"),
])
def test_config_errors_name_the_key(data_root: Path, change: dict, key: str) -> None:
    raw = micro_config(data_root)
    if "epochz" in change:
        raw["train"] = {**raw["train"], **change}
        key = "train.epochz"
    else:
        raw.update(change)
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert key in str(info.value)


def test_quick_profile_deep_merges(data_root: Path) -> None:
    raw = micro_config(data_root, quick={"train": {"epochs": 1}, "sources": {"screen": {"per_class": 5}}})
    cfg = parse_config(raw, quick=True)
    assert cfg.quick and cfg.variants["base"].train.epochs == 1 and cfg.variants["base"].train.batch_size == 16
    assert cfg.sources["screen"].per_class == 5 and cfg.sources["screen"].path == data_root / "screen"


# ------------------------------------------------------------------------------------------------- stats


def test_mcnemar_known_table() -> None:
    # b=1, c=9: P(X<=1 | n=10, 1/2) = 11/1024; exact p = 22/1024; mid-p = 2 (11 - 10/2) / 1024 = 12/1024
    r = stats.mcnemar_counts(1, 9)
    assert r.p_exact == pytest.approx(22 / 1024)
    assert r.p_midp == pytest.approx(12 / 1024)
    assert stats.mcnemar_counts(5, 5).p_exact == 1.0
    assert stats.mcnemar_counts(0, 0).p_midp == 1.0
    a = np.array([1, 1, 0, 0, 1, 0], bool)
    b = np.array([1, 0, 1, 1, 1, 1], bool)
    r2 = stats.mcnemar(a, b)
    assert (r2.b, r2.c) == (1, 3)
    assert r2.p_exact == pytest.approx(2 * 5 / 16)  # P(X<=1 | n=4) = 5/16


def test_t_interval_known_values() -> None:
    m, lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    assert m == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    m1, lo1, hi1 = stats.t_interval([0.7])
    assert m1 == 0.7 and math.isnan(lo1) and math.isnan(hi1)


def test_paired_bootstrap_and_holm() -> None:
    same = np.array([1, 0, 1, 1, 0] * 8, bool)
    r = stats.paired_bootstrap(same, same, n_boot=500)
    assert r.diff == 0 and r.p == 1.0
    a = np.zeros(40, bool)
    b = np.ones(40, bool)
    r = stats.paired_bootstrap(a, b, n_boot=500)
    assert r.diff == 1.0 and r.lo == r.hi == 1.0 and r.p < 0.01
    # two seeds: per-image differences are averaged over seeds before resampling
    r2 = stats.paired_bootstrap(np.stack([a, a]), np.stack([b, a]), n_boot=500)
    assert r2.diff == pytest.approx(0.5)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    c = stats.compare("A", "B", "t", np.stack([a, a]), np.stack([b, b]), n_boot=300)
    rejected, adjusted, text = stats.verdict([c])
    assert rejected and "REJECTED" in text and adjusted[0].p_holm == pytest.approx(c.p_boot)
    c0 = stats.compare("A", "B", "t", same, same, n_boot=300)
    assert not stats.verdict([c0])[0] and "NOT rejected" in stats.verdict([c0])[2]


# ------------------------------------------------------------------------------------- micro experiment


def test_run_directory_contents(reference_run: tuple[Path, dict]) -> None:
    out, summary = reference_run
    assert summary["complete"] is True
    for name in ("config.yaml", "data.json", "metrics.csv", "metrics.parquet", "report.html", "summary.json",
                 "sessions.jsonl"):
        assert (out / name).is_file(), name
    runs = ["cross__original__base__s0", "cross__keyed__base__s0"]
    for run in runs:
        assert (out / "checkpoints" / f"{run}.safetensors").is_file()
        state = json.loads((out / "checkpoints" / f"{run}.json").read_text())
        assert state["done"] is True and state["epoch"] == 2
        for test in ("screen", "clutter"):
            for dist in ("clean", "dropout25", "noise25"):
                with np.load(out / "predictions" / run / f"{test}__{dist}.npz", allow_pickle=False) as z:
                    assert z["y_true"].shape == z["y_pred"].shape and len(z["y_true"]) > 0
    caches = sorted((out / "cache").glob("*.npz"))
    assert len(caches) == 2
    with np.load(caches[0], allow_pickle=False) as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape[1:] == (32, 32) and z["ok"].all()
    rows = csv_rows(out / "metrics.csv")
    assert {r["split"] for r in rows} == {"fit", "train", "val", "test"}
    assert {r["distortion"] for r in rows} == {"clean", "dropout25", "noise25"}
    fit = Counter((r["arm"], r["epoch"]) for r in rows if r["split"] == "fit")
    assert fit == {(a, e): 1 for a in ("original", "keyed") for e in ("1", "2")}
    # clean test rows at every eval, distorted ones at the final epoch only (the curves plot clean accuracy)
    tests = Counter((r["distortion"], r["epoch"]) for r in rows if r["split"] == "test" and r["arm"] == "original")
    assert tests == {("clean", "1"): 2, ("clean", "2"): 2, ("dropout25", "2"): 2, ("noise25", "2"): 2}
    data = json.loads((out / "data.json").read_text())
    assert data["protocols"]["cross"]["test:clutter"]["total"] == 90
    twins = data["near_twins"]["cross"]  # the split-leak check (bglab.experiment.leaks) on every test set
    assert set(twins) == {"screen", "clutter"} and twins["clutter"]["n"] == 90
    assert all(0 <= t["twins"] <= t["n"] and len(t["examples"]) <= min(t["twins"], 10) for t in twins.values())
    # identical splits for every arm: the same test images in the same order
    k1 = np.load(out / "predictions" / runs[0] / "clutter__clean.npz")["keys"]
    k2 = np.load(out / "predictions" / runs[1] / "clutter__clean.npz")["keys"]
    assert np.array_equal(k1, k2)
    # the machine that trained it, in the session line, the summary and the report's Run section
    session = json.loads((out / "sessions.jsonl").read_text().splitlines()[0])
    assert session["machine"] == summary["machine"] and summary["machine"]["device"] == "cpu"
    assert summary["machine"]["cpu_capability"] and summary["machine"]["threads"] >= 1
    assert "sessions_on_other_machines" not in summary
    assert "<h4>machine</h4>" in (out / "report.html").read_text()


def test_a_resume_on_another_kind_of_machine_is_said(data_root: Path, tmp_path: Path,
                                                     reference_run: tuple[Path, dict]) -> None:
    """Runs finished on another CPU kind are kept, and the log and the summary say they do not repeat bit for
    bit here."""
    import shutil

    from bglab.experiment.runner import run_experiment

    out = tmp_path / "run"
    shutil.copytree(reference_run[0], out)
    lines = (out / "sessions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["machine"] = {**first["machine"], "cpu_capability": "NOT-" + str(first["machine"]["cpu_capability"])}
    (out / "sessions.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    msgs: list[str] = []
    summary = run_experiment(parse_config(micro_config(data_root)), out, log=msgs.append)
    assert summary["complete"] is True and summary["sessions_on_other_machines"] == [1]
    assert set(summary["runs"].values()) == {"skipped"}  # nothing retrained
    assert any("session(s) 1 of this run directory ran on another kind of machine" in m for m in msgs)
    again = run_experiment(parse_config(micro_config(data_root)), out, log=msgs.append)
    assert again["sessions_on_other_machines"] == [1]  # session 2 ran here, so it is not counted


def test_same_seed_same_initial_weights_across_arms() -> None:
    from bglab.io.seeds import derive_seed, seed_everything
    from bglab.train.classifiers import build_classifier

    nets = []
    for _ in range(2):
        seed_everything(derive_seed(0, "init"))
        nets.append(build_classifier("cnn", 3, 1, 32, widths=[8, 16], hidden=32))
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert p.data.equal(q.data)


def _metric_key(r: dict[str, str]) -> tuple:
    return (r["arm"], r["seed"], r["epoch"], r["split"], r["test_set"], r["distortion"])


def test_resume_after_epoch_budget_continues_without_retraining(data_root: Path, tmp_path: Path,
                                                                reference_run: tuple[Path, dict]) -> None:
    from bglab.experiment.runner import run_experiment

    cfg = parse_config(micro_config(data_root))
    out = tmp_path / "run"
    first = run_experiment(cfg, out, max_epochs=3)  # 2 runs x 2 epochs: stops in the middle of the second run
    assert first["complete"] is False and not (out / "report.html").exists()
    rows1 = csv_rows(out / "metrics.csv")
    assert {r["session"] for r in rows1} == {"1"}
    second = run_experiment(cfg, out)
    assert second["complete"] is True
    rows = csv_rows(out / "metrics.csv")
    fits = [r for r in rows if r["split"] == "fit"]
    assert Counter((r["arm"], r["epoch"]) for r in fits) == {(a, e): 1 for a in ("original", "keyed") for e in "12"}
    by_session = {(r["arm"], r["epoch"]): r["session"] for r in fits}
    assert sorted(k for k, s in by_session.items() if s == "2") == [("keyed", "2")]  # only the unfinished epoch
    # resumed training is exactly the uninterrupted training
    ref = {_metric_key(r): (r["accuracy"], r["loss"]) for r in csv_rows(reference_run[0] / "metrics.csv")}
    got = {_metric_key(r): (r["accuracy"], r["loss"]) for r in rows}
    assert got.keys() == ref.keys()
    for k in ref:
        assert float(got[k][0]) == pytest.approx(float(ref[k][0]), abs=1e-9), k
        assert float(got[k][1]) == pytest.approx(float(ref[k][1]), rel=1e-4, abs=1e-6), k
    # a third call trains nothing
    run_experiment(cfg, out)
    assert Counter(r["session"] for r in csv_rows(out / "metrics.csv") if r["split"] == "fit") == {"1": 3, "2": 1}


def test_metrics_of_runs_the_config_does_not_declare_are_left_out(data_root: Path, tmp_path: Path,
                                                                  reference_run: tuple[Path, dict]) -> None:
    """A run directory holding metrics of runs its config does not declare (a variant taken out, runs copied in
    from another study) still finishes: those rows stay in metrics/ and out of metrics.csv and the report."""
    import shutil

    from bglab.experiment.runner import run_experiment

    out = tmp_path / "run"
    shutil.copytree(reference_run[0], out)
    src = next((out / "metrics").glob("*__original__*.csv"))
    stray = out / "metrics" / src.name.replace("__original__", "__gone__")
    text = src.read_text()
    stray.write_text(text.replace(",original,", ",gone,"))
    msgs: list[str] = []
    summary = run_experiment(parse_config(micro_config(data_root)), out, log=msgs.append)
    assert summary["complete"] is True and stray.is_file()
    rows = csv_rows(out / "metrics.csv")
    assert rows and not any(r["arm"] == "gone" for r in rows)
    assert any("does not declare left out" in m and stray.stem in m for m in msgs)


def test_resume_after_an_exception_mid_run(data_root: Path, tmp_path: Path) -> None:
    from bglab.experiment.runner import run_experiment

    cfg = parse_config(micro_config(data_root, arms={"original": []}))
    out = tmp_path / "run"

    def boom(key: object, epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, out, on_epoch=boom)
    state = json.loads((out / "checkpoints" / "cross__original__base__s0.json").read_text())
    assert state["epoch"] == 1 and state["done"] is False
    run_experiment(cfg, out)
    fits = [r for r in csv_rows(out / "metrics.csv") if r["split"] == "fit"]
    assert [(r["epoch"], r["session"]) for r in fits] == [("1", "1"), ("2", "2")]


def test_changed_config_in_same_run_dir_is_refused(data_root: Path, reference_run: tuple[Path, dict]) -> None:
    from bglab.experiment.runner import run_experiment

    for change in ({"seeds": [0, 1]}, {"evaluate": {"distortions": {"noise9": {"noise": 9}}}}):
        cfg = parse_config(micro_config(data_root, **change))
        with pytest.raises(ConfigError, match="different experiment"):
            run_experiment(cfg, reference_run[0])
    run_experiment(parse_config(micro_config(data_root, threads=2)), reference_run[0])  # threads: same experiment


def test_arms_listed_in_another_order_are_the_same_experiment(data_root: Path, tmp_path: Path) -> None:
    """The config's arms in another order (a YAML file dumped with sorted keys, an edit) train the same runs:
    the run directory is accepted and nothing is trained again."""
    from bglab.experiment.runner import run_experiment

    train = {"epochs": 1, "batch_size": 16, "lr": 0.003, "eval_every": 1}
    raw = micro_config(data_root, train=train)
    run_experiment(parse_config(raw), tmp_path)
    again = run_experiment(parse_config({**raw, "arms": dict(reversed(raw["arms"].items()))}), tmp_path)
    assert again["complete"] is True and set(again["runs"].values()) == {"skipped"}


def test_an_arm_no_run_uses_may_be_added_to_a_finished_run_dir(data_root: Path, tmp_path: Path) -> None:
    """A base config gains an arm; a follow-up study that extends it but does not train that arm still
    resumes / reports in its old run directory. Changing an arm it does train is refused."""
    from bglab.experiment.runner import run_experiment

    studies = {"s": {"protocols": ["cross"], "arms": ["original"], "variants": ["base"]}}
    arms = {"original": [], "keyed": [{"segment": {"backend": "chroma"}}, {"background": {"mode": "remove"}}]}
    train = {"epochs": 1, "batch_size": 16, "lr": 0.003, "eval_every": 1}
    run_experiment(parse_config(micro_config(data_root, arms=arms, studies=studies, train=train)), tmp_path)
    more = {**arms, "blurred": [{"segment": {"backend": "chroma"}}, {"background": {"mode": "blur"}}]}
    summary = run_experiment(parse_config(micro_config(data_root, arms=more, studies=studies, train=train)), tmp_path)
    assert summary["complete"] is True
    changed = {**arms, "original": [{"segment": {"backend": "chroma"}}, {"background": {"mode": "blur"}}]}
    with pytest.raises(ConfigError, match="different experiment"):
        run_experiment(parse_config(micro_config(data_root, arms=changed, studies=studies, train=train)), tmp_path)


def test_report_is_self_contained_with_sections(reference_run: tuple[Path, dict]) -> None:
    out, summary = reference_run
    text = (out / "report.html").read_text()
    for title in ("Verdict", "Data", "Accuracy curves", "Final accuracy", "Per-class accuracy", "Confusion matrices",
                  "Accuracy under distortion", "Differences and paired tests", "Photos every model gets wrong"):
        assert title in text, title
    assert "Not checked: it needs at least 6 finished runs" in text  # one seed x two arms
    assert text.count("data:image/png;base64,") >= 6
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", text, re.I)
    assert "<script" not in text and "<link" not in text
    assert "does not matter" in text
    # settings read as tables, not Python reprs or JSON dumps (issue 21)
    assert "AugmentConfig(" not in text and "<pre>" not in text and "{&quot;" not in text
    assert "segment (backend chroma" in text and "<th>augmentation</th>" in text
    assert "<h2 id='run'>Run</h2>" in text and "<th>status</th>" in text
    verdicts = summary["verdicts"]
    assert {v["distortion"] for v in verdicts} == {"clean", "dropout25", "noise25"}
    assert all(isinstance(v["rejected"], bool) for v in verdicts)
    res = summary["analysis"]["studies"]["main"]["protocols"]["cross"]
    comps = res["comparisons"]
    assert {(c["a"], c["b"]) for c in comps} == {("original", "keyed")}
    assert all(len(c["mcnemar"]) == 1 for c in comps)
    # the figures agree with the raw predictions
    with np.load(out / "predictions" / "cross__keyed__base__s0" / "clutter__clean.npz") as z:
        y, p = z["y_true"], z["y_pred"]
    cm = np.array(res["confusion"]["keyed|clutter"])
    assert cm.sum() == len(y) == 90 and np.trace(cm) == int((y == p).sum())
    assert res["per_class"]["keyed|clutter"][1] == pytest.approx(float((p[y == 1] == 1).mean()))
    assert res["final"]["keyed"]["clutter|clean"]["mean"] == pytest.approx(float((y == p).mean()))
    c = next(c for c in comps if c["test_set"] == "clutter" and c["distortion"] == "clean")
    with np.load(out / "predictions" / "cross__original__base__s0" / "clutter__clean.npz") as z:
        p0 = z["y_pred"]
    assert c["diff"] == pytest.approx(float((p == y).mean() - (p0 == y).mean()))
    assert c["mcnemar"][0]["b"] == int(((p0 == y) & (p != y)).sum())


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_experiment_quick_and_eval_cls(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    from bglab.cli.app import main

    raw = micro_config(data_root, arms={"original": []}, quick={"train": {"epochs": 1}})
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["experiment", str(path), "--quick", "--out", str(out)]) == 0
    assert (out / "report.html").is_file()
    capsys.readouterr()
    assert main(["eval-cls", str(out), str(data_root / "clutter"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    runs, arms = res["runs"], res["arms"]
    assert len(runs) == 1 and runs[0]["n"] == 90 and 0.0 <= runs[0]["accuracy"] <= 1.0
    assert set(runs[0]["per_class"]) == set(CLASSES)
    assert len(arms) == 1 and arms[0]["arm"] == "original" and arms[0]["seeds"] == [0]
    assert arms[0]["accuracy"] == runs[0]["accuracy"] and arms[0]["ci95"] == [None, None]  # one seed: no interval
    assert main(["eval-cls", str(out), str(data_root / "clutter")]) == 0
    printed = capsys.readouterr().out
    assert "per arm, over seeds" in printed and "per run" in printed
    assert main(["experiment", str(tmp_path / "missing.yaml")]) == 2
    odd = tmp_path / "odd" / "lizard"
    odd.mkdir(parents=True)
    (odd / "a.png").write_bytes((data_root / "clutter" / "rock" / "rock_000.png").read_bytes())
    assert main(["eval-cls", str(out), str(tmp_path / "odd")]) == 2  # a class the models never saw
    assert "lizard" in capsys.readouterr().err
    shouting = tmp_path / "shouting"  # class folders named in another case count as the trained classes
    for cls in CLASSES:
        shutil.copytree(data_root / "clutter" / cls, shouting / cls.upper())
    assert main(["eval-cls", str(out), str(shouting), "--json"]) == 0
    loud = json.loads(capsys.readouterr().out)["runs"][0]
    assert loud["n"] == 90 and loud["accuracy"] == runs[0]["accuracy"] and loud["per_class"] == runs[0]["per_class"]
    # bad files among the photos: named, not scored, the others scored; odd modes are read
    from PIL import Image

    folder = shouting / CLASSES[0].upper()
    rgb = Image.open(sorted(folder.glob("*.png"))[0]).convert("RGB")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "empty.jpg").write_bytes(b"")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.convert("P").save(folder / "palette.png")
    Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(folder / "sixteen.png")
    assert main(["eval-cls", str(out), str(shouting), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["runs"][0]["n"] == 93 and res["runs"][0]["failed"] == 2
    assert sorted(Path(p).name for p in res["unreadable"]) == ["corrupt.png", "empty.jpg"]
    assert "empty" in res["unreadable"][str(folder / "empty.jpg")]
    assert main(["eval-cls", str(out), str(shouting)]) == 0
    assert "2 of 95 photos could not be read or preprocessed" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_reference_quick_profile_on_shared_data(shared_data: Path, tmp_path: Path) -> None:
    from bglab.experiment.runner import run_experiment
    from bglab.foreground.unet import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip("the hand U-Net model is not built yet")
    cfg = load_experiment_config(REPO / "bglab" / "configs" / "rps-reference.yaml", quick=True)
    summary = run_experiment(cfg, tmp_path / "quick")
    assert summary["complete"] is True and all(s == "done" for s in summary["runs"].values())
    assert len(summary["runs"]) == 13
    text = (tmp_path / "quick" / "report.html").read_text()
    assert "Study: background" in text and "Study: regularisation" in text and "Study: noise" in text


def test_arm_preprocessing_in_two_workers_matches_one(data_root: Path, tmp_path: Path) -> None:
    """--workers 2 preprocesses the arm's chunks in two processes: same images, same failures, same order."""
    from bglab.experiment.data import load_sources, prepare_arm

    cfg = parse_config(micro_config(data_root, arms={"keyed": [
        {"segment": {"backend": "chroma"}}, {"background": {"mode": "remove"}}, {"distort": {"noise": 10}}]}))
    samples = [s for src in load_sources(cfg).values() for s in src]
    bad = tmp_path / "rock_bad.png"
    bad.write_bytes(b"not a png")
    samples.append(Sample(bad, "rock", "clutter"))
    arm = cfg.arms["keyed"]
    one = prepare_arm(arm, samples, size=32, channels=1, cache_dir=None, chunk=8)
    two = prepare_arm(arm, samples, size=32, channels=1, cache_dir=tmp_path / "cache", chunk=8, workers=2)
    assert one.images.shape == (len(samples), 32, 32) and one.ok[:-1].all() and not one.ok[-1]
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.ok, two.ok)
    assert one.errors == two.errors and "rock_bad.png" in one.errors[-1]
    again = prepare_arm(arm, samples, size=32, channels=1, cache_dir=tmp_path / "cache", chunk=8)
    assert again.cached and np.array_equal(again.images, one.images)  # the cache does not depend on workers


def test_affine_and_photometric_augmentation_are_seeded_and_bounded() -> None:
    """rotate / scale / shift move the content (seeded, identity for unselected images); brightness / contrast
    change intensities within their ranges; configs without them resolve as before."""
    import torch

    from bglab.experiment.augment import augment
    from bglab.experiment.config import AugmentConfig, resolved_config

    x = torch.zeros(8, 1, 16, 16)
    x[:, :, 4:12, 6:10] = 0.8  # a bright bar in the middle
    geo = AugmentConfig(p=1.0, rotate=30, scale=0.2, shift=0.2)
    a = augment(x, geo, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment(x, geo, torch.Generator().manual_seed(5)))
    moved = [not torch.allclose(a[i], x[i], atol=0.05) for i in range(8)]
    assert sum(moved) >= 6, "most images are rotated, zoomed or shifted"
    assert float(a.min()) >= 0.0 and float(a.max()) <= 0.8 + 1e-6
    none = augment(x, AugmentConfig(p=0.0, rotate=30, scale=0.2, shift=0.2), torch.Generator().manual_seed(5))
    assert torch.allclose(none, x, atol=1e-6), "p = 0 leaves every image as it was"
    col = AugmentConfig(p=1.0, brightness=0.5, contrast=0.5)
    c = augment(x * 0.5, col, torch.Generator().manual_seed(7))  # bar 0.4, image mean 0.05: nothing clips
    bar = c[:, :, 4:12, 6:10].mean(dim=(1, 2, 3))
    assert float(bar.min()) >= ((0.4 - 0.05) * 0.5 + 0.05) * 0.5 - 1e-6 and float(bar.max()) < 1.0
    assert len({round(float(v), 4) for v in bar}) == 8, "each image gets its own factors"
    plain = json.dumps(resolved_config(parse_config({**micro_config(Path("/data")), "train": {"epochs": 1}})))
    assert not any(k in plain for k in ('"rotate"', '"scale"', '"shift"', '"brightness"', '"contrast"'))
    with pytest.raises(ConfigError, match="augment.rotate"):
        parse_config({**micro_config(Path("/data")), "train": {"augment": {"rotate": -5}}})


def test_colour_and_blur_augmentation_are_seeded_bounded_and_leave_other_configs_alone() -> None:
    """white_balance / saturation / grey change the colour of RGB batches (grey ones pass through); blur
    smooths edges, each image with its own sigma; all seeded, identity for unselected images; a config without
    them draws exactly as before and resolves without the new keys."""
    import torch

    from bglab.experiment.augment import augment
    from bglab.experiment.config import AugmentConfig, resolved_config

    x = torch.full((8, 3, 16, 16), 0.2)
    x[:, 0, 4:12, 4:12] = 0.7  # a red square on a dark grey ground
    wb = AugmentConfig(p=1.0, white_balance=0.3)
    a = augment(x, wb, torch.Generator().manual_seed(1))
    assert torch.equal(a, augment(x, wb, torch.Generator().manual_seed(1)))
    gains = a[:, :, 0, 0] / 0.2  # the ground: one gain per channel and image
    assert float(gains.min()) >= 0.7 - 1e-5 and float(gains.max()) <= 1.3 + 1e-5
    assert len({round(float(v), 4) for v in gains.flatten()}) == 24
    sat = augment(x, AugmentConfig(p=1.0, saturation=1.0), torch.Generator().manual_seed(2))
    spread = sat[:, :, 8, 8].max(dim=1).values - sat[:, :, 8, 8].min(dim=1).values  # 0.5 before
    assert float(spread.min()) < 0.45 and float(spread.max()) > 0.55 and float(sat.max()) <= 1.0
    grey = augment(x, AugmentConfig(p=1.0, grey=1.0), torch.Generator().manual_seed(3))
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    assert torch.allclose(grey[0, 0, 8, 8], torch.tensor(0.299 * 0.7 + 0.701 * 0.2))
    one = x[:, :1]
    assert torch.equal(augment(one, AugmentConfig(p=1.0, white_balance=0.3, grey=1.0),
                               torch.Generator().manual_seed(3)), one), "grey inputs have no colour to change"
    blurred = augment(x, AugmentConfig(p=1.0, blur=2.0), torch.Generator().manual_seed(4))
    edge = (blurred[:, 0, 8, 3] - 0.2).abs()  # just outside the square: blur brings red in, by its own sigma
    assert int((edge > 1e-3).sum()) >= 5 and len({round(float(v), 4) for v in edge}) >= 5
    assert torch.allclose(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02), "blur keeps the mean"
    assert torch.equal(augment(x, AugmentConfig(p=0.0, blur=2.0, white_balance=0.3),
                               torch.Generator().manual_seed(4)), x)
    # the draws of a config without the new keys are those it had before they existed
    old = AugmentConfig(p=0.7, flip=True, noise=5)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(augment(x, old, g1), augment(x, old, g2)) and torch.equal(torch.rand(3, generator=g1),
                                                                                torch.rand(3, generator=g2))
    resolved = resolved_config(parse_config({**micro_config(Path("/data")), "train": {"epochs": 1}}))
    for variant in resolved["resolved"]["variants"].values():
        assert not {"white_balance", "saturation", "grey", "blur"} & set(variant["train"]["augment"])
    with pytest.raises(ConfigError, match="augment.blur"):
        parse_config({**micro_config(Path("/data")), "train": {"augment": {"blur": 9}}})


def test_rot90_augmentation_is_seeded_and_keeps_old_run_configs() -> None:
    """rot90 turns square images by multiples of 90 degrees (seeded); configs without it resolve as before."""
    import torch

    from bglab.experiment.augment import augment
    from bglab.experiment.config import AugmentConfig, resolved_config

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) / 32
    aug = AugmentConfig(p=1.0, rot90=True)
    a = augment(x, aug, torch.Generator().manual_seed(3))
    b = augment(x, aug, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    turned = [any(torch.equal(a[i], torch.rot90(x[i], k, dims=(-2, -1))) for k in range(4)) for i in range(2)]
    assert all(turned)
    outs = {tuple(augment(x[:1], aug, torch.Generator().manual_seed(s)).flatten().tolist()) for s in range(20)}
    assert len(outs) == 4, "all four turns occur"
    plain = resolved_config(parse_config({**micro_config(Path("/data")), "train": {"epochs": 1}}))
    assert "rot90" not in json.dumps(plain), "run directories made before rot90 must still match"
    with_rot = resolved_config(parse_config({**micro_config(Path("/data")),
                                             "train": {"epochs": 1, "augment": {"rot90": True}}}))
    assert '"rot90": true' in json.dumps(with_rot)


def test_cosine_schedule_is_a_function_of_the_epoch_and_resumes_exactly(data_root: Path, tmp_path: Path) -> None:
    """train.schedule: cosine decays the rate from lr towards 0; an interrupted run resumes with the same rates."""
    from bglab.experiment.config import resolved_config
    from bglab.experiment.runner import run_experiment

    train = {"epochs": 4, "batch_size": 16, "lr": 0.004, "eval_every": 1, "schedule": "cosine"}
    cfg = parse_config(micro_config(data_root, arms={"original": []}, train=train))
    t = cfg.variants["base"].train
    assert [round(t.lr_at(e), 6) for e in (1, 2, 3, 4)] == [0.004, 0.003414, 0.002, 0.000586]
    plain = parse_config(micro_config(data_root)).variants["base"].train
    assert plain.lr_at(1) == plain.lr_at(2) == 0.003
    assert "schedule" not in json.dumps(resolved_config(parse_config(micro_config(data_root)))), \
        "run directories made before the schedule must still match"
    with pytest.raises(ConfigError, match="train.schedule"):
        parse_config(micro_config(data_root, train={**train, "schedule": "step"}))
    whole = run_experiment(cfg, tmp_path / "whole")
    run_experiment(cfg, tmp_path / "cut", max_epochs=2)
    run_experiment(cfg, tmp_path / "cut")
    key = "cross__original__base__s0"
    assert json.loads((tmp_path / "cut" / "checkpoints" / f"{key}.json").read_text())["train"]["schedule"] == "cosine"
    a = [(r["epoch"], r["split"], r["test_set"], r["distortion"], r["accuracy"], r["loss"])
         for r in csv_rows(tmp_path / "whole" / "metrics.csv")]
    b = [(r["epoch"], r["split"], r["test_set"], r["distortion"], r["accuracy"], r["loss"])
         for r in csv_rows(tmp_path / "cut" / "metrics.csv")]
    assert a == b and whole["complete"]
    constant = run_experiment(parse_config(micro_config(data_root, arms={"original": []},
                                                        train={**train, "schedule": "constant"})), tmp_path / "c")
    fit = [r["loss"] for r in csv_rows(tmp_path / "c" / "metrics.csv") if r["split"] == "fit"]
    assert fit[:1] == [r[5] for r in a if r[1] == "fit"][:1], "epoch 1 runs at the full rate in both"
    assert fit[1:] != [r[5] for r in a if r[1] == "fit"][1:], "later epochs differ once the rate decays"
    assert constant["complete"]


def test_distortion_curves_score_distorted_copies_at_every_eval(data_root: Path, tmp_path: Path) -> None:
    from bglab.experiment.runner import run_experiment

    cfg = micro_config(data_root, arms={"original": []})
    cfg["evaluate"] = {**cfg["evaluate"], "distortion_curves": True}
    run_experiment(parse_config(cfg), tmp_path / "run")
    rows = [r for r in csv_rows(tmp_path / "run" / "metrics.csv") if r["split"] == "test"]
    assert Counter((r["distortion"], r["epoch"]) for r in rows) == {
        (d, e): 2 for d in ("clean", "dropout25", "noise25") for e in ("1", "2")}
    # the final figures do not depend on it: the same as the default run's
    run_experiment(parse_config(micro_config(data_root, arms={"original": []})), tmp_path / "default")
    final = {(r["test_set"], r["distortion"], r["accuracy"], r["loss"]) for r in rows if r["epoch"] == "2"}
    other = {(r["test_set"], r["distortion"], r["accuracy"], r["loss"])
             for r in csv_rows(tmp_path / "default" / "metrics.csv") if r["split"] == "test" and r["epoch"] == "2"}
    assert final == other and len(final) == 6


def test_arm_steps_for_some_sources_only(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """arms.NAME.sources: the steps change only those sources' images; the rest match the plain arm bit for bit,
    so arms compare on identical test images. eval-cls applies the steps only to a folder named --as-source."""
    import yaml

    from bglab.cli.app import main
    from bglab.experiment.config import resolved_config
    from bglab.experiment.data import load_data
    from bglab.experiment.runner import run_experiment

    # GrabCut (box: the image minus a border) changes every image, keyable or not
    keyed = {"steps": [{"segment": {"backend": "grabcut"}}, {"background": {"mode": "remove"}}], "sources": ["screen"]}
    raw = micro_config(data_root, arms={"original": [], "keyed": keyed, "everywhere": keyed["steps"]},
                       studies={"s": {"protocols": ["cross"], "arms": ["original", "keyed", "everywhere"],
                                      "variants": ["base"]}})
    cfg = parse_config(raw)
    assert cfg.arms["keyed"].sources == ("screen",) and cfg.arms["everywhere"].sources is None
    res = resolved_config(cfg)["resolved"]["arms"]
    assert res["keyed"]["sources"] == ["screen"] and "sources" not in res["everywhere"]
    data = load_data(cfg, cache_dir=tmp_path / "cache")
    screen = data.origins == "screen"
    orig, part, full = (data.arms[a].images for a in ("original", "keyed", "everywhere"))
    assert np.array_equal(part[screen], full[screen]) and not np.array_equal(part[screen], orig[screen])
    assert np.array_equal(part[~screen], orig[~screen]) and not np.array_equal(full[~screen], orig[~screen])
    again = load_data(cfg, cache_dir=tmp_path / "cache")
    assert again.arms["keyed"].cached and np.array_equal(again.arms["keyed"].images, part)
    for bad, key in (({**keyed, "sources": ["nowhere"]}, "arms.keyed.sources[0]"),
                     ({**keyed, "from": str(tmp_path)}, "arms.keyed.sources")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            parse_config(micro_config(data_root, arms={"original": [], "keyed": bad}))
    # eval-cls: the clutter folder is not a source of the steps unless --as-source says so
    run_cfg = micro_config(data_root, arms={"keyed": keyed}, train={"epochs": 1, "batch_size": 16})
    out = tmp_path / "run"
    run_experiment(parse_config(run_cfg), out)
    state = json.loads((out / "checkpoints" / "cross__keyed__base__s0.json").read_text())
    assert state["sources"] == ["screen"]
    assert "screen (the others: resize / grey only)" in (out / "report.html").read_text(encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(run_cfg))
    scores = {}
    for extra in ([], ["--as-source", "screen"]):
        capsys.readouterr()
        assert main(["eval-cls", str(out), str(data_root / "clutter"), "--json", *extra]) == 0
        scores[bool(extra)] = json.loads(capsys.readouterr().out)["runs"][0]
    from bglab.data.dataset import read_imagefolder
    from bglab.experiment.config import ArmConfig
    from bglab.experiment.data import prepare_arm
    from bglab.experiment.evaluate import evaluate_run_dir

    samples = read_imagefolder(data_root / "clutter")
    arm = cfg.arms["keyed"]
    plain = prepare_arm(ArmConfig("p", [], arm.plain_pipeline), samples, size=32, channels=1, cache_dir=None).images
    steps = prepare_arm(ArmConfig("k", [], arm.pipeline), samples, size=32, channels=1, cache_dir=None).images
    assert not np.array_equal(plain, steps)
    assert evaluate_run_dir(out, data_root / "clutter")[0]["loss"] == scores[False]["loss"]
    assert scores[False]["loss"] != scores[True]["loss"], "--as-source screen cuts the clutter images too"


def test_parallel_runs_give_the_serial_figures_bit_for_bit(data_root: Path, tmp_path: Path,
                                                           reference_run: tuple[Path, dict]) -> None:
    """Two runs at once in processes (one thread each) = the serial run at one thread: metrics, predictions,
    summary; a rerun skips every finished run."""
    from bglab.experiment.runner import run_experiment

    cfg = parse_config(micro_config(data_root, seeds=[0, 1]))
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    run_experiment(cfg, serial, report=False)
    got = run_experiment(cfg, parallel, parallel_runs=2, report=False)
    assert got["complete"] is True and set(got["runs"].values()) == {"done"} and len(got["runs"]) == 4

    def strip(rows: list[dict]) -> list[tuple]:
        return sorted(tuple((k, v) for k, v in r.items() if k != "session") for r in rows)

    assert strip(csv_rows(serial / "metrics.csv")) == strip(csv_rows(parallel / "metrics.csv"))
    a = sorted(p.relative_to(serial) for p in (serial / "predictions").rglob("*.npz"))
    assert a == sorted(p.relative_to(parallel) for p in (parallel / "predictions").rglob("*.npz")) and a
    for rel in a:
        za, zb = np.load(serial / rel), np.load(parallel / rel)
        assert np.array_equal(za["y_pred"], zb["y_pred"]), rel
    again = run_experiment(cfg, parallel, parallel_runs=2, report=False)
    assert set(again["runs"].values()) == {"skipped"}
    with pytest.raises(ConfigError, match="one run at a time"):
        run_experiment(cfg, tmp_path / "x", parallel_runs=2, max_epochs=1)


def test_ray_engine_gives_the_serial_figures_and_reports_a_failing_run(data_root: Path, tmp_path: Path) -> None:
    """Runs as Ray actors on a private local instance (2 CPUs): the same metrics and predictions as the serial
    run; a run that cannot write its checkpoint is retried once, then reported while the others finish."""
    pytest.importorskip("ray")
    from bglab.experiment.runner import run_experiment

    cfg = parse_config(micro_config(data_root, seeds=[0, 1]))
    serial, viaray = tmp_path / "serial", tmp_path / "ray"
    run_experiment(cfg, serial, report=False, threads=1)
    bad = "cross__keyed__base__s1"
    (viaray / "checkpoints" / f"{bad}.safetensors").mkdir(parents=True)  # no checkpoint can be written there
    got = run_experiment(cfg, viaray, parallel_runs=2, threads=1, engine="ray", report=False)
    assert got["complete"] is False and list(got["failed"]) == [bad]
    assert {k: v for k, v in got["runs"].items()} == {r: "done" for r in got["runs"]} and len(got["runs"]) == 3
    for rel in sorted(p.relative_to(viaray) for p in (viaray / "predictions").rglob("*.npz")):
        assert not str(rel).startswith(bad)
        assert np.array_equal(np.load(serial / rel)["y_pred"], np.load(viaray / rel)["y_pred"]), rel
    def rows(run_dir: Path) -> list[tuple]:  # the failed run's first-epoch rows (written before its checkpoint
        # failed) are dropped by the next run, which retrains it
        return sorted(tuple((k, v) for k, v in r.items() if k != "session") for r in csv_rows(run_dir / "metrics.csv")
                      if not (r["arm"] == "keyed" and r["seed"] == "1"))

    assert rows(serial) == rows(viaray) and rows(serial)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_address_that_does_not_answer_fails_fast_and_writes_nothing(data_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import time

    from bglab.errors import BackendError
    from bglab.experiment.runner import run_experiment
    from bglab.pipeline.preprocess import preprocess

    cfg = parse_config(micro_config(data_root))
    addr = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=rf"Ray cluster at {addr} does not answer"):
        run_experiment(cfg, tmp_path / "run", engine="ray", engine_options={"address": addr}, report=False)
    with pytest.raises(BackendError, match="does not answer"):
        preprocess([data_root / "screen"], tmp_path / "pre", {"steps": [{"resize": {"size": 16}}]},
                   engine="ray", engine_options={"address": f"ray://{addr}"})
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "run").exists() and not (tmp_path / "pre").exists()
    with pytest.raises(BackendError, match="not host:port"):
        run_experiment(cfg, tmp_path / "run", engine="ray", engine_options={"address": "nohost"}, report=False)


REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = REPO / "bglab" / "configs"
#: the research configs behind documented measurements (docs/pretrained.md names their commands)
BENCH_CONFIGS = REPO / "bench" / "configs"


@pytest.mark.parametrize("name", sorted([p.relative_to(REPO).as_posix() for p in SHIPPED_CONFIGS.rglob("*.yaml")]
                                        + [p.relative_to(REPO).as_posix() for p in BENCH_CONFIGS.glob("*.yaml")]))
def test_every_shipped_experiment_config_parses_full_and_quick(name: str) -> None:
    """Every shipped config parses in full and with --quick; every research config in bench/configs in full."""
    from bglab.experiment.config import load_experiment_config

    path = REPO / name
    from bglab.experiment.templates import config_kind

    if config_kind(path) != "experiment":
        pytest.skip(f"a {config_kind(path)} config")
    full = load_experiment_config(path)
    assert full.runs() and full.name
    if not path.is_relative_to(SHIPPED_CONFIGS):
        return  # a research config need not have a quick profile
    quick = load_experiment_config(path, quick=True)
    assert len(quick.runs()) <= len(full.runs())


def test_report_settings_are_plain_text() -> None:
    """The report's arms / variants / run tables: config values as a reader writes them (issue 21)."""
    from bglab.experiment.config import AugmentConfig
    from bglab.experiment.report import augment_text, plain, steps_text

    steps = [{"locate": {"backend": "mediapipe-hands", "options": {"margin": 0.1}}}, {"grey": {}}]
    assert steps_text(steps) == "locate (backend mediapipe-hands, options (margin 0.1)) -> grey"
    assert steps_text([]) == "none"
    assert plain({"name": "cnn", "widths": [16, 32], "batchnorm": False, "pretrained": None}) == \
        "name cnn, widths [16, 32], batchnorm no, pretrained none"
    assert augment_text(AugmentConfig()) == "none"
    assert augment_text(AugmentConfig(p=0.5, flip=True, noise=10.0, bg_from="only-bg-t")) == \
        "p 0.5: noise 10, flip, bg_from only-bg-t"


def test_source_group_pattern_ties_frames_of_one_video_across_classes(data_root: Path) -> None:
    """sources.NAME.group: files whose names match share one group (first capture), whatever their class; no
    split divides such a group; the other files keep their own groups; a bad pattern fails at parse time."""
    from bglab.data.dataset import split as split_samples
    from bglab.experiment.data import load_sources

    raw = micro_config(data_root)
    raw["sources"]["screen"]["group"] = r"_0(\d)\d\.png$"   # files 000-099: one "video" per tens digit
    cfg = parse_config(raw)
    assert cfg.sources["screen"].group == r"_0(\d)\d\.png$" and cfg.sources["clutter"].group is None
    samples = load_sources(cfg)
    groups = {s.group for s in samples["screen"]}
    assert groups == {"screen:0", "screen:1", "screen:2"}  # 30 per class: tens digits 0, 1, 2
    assert {s.label for s in samples["screen"] if s.group == "screen:1"} == set(CLASSES)  # across classes
    assert len({s.group for s in samples["clutter"]}) == len(samples["clutter"])  # untouched: one per file
    parts = split_samples(samples["screen"], fractions=(0.6, 0.2, 0.2), seed=0)
    seen = [{s.group for s in getattr(parts, p)} for p in ("train", "val", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    from bglab.experiment.config import resolved_config

    assert resolved_config(cfg)["sources"]["screen"]["group"] == r"_0(\d)\d\.png$"
    assert "group" not in resolved_config(cfg)["sources"]["clutter"]  # old run directories stay comparable
    raw["sources"]["screen"]["group"] = "frame_(\\d+"
    with pytest.raises(ConfigError, match=r"sources\.screen\.group.*not a regular expression"):
        parse_config(raw)


def test_label_smoothing_trains_on_softened_targets_and_old_run_dirs_still_match(data_root: Path,
                                                                                  tmp_path: Path) -> None:
    """train.label_smoothing s: the training loss's target is 1 - s on the label (s spread over the classes);
    recorded in each checkpoint; 0 (the default) leaves the resolved config as it was before the key."""
    from bglab.experiment.config import resolved_config
    from bglab.experiment.runner import run_experiment

    train = {"epochs": 2, "batch_size": 16, "lr": 0.004, "eval_every": 1}
    assert "label_smoothing" not in json.dumps(resolved_config(parse_config(micro_config(data_root)))), \
        "run directories made before label smoothing must still match"
    with pytest.raises(ConfigError, match="train.label_smoothing"):
        parse_config(micro_config(data_root, train={**train, "label_smoothing": 0.6}))
    smooth = parse_config(micro_config(data_root, arms={"original": []}, train={**train, "label_smoothing": 0.2}))
    assert smooth.variants["base"].train.label_smoothing == 0.2
    assert '"label_smoothing": 0.2' in json.dumps(resolved_config(smooth))
    run_experiment(smooth, tmp_path / "s")
    run_experiment(parse_config(micro_config(data_root, arms={"original": []}, train=train)), tmp_path / "p")
    key = "cross__original__base__s0"
    assert json.loads((tmp_path / "s" / "checkpoints" / f"{key}.json").read_text())["train"]["label_smoothing"] == 0.2
    assert "label_smoothing" not in json.loads((tmp_path / "p" / "checkpoints" / f"{key}.json").read_text())["train"]

    def fit_losses(run: str) -> list[float]:
        return [float(r["loss"]) for r in csv_rows(tmp_path / run / "metrics.csv") if r["split"] == "fit"]

    assert fit_losses("s")[0] != fit_losses("p")[0], "same weights, order and draws: only the target differs"
    # cross-entropy against the softened target is never below that target's entropy
    k = len(CLASSES)
    on, off = 1 - 0.2 + 0.2 / k, 0.2 / k
    floor = -(on * math.log(on) + (k - 1) * off * math.log(off))
    assert all(loss >= floor - 1e-6 for loss in fit_losses("s")), (fit_losses("s"), floor)


def test_train_on_val_trains_on_a_sources_val_part_and_keeps_every_test_set(data_root: Path, tmp_path: Path) -> None:
    """protocols.P.train_on_val: [SOURCE]: that source's val part joins the training images, nothing else moves
    (the same test images as without the key); another source keeps a val part to watch; the key is recorded
    in each checkpoint and absent from configs that do not use it (old run directories still match)."""
    from bglab.experiment.config import resolved_config
    from bglab.experiment.data import load_data, make_protocol
    from bglab.experiment.runner import run_experiment

    split = {"screen": [0.6, 0.2, 0.2], "clutter": [0.5, 0.2, 0.3]}
    tests = {"screen": "screen/test", "clutter": "clutter/test"}

    def proto(**extra: object) -> dict:
        return {"both": {"split": split, "test_sets": tests, **extra}}

    plain = parse_config(micro_config(data_root, arms={"original": []}, protocols=proto()))
    fit = parse_config(micro_config(data_root, arms={"original": []}, protocols=proto(train_on_val=["clutter"])))
    assert fit.protocols["both"].train_on_val == ("clutter",) and plain.protocols["both"].train_on_val == ()
    assert "train_on_val" not in json.dumps(resolved_config(plain))
    data = load_data(plain, cache_dir=tmp_path / "cache")
    a, b = make_protocol(plain, plain.protocols["both"], data), make_protocol(fit, fit.protocols["both"], data)
    origin = data.origins
    assert all(np.array_equal(a.tests[t], b.tests[t]) for t in tests)
    moved = a.val[origin[a.val] == "clutter"]
    assert len(moved) and np.array_equal(np.sort(np.concatenate([a.train, moved])), b.train)
    assert np.array_equal(b.val, a.val[origin[a.val] == "screen"]) and len(b.val)
    run_experiment(fit, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "checkpoints" / "both__original__base__s0.json").read_text())
    assert state["train_on_val"] == ["clutter"]
    assert "The val part of clutter trains too" in (tmp_path / "run" / "report.html").read_text()
    for bad, match in [(["nope"], r"\[0\].*unknown split source 'nope'"),
                       (["screen", "clutter"], "no val part would be left"),
                       ("clutter, screen", r"\[0\].*unknown split source 'clutter, screen'"),
                       ([3], r"\[0\].*unknown split source 3 "), ([], "non-empty list")]:
        with pytest.raises(ConfigError, match=rf"protocols\.both\.train_on_val.*{match}"):
            parse_config(micro_config(data_root, protocols=proto(train_on_val=bad)))
    with pytest.raises(ConfigError, match=r"protocols\.both\.test_sets\.v.*trains this protocol"):
        parse_config(micro_config(data_root, protocols={"both": {"split": split, "train_on_val": ["clutter"],
                                                                 "test_sets": {**tests, "v": "clutter/val"}}}))
