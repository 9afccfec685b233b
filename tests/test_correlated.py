"""bglab correlate: families, the kept / broken / reversed rules, measured correlation, determinism, resume."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bglab.background.correlated import (
    Crop,
    Family,
    assign_families,
    build_study,
    choose_family,
    compose,
    crop_background,
    draw_background,
    fit_foreground,
    plan_study,
    split_families,
)
from bglab.errors import BglabError, ConfigError, DatasetError
from bglab.io.files import read_image, write_image, write_mask
from tests.conftest import csv_rows

CLASSES = ("a", "b", "c")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _fg(rng: np.random.Generator, w: int = 30, h: int = 20) -> tuple[np.ndarray, np.ndarray]:
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[..., 1] = np.minimum(img[..., 1], img[..., 0])  # no green dominance: despill leaves it alone
    mask = np.zeros((h, w), np.uint8)
    mask[4:h - 4, 8:w] = 255  # a "hand" entering from the right
    return img, mask


def make_data(tmp: Path, per_class: int = 8, *, bg_layout: str = "subdirs") -> tuple[Path, Path, Path]:
    """SRC (ImageFolder), MASKS (<class>/<stem>.png) and BG (3 solid-colour families)."""
    rng = np.random.default_rng(0)
    src, masks, bg = tmp / "src", tmp / "masks", tmp / "bg"
    for c in CLASSES:
        for i in range(per_class):
            img, mask = _fg(rng)
            write_image(src / c / f"{c}{i:03d}.png", img)
            write_mask(masks / c / f"{c}{i:03d}.png", mask)
    for name, col in COLOURS.items():
        for j in range(2):
            photo = np.zeros((40, 60, 3), np.uint8)
            photo[:] = col
            photo[:, :, 2] = np.minimum(255, photo[:, :, 2] + j)  # two near-identical photos per family
            path = bg / name / f"{name}{j}.jpg" if bg_layout == "subdirs" else bg / f"{name}{j}.png"
            write_image(path, photo)
    return src, masks, bg


def rows(dst: Path) -> list[dict[str, str]]:
    return csv_rows(dst / "manifest.csv")


# --------------------------------------------------------------------------------------------- families


def test_split_families_is_seeded_round_robin_and_complete():
    files = [Path(f"p{i:02d}.jpg") for i in range(25)]
    fams = split_families(files, 3, seed=0)
    assert [len(f.files) for f in fams] == [9, 8, 8]
    assert sorted(p for f in fams for p in f.files) == sorted(files)  # every photo in exactly one family
    assert split_families(list(reversed(files)), 3, seed=0) == fams  # input order does not matter
    assert split_families(files, 3, seed=1) != fams
    with pytest.raises(DatasetError):
        split_families(files[:2], 3)


def test_assign_families_by_name_by_order_and_flat(tmp_path):
    _, _, bg = make_data(tmp_path, 1)
    by_order = assign_families(CLASSES, bg)  # sub-folders blue/green/red -> classes a/b/c in sorted order
    assert {c: f.name for c, f in by_order.items()} == {"a": "blue", "b": "green", "c": "red"}
    by_name = assign_families(["red", "green", "blue"], bg)
    assert all(c == f.name for c, f in by_name.items())
    with pytest.raises(DatasetError, match="sub-folder"):
        assign_families(["a", "b"], bg)
    _, _, flat = make_data(tmp_path / "flat", 1, bg_layout="flat")
    fams = assign_families(CLASSES, flat, seed=3)
    assert sorted(len(f.files) for f in fams.values()) == [2, 2, 2]
    assert fams == assign_families(CLASSES, flat, seed=3)


# ----------------------------------------------------------------------------------------- pure choices


def test_choose_family_rules():
    rng = random.Random(0)
    for own in range(3):
        assert choose_family("test-kept", own, 3, 0.5, rng) == own
        assert choose_family("test-reversed", own, 3, 0.5, rng) == (own + 1) % 3
        assert choose_family("test-fg-only", own, 3, 0.5, rng) is None
        assert {choose_family("test-broken", own, 3, 0.5, rng) for _ in range(200)} == {0, 1, 2}
        assert all(choose_family("train", own, 3, 1.0, rng) == own for _ in range(50))
        assert all(choose_family("train", own, 3, 0.0, rng) != own for _ in range(50))
    with pytest.raises(ConfigError):
        choose_family("val", 0, 3, 0.5, rng)


def test_draw_background_is_a_pure_function_and_crops_stay_inside():
    fam = Family("f", (Path("x.jpg"), Path("y.jpg")))
    assert draw_background(fam, 0, "a", "s1") == draw_background(fam, 0, "a", "s1")
    draws = {draw_background(fam, 0, "a", f"s{i}") for i in range(40)}
    assert len({p for p, _ in draws}) == 2 and len(draws) == 40
    for _, crop in draws:
        x0, y0, side = crop.pixels(60, 40)
        assert 20 <= side <= 40 and 0 <= x0 <= 60 - side and 0 <= y0 <= 40 - side


def test_compose_keeps_the_fg_and_only_the_background_changes():
    rng = np.random.default_rng(1)
    img, mask = _fg(rng, 30, 20)
    canvas, soft = fit_foreground(img, mask, 32)
    assert canvas.shape == (32, 32, 3) and soft.shape == (32, 32) and soft.dtype == np.float32
    assert soft[:5].max() == 0  # the letterbox padding (rows above the 30x20 photo) is background
    red = crop_background(np.full((40, 60, 3), COLOURS["red"], np.uint8), Crop(0.5, 0.3, 0.7, True), 32)
    blue = np.full((32, 32, 3), COLOURS["blue"], np.uint8)
    a, b = compose(canvas, soft, red), compose(canvas, soft, blue)
    fg_px, bg_px = soft == 1.0, soft == 0.0
    assert np.array_equal(a[fg_px], b[fg_px]) and np.array_equal(a[fg_px], canvas[fg_px])
    assert (a[bg_px] == COLOURS["red"]).all() and (b[bg_px] == COLOURS["blue"]).all()
    assert (compose(canvas, soft, None)[bg_px] == 0).all()  # fg-only control: black
    flip = crop_background(np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3), Crop(1.0, 0, 0, True), 40)
    plain = crop_background(np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3), Crop(1.0, 0, 0, False), 40)
    assert np.array_equal(flip, plain[:, ::-1])


# ------------------------------------------------------------------------------------------ whole study


def _family_colour(dst: Path, row: dict[str, str]) -> str:
    """Which solid colour the output's background corner shows (the top-left pixel is padding = bg)."""
    px = read_image(dst / row["output"])[0, 0].astype(int)
    return min(COLOURS, key=lambda c: np.abs(px - COLOURS[c]).sum())


def test_study_rules_correlation_and_same_stems(tmp_path):
    src, masks, bg = make_data(tmp_path, per_class=24)
    plan = plan_study(src, bg, masks=masks, correlation=0.8, test_fraction=0.25, seed=0)
    dst = tmp_path / "study"
    rep = build_study(plan, dst, size=24)
    assert rep.failed == [] and rep.count("done") == len(plan.outputs)
    table = rows(dst)
    own = {c: f.name for c, f in plan.families.items()}
    order = sorted(CLASSES)
    for r in table:
        # the pixels agree with the manifest: the background is the family's colour
        if r["split"] != "test-fg-only":
            assert _family_colour(dst, r) == r["bg_family"]
            assert r["own_family"] == str(int(r["bg_family"] == own[r["label"]]))
        if r["split"] == "test-kept":
            assert r["bg_family"] == own[r["label"]]
        if r["split"] == "test-reversed":
            assert r["bg_family"] != own[r["label"]]
            assert r["bg_family"] == own[order[(order.index(r["label"]) + 1) % 3]]
    train = [r for r in table if r["split"] == "train"]
    n = len(train)
    measured = sum(r["own_family"] == "1" for r in train) / n
    assert n == 54 and abs(measured - 0.8) <= 3 * math.sqrt(0.8 * 0.2 / n)  # binomial tolerance
    assert rep.summary()["correlation_measured_train"] == pytest.approx(measured)
    stems = {s: sorted((r["label"], r["stem"]) for r in table if r["split"] == s)
             for s in ("test-kept", "test-broken", "test-reversed", "test-fg-only")}
    assert len(stems["test-kept"]) == 18 and all(v == stems["test-kept"] for v in stems.values())
    assert not {(r["label"], r["stem"]) for r in train} & set(stems["test-kept"])  # train and test disjoint
    for s in stems:
        assert sorted(p.relative_to(dst / s).as_posix() for p in (dst / s).rglob("*.png")) == \
            sorted(f"{c}/{t}.png" for c, t in stems[s])
    # where kept and broken drew the same family, the two images are identical (paired comparison)
    broken = {(r["label"], r["stem"]): r for r in table if r["split"] == "test-broken"}
    same = [r for r in table if r["split"] == "test-kept" and broken[(r["label"], r["stem"])]["own_family"] == "1"]
    assert same
    for r in same:
        twin = broken[(r["label"], r["stem"])]["output"]
        assert np.array_equal(read_image(dst / r["output"]), read_image(dst / twin))
    summary = json.loads((dst / "summary.json").read_text())
    assert summary["own_family_fraction"]["test-kept"] == 1.0 and summary["own_family_fraction"]["test-reversed"] == 0
    assert (dst / "masks" / "a" / "a000.png").is_file()


def test_broken_is_uniform_over_families(tmp_path):
    src, masks, bg = make_data(tmp_path, per_class=40)
    plan = plan_study(src, bg, masks=masks, test_fraction=0.5)
    broken = [o for o in plan.outputs if o.split == "test-broken"]
    n = len(broken)
    own = sum(o.own for o in broken) / n
    assert abs(own - 1 / 3) <= 3 * math.sqrt(2 / 9 / n)
    assert set(Counter(o.family.name for o in broken)) == set(COLOURS)


def test_deterministic_and_seeded(tmp_path):
    src, masks, bg = make_data(tmp_path, per_class=10)
    a = build_study(plan_study(src, bg, masks=masks, seed=5), tmp_path / "a", size=16)
    b = build_study(plan_study(src, bg, masks=masks, seed=5), tmp_path / "b", size=16, threads=2)
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [(r["split"], r["stem"], r["bg_family"], r["bg_file"], r["crop"]) for r in ra] == \
        [(r["split"], r["stem"], r["bg_family"], r["bg_file"], r["crop"]) for r in rb]
    for r in ra:
        assert (tmp_path / "a" / r["output"]).read_bytes() == (tmp_path / "b" / r["output"]).read_bytes()
    c = plan_study(src, bg, masks=masks, seed=6)
    assert [(o.split, o.fg.stem, o.crop) for o in c.outputs] != [(o.planned.split, o.planned.fg.stem,
                                                                   o.planned.crop) for o in a.rows]
    assert a.failed == b.failed == []


def test_resume_keeps_finished_outputs_and_refuses_other_settings(tmp_path):
    src, masks, bg = make_data(tmp_path, per_class=6)
    dst = tmp_path / "study"
    plan = plan_study(src, bg, masks=masks)
    first = build_study(plan, dst, size=16)
    victim = dst / next(o.output for o in plan.outputs if o.split == "test-broken")
    victim.unlink()
    keep = dst / next(o.output for o in plan.outputs if o.split == "train")
    mtime = keep.stat().st_mtime_ns
    again = build_study(plan, dst, size=16)
    assert again.count("done") == 1 and again.count("skipped") == first.count("done") - 1
    assert victim.is_file() and keep.stat().st_mtime_ns == mtime
    assert [r["crop"] for r in rows(dst)] == [r.crop_px for r in again.rows]  # crops written for skipped too
    with pytest.raises(ConfigError, match="other settings"):
        build_study(plan_study(src, bg, masks=masks, correlation=0.5), dst, size=16)
    assert build_study(plan_study(src, bg, masks=masks, correlation=0.5), dst, size=16,
                       overwrite=True).count("done") == len(plan.outputs)
    assert not list(dst.rglob("*.tmp"))


def test_bad_files_are_recorded_and_the_run_goes_on(tmp_path):
    src, masks, bg = make_data(tmp_path, per_class=6)
    (src / "a" / "a001.png").write_bytes(b"not a png")          # unreadable foreground
    write_mask(masks / "a" / "a002.png", np.zeros((5, 5), np.uint8))  # mask of the wrong size
    (masks / "b" / "b003.png").unlink()                            # no mask: skipped and counted
    (bg / "red" / "red0.jpg").write_bytes(b"")                      # empty background photo
    plan = plan_study(src, bg, masks=masks)
    assert [(lbl, s, r) for lbl, s, _, r in plan.skipped] == [("b", "b003", "no mask")]
    rep = build_study(plan, tmp_path / "study", size=16)
    failed = {(r.planned.fg.stem, r.planned.split) for r in rep.failed}
    assert {s for s, _ in failed} >= {"a001", "a002"}
    assert all(r.error for r in rep.failed)
    bad_bg = [r for r in rep.failed if r.planned.bg_file is not None and r.planned.bg_file.name == "red0.jpg"]
    assert all("red0.jpg" in r.error for r in bad_bg)
    assert rep.count("done") == len(plan.outputs) - len(rep.failed) > 0
    table = rows(tmp_path / "study")
    assert any(r["status"] == "no-mask" and r["stem"] == "b003" for r in table)
    assert sum(r["status"] == "failed" for r in table) == len(rep.failed)
    assert json.loads((tmp_path / "study" / "summary.json").read_text())["foregrounds"]["skipped"] == 1


def test_plan_refuses_bad_arguments(tmp_path):
    src, masks, bg = make_data(tmp_path, per_class=2)
    with pytest.raises(ConfigError):
        plan_study(src, bg, masks=masks, correlation=1.5)
    with pytest.raises(ConfigError):
        plan_study(src, bg, masks=masks, test_fraction=0.0)
    with pytest.raises(ConfigError, match="--masks"):
        plan_study(src, bg)  # no masks anywhere
    with pytest.raises(BglabError, match="mask folder"):
        plan_study(src, bg, masks=tmp_path / "nope")
    with pytest.raises(ConfigError):
        build_study(plan_study(src, bg, backend="chroma"), tmp_path / "x")  # no segmenter given


def test_cli_end_to_end_exit_codes(tmp_path):
    from bglab.cli.app import main

    src, masks, bg = make_data(tmp_path, per_class=4)
    dst = tmp_path / "study"
    args = ["correlate", str(src), str(dst), "--backgrounds", str(bg), "--masks", str(masks), "--size", "16"]
    assert main(args) == 0
    assert (dst / "test-reversed" / "a").is_dir() and (dst / "summary.json").is_file()
    (src / "c" / "c000.png").write_bytes(b"broken")
    assert main([*args, "--overwrite"]) == 1
    assert main([*args, "--correlation", "0.3"]) == 2  # other settings, no --overwrite


def test_real_webcam_with_chroma_backend(tmp_path, shared_data):
    import shutil

    webcam, backgrounds = shared_data / "rps" / "webcam", shared_data / "backgrounds"
    if not (webcam.is_dir() and backgrounds.is_dir()):
        pytest.skip("shared data rps/webcam or backgrounds missing")
    src = tmp_path / "src"
    for c in ("paper", "rock", "scissors"):
        for p in sorted((webcam / c).glob("*.png"))[:3]:
            (src / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, src / c / p.name)
    from bglab.foreground import create

    plan = plan_study(src, backgrounds, backend="chroma", test_fraction=0.34)
    assert sorted(len(f.files) for f in plan.families.values()) == [8, 8, 9]
    rep = build_study(plan, tmp_path / "study", size=64, segmenter=create("chroma", kind="segmenter"))
    assert rep.failed == []
    kept = [o for o in plan.outputs if o.split == "test-kept"]
    assert kept
    for o in kept:
        img = read_image(tmp_path / "study" / o.output)
        rev = read_image(tmp_path / "study" / f"test-reversed/{o.fg.label}/{o.fg.stem}.png")
        only = read_image(tmp_path / "study" / f"test-fg-only/{o.fg.label}/{o.fg.stem}.png")
        assert img.shape == (64, 64, 3)
        fg = only.sum(axis=2) > 0
        assert 0.05 < fg.mean() < 0.8  # the hand was keyed out of the green screen
        green = (img[..., 1].astype(int) - np.maximum(img[..., 0], img[..., 2])) > 60
        assert green.mean() < 0.2  # no green screen left around the hand
        assert not np.array_equal(img, rev)  # reversed puts the hand on another family's photo
