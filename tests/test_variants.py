"""bglab variants: the pure kinds (pixels), pairing, the batch (layout, manifest, resume, bad files) and the CLI."""

from __future__ import annotations

import os

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bglab.cli.app import app
from bglab.data.dataset import Sample, read_imagefolder
from bglab.errors import BglabError, ConfigError
from bglab.io.files import read_image, read_mask, write_image, write_mask
from bglab.ops.box import Box
from tests.conftest import csv_rows
from bglab.background.variants import (
    KINDS,
    Kind,
    VariantSkipped,
    generate_variants,
    make_variant,
    only_bg_tiles,
    parse_kinds,
    plan_pairs,
)

RED = np.array([255, 0, 0], dtype=np.uint8)
H, W = 48, 64
CLASSES = ("ant", "bee", "cat")
ALL_DIRS = [k.dir_name for k in KINDS]


def _synthetic(seed: int, green: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A textured background without any pure red, and a red square foreground at a seeded place."""
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3), dtype=np.uint8)
    if green:
        img[:] = (20, 200, 40)
    else:
        img[..., 0] = rng.integers(0, 60, (H, W))
        img[..., 1] = rng.integers(60, 255, (H, W))
        img[..., 2] = rng.integers(60, 255, (H, W))
    s = int(rng.integers(10, 18))
    y, x = int(rng.integers(2, H - s - 2)), int(rng.integers(2, W - s - 2))
    mask = np.zeros((H, W), dtype=bool)
    mask[y : y + s, x : x + s] = True
    img[mask] = RED
    return img, mask


def _is_red(img: np.ndarray) -> np.ndarray:
    return np.all(img == RED, axis=-1)


@pytest.fixture()
def pets_like(tmp_path: Path) -> Path:
    """3 classes x 4 images (48x64 PNG) with masks in the pets3 layout."""
    root = tmp_path / "src"
    for ci, c in enumerate(CLASSES):
        for i in range(4):
            img, mask = _synthetic(10 * ci + i)
            write_image(root / c / "images" / f"{c}_{i}.png", img)
            write_mask(root / c / "masks" / f"{c}_{i}.png", mask)
    return root


def _manifest(dst: Path) -> list[dict[str, str]]:
    return csv_rows(dst / "manifest.csv")


# ------------------------------------------------------------------------------------------------ kinds


def test_parse_kinds_all_regions_and_dir_names() -> None:
    ks = parse_kinds("all,bg-region=1.5,bg-region=2,only-fg")
    assert [str(k) for k in ks[:10]] == [k.name for k in KINDS]
    assert [k.dir_name for k in ks[10:]] == ["bg-region-1.5", "bg-region-2"]
    assert len(ks) == 12  # duplicate only-fg dropped
    assert str(ks[10]) == "bg-region=1.5"
    assert parse_kinds(["no-fg", "original"]) == [Kind("no-fg"), Kind("original")]
    for bad in ("only-bg", "bg-region", "bg-region=0.5", "bg-region=x", ""):
        with pytest.raises(ConfigError):
            parse_kinds(bad)


# ------------------------------------------------------------------------------------------- pure part


def test_make_variant_pixels_of_every_kind() -> None:
    img, fg = _synthetic(3)
    partner, pmask = _synthetic(4)
    pbg = only_bg_tiles(partner, pmask)
    box = Box.from_mask(fg)
    x0, y0, x1, y1 = (int(v) for v in box.xyxy)

    out, m = make_variant("only-fg", img, fg)
    assert (out[~fg] == 0).all() and (out[fg] == img[fg]).all() and (m == fg * 255).all()
    out, m = make_variant("no-fg", img, fg)
    assert (out[fg] == 0).all() and (out[~fg] == img[~fg]).all() and (m == fg * 255).all()
    out, m = make_variant("only-bg-b", img, fg)
    assert (out[y0:y1, x0:x1] == 0).all() and m[y0:y1, x0:x1].all() and m.sum() == 255 * (y1 - y0) * (x1 - x0)
    outside = ~(m > 0)
    assert (out[outside] == img[outside]).all()
    out, m = make_variant("only-bg-t", img, fg)
    assert not _is_red(out).any() and (out[outside] == img[outside]).all() and out[y0:y1, x0:x1].any()
    assert not _is_red(pbg).any()
    for kind in ("mixed-same", "mixed-rand", "mixed-next"):
        out, m = make_variant(kind, img, fg, partner_bg=pbg)
        assert (out[fg] == img[fg]).all() and (out[~fg] == pbg[~fg]).all()
    out, _ = make_variant("mixed-same", img, fg, partner_bg=pbg[:20, :30])  # another size: fitted (cover)
    assert out.shape == img.shape and (out[fg] == img[fg]).all()
    out, _ = make_variant("bg-color", img, fg, color=(1, 2, 3))
    assert (out[~fg] == (1, 2, 3)).all() and (out[fg] == img[fg]).all()
    out, _ = make_variant("bg-blur", img, fg, blur=5)
    assert (out[fg] == img[fg]).all() and np.abs(out[~fg].astype(int) - img[~fg]).mean() > 5
    out, m = make_variant("bg-region=2", img, fg)
    region = np.zeros((H, W), bool)
    cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    region[max(0, int(np.floor(cy - bh))) : int(np.ceil(cy + bh)), max(0, int(np.floor(cx - bw))) :
           int(np.ceil(cx + bw))] = True
    assert (out[~region] == 0).all() and (out[region] == img[region]).all() and (m == fg * 255).all()
    out, _ = make_variant("bg-region=1", img, fg)
    assert (out[fg] == img[fg]).all() and (out[:y0] == 0).all()
    out, _ = make_variant("original", img, fg)
    assert (out == img).all() and out is not img


def test_make_variant_empty_mask() -> None:
    img, _ = _synthetic(5)
    empty = np.zeros((H, W), bool)
    out, m = make_variant("only-fg", img, empty)
    assert not out.any() and not m.any()
    out, _ = make_variant("no-fg", img, empty)
    assert (out == img).all()
    for kind in ("only-bg-b", "only-bg-t", "bg-region=1.5", "mixed-same"):
        with pytest.raises(VariantSkipped, match="no foreground"):
            make_variant(kind, img, empty, partner_bg=img)
    assert (only_bg_tiles(img, empty) == img).all()  # nothing to hide
    with pytest.raises(BglabError, match="partner_bg"):
        make_variant("mixed-next", img, _synthetic(5)[1])


def test_plan_pairs_rules_and_determinism() -> None:
    samples = [Sample(Path(f"/d/{c}/{c}_{i}.jpg"), c, "d") for c in CLASSES for i in range(5)]
    p = plan_pairs(samples, seed=0)
    label = {s.path: s.label for s in samples}
    nxt = {"ant": "bee", "bee": "cat", "cat": "ant"}
    for s in samples:
        for kind in ("mixed-same", "mixed-rand", "mixed-next"):
            assert p[kind][s.path] is not None and p[kind][s.path] != s.path
        assert label[p["mixed-same"][s.path]] == s.label
        assert label[p["mixed-next"][s.path]] == nxt[s.label]
    assert plan_pairs(list(reversed(samples)), seed=0) == p  # order of the input does not matter
    assert plan_pairs(samples, seed=1) != p
    assert len({label[v] for v in p["mixed-rand"].values()}) > 1
    lone = [Sample(Path("/d/x/a.jpg"), "x", "d")]
    assert plan_pairs(lone, 0)["mixed-same"][lone[0].path] is None


# ------------------------------------------------------------------------------------------ batch part


def test_generate_layout_manifest_and_pixels(pets_like: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    rep = generate_variants(pets_like, dst, "all,bg-region=1.5", seed=0)
    assert rep.count("ok") == 12 * 11 and not rep.failed
    rows = _manifest(dst)
    assert len(rows) == 12 * 11 and list(rows[0]) == ["kind", "label", "stem", "source", "output", "mask",
                                                      "bg_source", "color", "status", "error", "coverage", "qc"]
    src = read_imagefolder(pets_like)
    for d in [*ALL_DIRS, "bg-region-1.5"]:
        got = read_imagefolder(dst / d)
        assert [(s.label, s.path.stem) for s in got] == [(s.label, s.path.stem) for s in src]
        assert all(s.mask_path is not None for s in got)
    by = {(r["kind"], r["label"], r["stem"]): r for r in rows}
    nxt = {"ant": "bee", "bee": "cat", "cat": "ant"}
    for s in src:
        stem, c = s.path.stem, s.label
        img = read_image(s.path)
        fg = read_mask(s.mask_path) > 127

        def load(kind: str, c: str = c, stem: str = stem) -> tuple[np.ndarray, np.ndarray]:
            r = by[(kind, c, stem)]
            return read_image(dst / r["output"]), read_mask(dst / r["mask"])

        out, m = load("only-fg")
        assert (out[~fg] == 0).all() and (out[fg] == img[fg]).all() and ((m > 0) == fg).all()
        out, m = load("no-fg")
        assert (out[fg] == 0).all() and ((m > 0) == fg).all()
        out, m = load("only-bg-b")
        assert (out[m > 0] == 0).all() and (m > 0)[fg].all()
        out, m = load("only-bg-t")
        assert not _is_red(out).any() and (m > 0)[fg].all()
        assert set(np.unique(m)) <= {0, 255}
        same, rand, nx = (Path(by[(k, c, stem)]["bg_source"]) for k in ("mixed-same", "mixed-rand", "mixed-next"))
        assert same.parent.parent.name == c and nx.parent.parent.name == nxt[c]
        assert s.path not in (same, rand, nx)
        out, m = load("mixed-next")
        assert (out[fg] == img[fg]).all() and ((m > 0) == fg).all()
        pmask = read_mask(nx.parent.parent / "masks" / f"{nx.stem}.png")
        assert (out[~fg] == only_bg_tiles(read_image(nx), pmask)[~fg]).all()  # the partner's Only-BG-T
        assert not _is_red(out[~fg]).any()  # so the partner's own fg is hidden
        out, _ = load("bg-color")
        col = by[("bg-color", c, stem)]["color"]
        assert (out[~fg] == tuple(int(col[i : i + 2], 16) for i in (1, 3, 5))).all()


def _torchvision_imagefolder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """torchvision.datasets.ImageFolder's file list, by its rule (torchvision is not installed here): classes are
    the sorted sub-folders; every file below a class folder (recursively, links followed) whose extension is an
    image extension is a sample of that class."""
    exts = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    samples = []
    for i, c in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / c, followlinks=True)):
            samples += [(os.path.join(dirpath, f), i) for f in sorted(files) if f.lower().endswith(exts)]
    return classes, samples


def test_every_kind_loads_as_an_imagefolder(pets_like: Path, tmp_path: Path) -> None:
    """ImageFolder(DST/<kind>) sees exactly the variant images, one per source image: no masks among them."""
    dst = tmp_path / "dst"
    rep = generate_variants(pets_like, dst, "all", seed=0)
    assert not rep.failed
    src = read_imagefolder(pets_like)
    for d in ALL_DIRS:
        classes, samples = _torchvision_imagefolder(dst / d)
        assert classes == ["ant", "bee", "cat"]
        assert [(Path(p).relative_to(dst / d).as_posix(), i) for p, i in samples] == [
            (f"{s.label}/{s.path.stem}.png", classes.index(s.label)) for s in src]
        _, masks = _torchvision_imagefolder(dst / "_masks" / d)
        assert len(masks) == len(src)  # the masks mirror the images in the sibling tree


def test_deterministic_across_runs_and_workers(pets_like: Path, tmp_path: Path) -> None:
    kinds = "mixed-same,mixed-rand,mixed-next,bg-color"
    generate_variants(pets_like, tmp_path / "a", kinds, seed=7, workers=1)
    generate_variants(pets_like, tmp_path / "b", kinds, seed=7, workers=2)
    generate_variants(pets_like, tmp_path / "c", kinds, seed=8, workers=1)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 1 + 4 * 12 * 2
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a/manifest.csv").read_bytes() != (tmp_path / "c/manifest.csv").read_bytes()


def test_resume_rewrites_only_missing(pets_like: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    generate_variants(pets_like, dst, "only-fg,mixed-same", seed=0)
    outs = sorted(p for p in dst.rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in outs}
    manifest1 = (dst / "manifest.csv").read_text()
    gone = dst / "mixed-same/bee/bee_2.png"
    gone.unlink()
    rep = generate_variants(pets_like, dst, "only-fg,mixed-same", seed=0, workers=2)
    assert rep.reused == 2 * 12 - 1 and rep.count("ok") == 24
    assert gone.is_file()
    changed = [p for p in outs if p.stat().st_mtime_ns != before[p]]
    # the variant's image + mask pair only
    assert sorted(changed) == sorted([gone, dst / "_masks/mixed-same/bee/bee_2.png"])
    assert (dst / "manifest.csv").read_text() == manifest1


def test_bad_inputs_recorded_and_exit_1(pets_like: Path, tmp_path: Path) -> None:
    (pets_like / "bee/images/bee_1.png").unlink()
    (pets_like / "bee/masks/bee_1.png").unlink()
    (pets_like / "bee/images/bee_1.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # corrupt JPEG
    write_mask(pets_like / "cat/masks/cat_2.png", np.zeros((10, 10), np.uint8))  # wrong size
    (pets_like / "ant/masks/ant_3.png").unlink()  # missing mask
    dst = tmp_path / "dst"
    res = CliRunner().invoke(app, ["variants", str(pets_like), str(dst), "--kinds", "only-fg,no-fg,mixed-same"])
    assert res.exit_code == 1, res.output
    rows = _manifest(dst)
    assert len(rows) == 3 * 12
    failed = {(r["label"], r["stem"]) for r in rows if r["status"] == "failed" and r["kind"] != "mixed-same"}
    assert failed == {("bee", "bee_1"), ("cat", "cat_2"), ("ant", "ant_3")}
    err = {(r["label"], r["stem"]): r["error"] for r in rows if r["kind"] == "only-fg"}
    assert "bee_1.jpg" in err[("bee", "bee_1")]
    assert "cat_2.png" in err[("cat", "cat_2")] and "mask" in err[("cat", "cat_2")]
    assert "no mask file" in err[("ant", "ant_3")]
    for r in rows:  # a mixed row whose partner is bad fails, naming the partner; the rest are written
        if r["kind"] == "mixed-same" and r["status"] == "failed" and (r["label"], r["stem"]) not in failed:
            assert "partner" in r["error"] and Path(r["bg_source"]).name in r["error"]
        elif r["status"] == "ok":
            assert (dst / r["output"]).is_file() and (dst / r["mask"]).is_file()
    assert sum(r["status"] == "ok" for r in rows if r["kind"] == "only-fg") == 9


def test_empty_mask_skips_box_kinds(pets_like: Path, tmp_path: Path) -> None:
    write_mask(pets_like / "ant/masks/ant_0.png", np.zeros((H, W), np.uint8))
    rep = generate_variants(pets_like, tmp_path / "dst", "only-fg,only-bg-b,bg-region=2,mixed-same")
    st = {(r.kind, r.stem): (r.status, r.error) for r in rep.rows if r.stem == "ant_0"}
    assert st[("only-fg", "ant_0")][0] == "ok"
    assert not read_image(tmp_path / "dst/only-fg/ant/ant_0.png").any()
    for k in ("only-bg-b", "bg-region=2", "mixed-same"):
        assert st[(k, "ant_0")][0] == "skipped" and "no foreground" in st[(k, "ant_0")][1]
    assert not rep.failed


def test_size_locator_and_cli_summary(pets_like: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    res = CliRunner().invoke(app, ["variants", str(pets_like), str(dst), "--kinds", "only-bg-b,only-fg",
                                   "--size", "32", "--locator", "full", "--color", "#010203"])
    assert res.exit_code == 0, res.output
    assert "only-bg-b" in res.output and "ok" in res.output
    img = read_image(dst / "only-bg-b/ant/ant_0.png")
    m = read_mask(dst / "_masks/only-bg-b/ant/ant_0.png")
    assert img.shape == (32, 32, 3) and m.shape == (32, 32)
    assert not img.any()  # the "full" locator's box is the whole image: all black (padding is black too)
    assert set(np.unique(m)) == {0, 255} and m[16].all()  # the box fills the content rows, padding is 0
    fg = read_mask(dst / "_masks/only-fg/ant/ant_0.png")
    assert set(np.unique(fg)) == {0, 255}


def test_backend_masks_on_plain_imagefolder(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    for c in ("x", "y"):
        for i in range(2):
            img, _ = _synthetic(i + (5 if c == "y" else 0), green=True)
            write_image(src / c / f"{c}{i}.png", img)
    with pytest.raises(ConfigError, match="backend"):
        generate_variants(src, tmp_path / "d0", "only-fg")
    rep = generate_variants(src, tmp_path / "d1", "only-fg,mixed-next", backend="chroma")
    assert not rep.failed and rep.count("ok") == 8
    for c in ("x", "y"):
        for i in range(2):
            out = read_image(tmp_path / f"d1/only-fg/{c}/{c}{i}.png")
            red = _is_red(out)
            assert red.sum() > 50 and (out[~red] == 0).mean() > 0.9
    assert list((tmp_path / "d1/.cache").rglob("*.png"))  # backend masks kept for partners / re-runs
    assert read_imagefolder(tmp_path / "d1/mixed-next")[0].mask_path is not None


def test_usage_errors(pets_like: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inside the source"):
        generate_variants(pets_like, pets_like / "out", "only-fg")
    with pytest.raises(BglabError, match="unknown backend"):
        generate_variants(pets_like, tmp_path / "d", "only-fg", backend="nope")
    with pytest.raises(BglabError, match="not a locator"):
        generate_variants(pets_like, tmp_path / "d", "only-fg", locator="chroma")
    from bglab.cli.app import main

    assert main(["variants", str(pets_like), str(tmp_path / "d"), "--kinds", "bogus"]) == 2


# ------------------------------------------------------------------------------------------- real data


def test_pets3_subset_all_kinds(shared_data: Path, tmp_path: Path) -> None:
    pets = shared_data / "pets3"
    if not pets.is_dir():
        pytest.skip("pets3 missing from the shared data")
    src = tmp_path / "pets"
    for c in sorted(p.name for p in pets.iterdir() if p.is_dir()):
        for img in sorted((pets / c / "images").glob("*.jpg"))[:6]:
            for sub, suffix in (("images", ".jpg"), ("masks", ".png")):
                (src / c / sub).mkdir(parents=True, exist_ok=True)
                shutil.copy(pets / c / sub / (img.stem + suffix), src / c / sub)
    dst = tmp_path / "dst"
    rep = generate_variants(src, dst, "all,bg-region=1.5,bg-region=2", size=96)
    assert rep.images == 18 and rep.count("ok") == 18 * 12 and not rep.failed
    for s in read_imagefolder(dst / "only-fg"):
        out, m = read_image(s.path), read_mask(s.mask_path)
        assert out.shape == (96, 96, 3) and (out[m == 0] == 0).all() and out[m > 0].any()
        nofg = read_image(dst / "no-fg" / s.label / s.path.name)
        assert (nofg[m > 0] == 0).all() and nofg[m == 0].any()
        bgb = read_image(dst / "only-bg-b" / s.label / s.path.name)
        boxm = read_mask(dst / "_masks" / "only-bg-b" / s.label / s.path.name)
        assert (bgb[boxm > 0] == 0).all() and (boxm[m > 0] > 0).all()
        orig = read_image(dst / "original" / s.label / s.path.name)
        assert (out[m > 0] == orig[m > 0]).all()
    for d in ("no-fg", "only-bg-t", "mixed-rand", "bg-region-2"):
        assert len(read_imagefolder(dst / d)) == 18
