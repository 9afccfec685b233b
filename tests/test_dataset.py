"""Tests of bglab.data.dataset (folders, manifests, combine, split, counts) and the ``bglab dataset`` command."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bglab.data.dataset import (
    ManifestProblem,
    Sample,
    Split,
    class_names,
    combine,
    count_matrix,
    counts_table,
    default_group,
    format_counts,
    read_imagefolder,
    read_manifest,
    regroup,
    split,
    write_manifest,
)
from bglab.errors import ConfigError, DatasetError
from bglab.ops.box import Box
from tests.conftest import shared_path

# ------------------------------------------------------------------------------------------------ helpers


def _touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _check_partition(samples: list[Sample], sp: Split) -> None:
    """Every sample in exactly one split, and no group in two splits."""
    parts = sp.as_dict()
    flat = [s for p in parts.values() for s in p]
    assert Counter(flat) == Counter(samples)
    where: dict[str, set[str]] = {}
    for name, p in parts.items():
        for s in p:
            where.setdefault(s.group, set()).add(name)
    crossing = {g: w for g, w in where.items() if len(w) > 1}
    assert not crossing, f"groups in several splits: {list(crossing.items())[:5]}"


@pytest.fixture(scope="module")
def webcam() -> list[Sample]:
    return read_imagefolder(shared_path("rps", "webcam"))


@pytest.fixture(scope="module")
def sxsw() -> list[Sample]:
    return read_imagefolder(shared_path("rps", "sxsw"))


# ----------------------------------------------------------------------------------------- groups, Sample


@pytest.mark.parametrize(("name", "group"), [
    ("abc_jpg.rf.123.jpg", "abc_jpg"),
    ("training__rock.0001_png.rf.5e009a9ec5fbf7a8e856ba7f413996af_01894.jpg", "training__rock.0001_png"),
    ("sub/dir/cat_3.jpg", "cat_3"),
    ("noext", "noext"),
    ("a.b.png", "a.b"),
])
def test_default_group(name: str, group: str) -> None:
    assert default_group(Path(name)) == group
    assert default_group(name) == group


def test_sample_defaults_group_per_label_and_coerces_paths() -> None:
    s = Sample(path="x/abc_jpg.rf.9.jpg", label="rock", origin="o", mask_path="m/abc.png")  # type: ignore[arg-type]
    assert s.path == Path("x/abc_jpg.rf.9.jpg") and s.mask_path == Path("m/abc.png")
    assert s.group == "rock/abc_jpg"
    # the same file name in another class is another group
    assert Sample(Path("y/abc_jpg.rf.1.jpg"), "paper", "o").group == "paper/abc_jpg"
    assert Sample(Path("a.jpg"), "rock", "o", group="g1").group == "g1"
    with pytest.raises(AttributeError):
        s.label = "paper"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- real folders


def test_webcam_three_classes_of_450(webcam: list[Sample]) -> None:
    assert len(webcam) == 1350
    assert class_names(webcam) == ["paper", "rock", "scissors"]
    assert Counter(s.label for s in webcam) == {"paper": 450, "rock": 450, "scissors": 450}
    assert {s.origin for s in webcam} == {"webcam"}
    assert all(s.path.suffix == ".png" and s.path.is_file() and s.path.parent.name == s.label for s in webcam)
    assert all(s.mask_path is None and s.box is None for s in webcam)
    assert len({s.group for s in webcam}) == 1350  # unique random stems


def test_sxsw_groups_by_roboflow_stem(sxsw: list[Sample]) -> None:
    assert Counter(s.label for s in sxsw) == {"rock": 740, "paper": 553, "scissors": 584}
    groups = Counter(s.group for s in sxsw)
    assert len(groups) < len(sxsw) * 0.5  # augmented copies fall together
    assert max(groups.values()) > 1
    for s in sxsw:
        assert ".rf." in s.path.name
        assert s.group == f"{s.label}/{s.path.name.split('.rf.')[0]}"


def test_sxsw_split_keeps_groups_whole_and_stratifies(sxsw: list[Sample]) -> None:
    sp = split(sxsw, fractions=(0.7, 0.15, 0.15), seed=0)
    _check_partition(sxsw, sp)
    per_label = Counter(s.label for s in sxsw)
    for name, frac in zip(("train", "val", "test"), (0.7, 0.15, 0.15), strict=True):
        got = Counter(s.label for s in getattr(sp, name))
        for label, n in per_label.items():
            assert abs(got[label] / n - frac) < 0.03, (name, label, got[label], n)
        assert abs(len(getattr(sp, name)) / len(sxsw) - frac) < 0.02


def test_sxsw_split_is_deterministic_and_order_free(sxsw: list[Sample]) -> None:
    a = split(sxsw, seed=3)
    b = split(list(sxsw), seed=3)
    shuffled = list(sxsw)
    random.Random(1).shuffle(shuffled)
    c = split(shuffled, seed=3)
    d = split(list(reversed(sxsw)), seed=3)
    assert a == b == c == d
    other = split(sxsw, seed=4)
    assert other.train != a.train  # the seed matters
    _check_partition(sxsw, other)


def test_sxsw_frames_shared_across_labels_can_be_regrouped(sxsw: list[Sample]) -> None:
    # crops of one upstream frame exist under several labels (training__rock.0300_png / training__paper.0300_png);
    # a frame-level group key spans labels, and split still keeps every such group whole
    def frame(s: Sample) -> str:
        return re.sub(r"^[^_]*__[^.]+\.", "", default_group(s.path))

    by_frame = regroup(sxsw, frame)
    labels_per_frame: dict[str, set[str]] = {}
    for s in by_frame:
        labels_per_frame.setdefault(s.group, set()).add(s.label)
    assert sum(len(v) > 1 for v in labels_per_frame.values()) >= 10
    sp = split(by_frame, seed=0)
    _check_partition(by_frame, sp)
    assert 0.65 < len(sp.train) / len(by_frame) < 0.75


def test_pets3_masks_matched_by_stem() -> None:
    pets = read_imagefolder(shared_path("pets3"))
    assert len(pets) == 599
    assert Counter(s.label for s in pets) == {"Abyssinian": 199, "Bengal": 200, "american_bulldog": 200}
    assert {s.origin for s in pets} == {"pets3"}
    for s in pets:
        assert s.path.parent.name == "images"
        assert s.mask_path is not None and s.mask_path.is_file()
        assert s.mask_path.parent.name == "masks" and s.mask_path.stem == s.path.stem
    nomask = read_imagefolder(shared_path("pets3"), mask_dir=None, origin="pets")
    assert all(s.mask_path is None and s.origin == "pets" for s in nomask)
    trimaps = read_imagefolder(shared_path("pets3"), mask_dir="trimaps")
    assert all(s.mask_path is not None and s.mask_path.parent.name == "trimaps" for s in trimaps)


def test_combine_webcam_and_sxsw_keeps_origins(webcam: list[Sample], sxsw: list[Sample]) -> None:
    both = combine(webcam, sxsw)
    assert len(both) == 1350 + 1877
    assert Counter(s.origin for s in both) == {"webcam": 1350, "sxsw": 1877}
    m = count_matrix(both)
    assert m["rock"] == {"sxsw": 740, "webcam": 450}
    df = counts_table(both)
    assert df.loc["paper", "sxsw"] == 553 and df.loc["scissors", "webcam"] == 450
    assert df.loc["total", "total"] == 3227
    assert list(df.index) == ["paper", "rock", "scissors", "total"]
    assert list(df.columns) == ["sxsw", "webcam", "total"]
    sp = split(both, seed=0)
    _check_partition(both, sp)
    for part in sp.as_dict().values():  # every class x origin stratum lands in every split
        assert {(s.label, s.origin) for s in part} == {(s.label, s.origin) for s in both}
    # re-listing a source is harmless
    assert combine(both, webcam) == both


# ------------------------------------------------------------------------------------- synthetic folders


def test_imagefolder_plain_layout_skips_hidden_and_non_images(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    for name in ("b.jpg", "a.PNG", ".hidden.jpg", "notes.txt", "c.jpeg"):
        _touch(root / "cat" / name)
    _touch(root / "dog" / "d.webp")
    _touch(root / "cat" / "masks" / "a.png")
    (root / ".git").mkdir()
    _touch(root / "README.md")
    samples = read_imagefolder(root)
    assert [(s.label, s.path.name) for s in samples] == [
        ("cat", "a.PNG"), ("cat", "b.jpg"), ("cat", "c.jpeg"), ("dog", "d.webp")]
    assert {s.origin for s in samples} == {"toy"}
    assert samples[0].mask_path == root / "cat" / "masks" / "a.png"
    assert samples[1].mask_path is None
    assert read_imagefolder(root, origin="lab")[0].origin == "lab"


def test_imagefolder_image_dir_and_missing_masks(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _touch(root / "x" / "pics" / "1.jpg")
    _touch(root / "x" / "pics" / "2.jpg")
    _touch(root / "x" / "masks" / "1.png")
    samples = read_imagefolder(root, image_dir="pics")
    assert [s.mask_path.name if s.mask_path else None for s in samples] == ["1.png", None]
    with pytest.raises(DatasetError, match="no 'imgs' folder"):
        read_imagefolder(root, image_dir="imgs")


def test_imagefolder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        read_imagefolder(tmp_path / "nope")
    assert exc.value.path == tmp_path / "nope"
    flat = tmp_path / "flat"
    _touch(flat / "a.jpg")
    with pytest.raises(DatasetError, match="no class folders") as exc:
        read_imagefolder(flat)
    assert exc.value.path == flat and "sub-folder per class" in str(exc.value)
    empty = tmp_path / "empty"
    _touch(empty / "cat" / "a.jpg")
    _touch(empty / "dog" / "notes.txt")
    with pytest.raises(DatasetError, match="'dog' holds no images") as exc:
        read_imagefolder(empty)
    assert exc.value.hint


def test_imagefolder_custom_group_fn(tmp_path: Path) -> None:
    for n in ("p1_a.jpg", "p1_b.jpg", "p2_a.jpg"):
        _touch(tmp_path / "r" / "c" / n)
    samples = read_imagefolder(tmp_path / "r", group_fn=lambda p: p.stem.split("_")[0])
    assert [s.group for s in samples] == ["c/p1", "c/p1", "c/p2"]


# ---------------------------------------------------------------------------------------------- combine


def test_combine_rejects_one_file_with_two_labels(tmp_path: Path) -> None:
    p = _touch(tmp_path / "a.jpg")
    a = [Sample(p, "rock", "one")]
    b = [Sample(tmp_path / "." / "a.jpg", "paper", "two")]
    with pytest.raises(DatasetError, match="two labels") as exc:
        combine(a, b)
    assert "rock" in str(exc.value) and "paper" in str(exc.value) and str(p.name) in str(exc.value)
    c = [Sample(p, "rock", "two")]
    assert combine(a, c) == a  # same label twice: kept once, first origin wins


# -------------------------------------------------------------------------------------------- manifests


def _write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    for name in ("img/a.jpg", "img/b.jpg", "img/c_jpg.rf.1.jpg", "img/c_jpg.rf.2.jpg", "masks/a.png"):
        _touch(tmp_path / name)
    return tmp_path


def test_manifest_good_rows(files: Path) -> None:
    m = _write(files / "lab.csv", "\ufeffpath,label,origin,mask,xmin,ymin,xmax,ymax,group,extra\n"
               "img/a.jpg,cat,studio,masks/a.png,1,2,30.5,40,,x\n"
               "img/b.jpg,dog,,,,,,,g7,y\n"
               "\n"
               f"{files / 'img' / 'c_jpg.rf.1.jpg'},dog,,,,,,,,\n"
               "img/c_jpg.rf.2.jpg, dog ,,,,,,,,\n")
    s = read_manifest(m)
    assert [x.path for x in s] == [files / "img/a.jpg", files / "img/b.jpg", files / "img/c_jpg.rf.1.jpg",
                                   files / "img/c_jpg.rf.2.jpg"]
    assert s[0] == Sample(files / "img/a.jpg", "cat", "studio", files / "masks/a.png", Box(1, 2, 30.5, 40))
    assert s[0].group == "cat/a"
    assert s[1].origin == "lab" and s[1].group == "g7" and s[1].box is None and s[1].mask_path is None
    assert s[2].group == s[3].group == "dog/c_jpg" and s[3].label == "dog"


def test_manifest_without_optional_columns_and_named_manifest(files: Path) -> None:
    m = _write(files / "webcam" / "manifest.csv", "label,path\ncat,../img/a.jpg\n")
    (s,) = read_manifest(m)
    assert s.path == files / "webcam" / ".." / "img" / "a.jpg"
    assert s.origin == "webcam"  # manifest.csv takes its folder's name


def test_manifest_missing_columns(files: Path) -> None:
    m = _write(files / "bad.csv", "file,class\nimg/a.jpg,cat\n")
    with pytest.raises(DatasetError, match="path, label") as exc:
        read_manifest(m)
    assert exc.value.path == m and "line 1" in str(exc.value) and str(m) in str(exc.value)
    m2 = _write(files / "bad2.csv", "path,label,xmin,ymin\nimg/a.jpg,cat,1,2\n")
    with pytest.raises(DatasetError, match="all four"):
        read_manifest(m2)
    with pytest.raises(DatasetError, match="no rows"):
        read_manifest(_write(files / "empty.csv", "path,label\n"))
    with pytest.raises(DatasetError, match="no header"):
        read_manifest(_write(files / "blank.csv", ""))
    with pytest.raises(DatasetError, match="not found"):
        read_manifest(files / "absent.csv")


@pytest.mark.parametrize(("cells", "needle"), [
    ("nan,2,3,4", "xmin='nan' is not a finite number"),
    ("1,2,inf,4", "xmax='inf' is not a finite number"),
    ("1,two,3,4", "ymin='two' is not a number"),
    ("1,2,,4", "incomplete: xmax"),
    ("5,2,3,4", "reversed"),
    ("1,2,1,4", "zero-width"),
    ("-1,2,3,4", "negative"),
])
def test_manifest_bad_box_names_file_and_line(files: Path, cells: str, needle: str) -> None:
    m = _write(files / "boxes.csv", f"path,label,xmin,ymin,xmax,ymax\nimg/a.jpg,cat,1,2,3,4\nimg/b.jpg,cat,{cells}\n")
    with pytest.raises(DatasetError) as exc:
        read_manifest(m)
    text = str(exc.value)
    assert str(m) in text and "line 3" in text and needle in text, text
    assert exc.value.problems == [ManifestProblem(m, 3, exc.value.problems[0].message)]  # type: ignore[attr-defined]


def test_manifest_missing_file_and_mask(files: Path) -> None:
    m = _write(files / "miss.csv", "path,label,mask\nimg/a.jpg,cat,\nimg/zzz.jpg,cat,\nimg/b.jpg,dog,masks/b.png\n"
               ",dog,\nimg/b.jpg,,\n")
    with pytest.raises(DatasetError) as exc:
        read_manifest(m)
    text = str(exc.value)
    assert str(m) in text and "4 bad row(s) of 5" in text
    assert "line 3: file not found: 'img/zzz.jpg'" in text
    assert "line 4: mask not found: 'masks/b.png'" in text
    assert "line 5: empty path" in text and "line 6: empty label" in text
    samples, problems = read_manifest(m, strict=False)
    assert [s.path.name for s in samples] == ["a.jpg"]
    assert [p.line for p in problems] == [3, 4, 5, 6]
    assert str(problems[0]).startswith(f"{m}:3: file not found")


def test_manifest_lists_at_most_ten_problems(files: Path) -> None:
    rows = "".join(f"img/missing{i}.jpg,cat\n" for i in range(25))
    m = _write(files / "many.csv", "path,label\nimg/a.jpg,cat\n" + rows)
    with pytest.raises(DatasetError) as exc:
        read_manifest(m)
    text = str(exc.value)
    assert "25 bad row(s) of 26" in text and "line 12:" in text and "line 13:" not in text
    assert "and 15 more" in text
    assert len(exc.value.problems) == 25  # type: ignore[attr-defined]


def test_manifest_quoted_multiline_cell_keeps_line_numbers(files: Path) -> None:
    m = _write(files / "q.csv", 'path,label,note\nimg/a.jpg,cat,"two\nlines"\nimg/nope.jpg,cat,x\n')
    with pytest.raises(DatasetError, match="line 4: file not found"):
        read_manifest(m)


def test_write_manifest_round_trip(files: Path, tmp_path: Path) -> None:
    outside = _touch(tmp_path.parent / f"{tmp_path.name}_outside" / "o.jpg")
    samples = [
        Sample(files / "img/a.jpg", "cat", "studio", files / "masks/a.png", Box(1, 2, 30.25, 40)),
        Sample(files / "img/b.jpg", "dog", "web", group="shared,group"),
        Sample(outside, "dog", "web"),
    ]
    out = write_manifest(samples, files / "m.csv")
    assert out == files / "m.csv"
    text = out.read_text()
    assert text.splitlines()[0] == "path,label,origin,mask,xmin,ymin,xmax,ymax,group"
    assert "\nimg/a.jpg,cat,studio,masks/a.png,1.0,2.0,30.25,40.0,cat/a\n" in text
    assert f"\n{outside.as_posix()},dog" in text  # outside the manifest's folder: absolute
    back = read_manifest(out)
    norm = [(s.path.resolve(), s.label, s.origin, s.mask_path and s.mask_path.resolve(), s.box, s.group)
            for s in back]
    assert norm == [(s.path.resolve(), s.label, s.origin, s.mask_path and s.mask_path.resolve(), s.box, s.group)
                    for s in samples]
    assert sorted(p.name for p in out.parent.iterdir()) == ["img", "m.csv", "masks"]  # no temp file left


def test_webcam_manifest_csv(webcam: list[Sample]) -> None:
    s = read_manifest(shared_path("rps", "webcam", "manifest.csv"))
    assert len(s) == 1350 and {x.origin for x in s} == {"webcam"}
    assert sorted(x.path.resolve() for x in s) == sorted(x.path.resolve() for x in webcam)


# ------------------------------------------------------------------------------------------------ split


def _toy(n_per: dict[tuple[str, str], int], group_size: int = 1) -> list[Sample]:
    out = []
    for (label, origin), n in n_per.items():
        for i in range(n):
            out.append(Sample(Path(f"/d/{origin}/{label}/{i}.jpg"), label, origin,
                              group=f"{origin}/{label}/{i // group_size}"))
    return out


def test_split_fraction_checks() -> None:
    s = _toy({("a", "o"): 10})
    for bad in [(0.5, 0.5, 0.5), (1.0,), (0.5, 0.2, 0.2, 0.1), (-0.1, 0.6, 0.5), (float("nan"), 0.5, 0.5)]:
        with pytest.raises(ConfigError):
            split(s, fractions=bad)
    with pytest.raises(ConfigError, match="stratify"):
        split(s, stratify=("colour",))


def test_split_two_way_and_zero_fraction() -> None:
    s = _toy({("a", "o"): 40, ("b", "o"): 20})
    sp = split(s, fractions=(0.75, 0.25))
    assert set(sp.as_dict()) == {"train", "val"} and sp.test == []
    assert Counter(x.label for x in sp.train) == {"a": 30, "b": 15}
    _check_partition(s, sp)
    sp0 = split(s, fractions=(0.8, 0.2, 0.0))
    assert sp0.test == [] and set(sp0.as_dict()) == {"train", "val", "test"}
    assert all(v in ("train", "val") for v in sp0.assignment().values())


def test_split_small_strata_get_every_split() -> None:
    s = _toy({("a", "x"): 3, ("b", "x"): 4, ("a", "y"): 2, ("c", "y"): 1})
    for seed in range(20):
        sp = split(s, seed=seed)
        _check_partition(s, sp)
        for part in (sp.train, sp.val, sp.test):
            assert {(x.label, x.origin) for x in part} >= {("a", "x"), ("b", "x")}
        assert {(x.label, x.origin) for x in sp.train} >= {("a", "y"), ("c", "y")}  # too few: train first


def test_split_by_group_sizes_balances_counts() -> None:
    s = _toy({("a", "o"): 200}, group_size=5)  # 40 groups of 5
    sp = split(s, seed=1)
    _check_partition(s, sp)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (140, 30, 30)


def test_split_without_stratification() -> None:
    s = _toy({("a", "o"): 97, ("b", "p"): 3})
    sp = split(s, stratify=())
    _check_partition(s, sp)
    assert abs(len(sp.train) - 70) <= 1 and abs(len(sp.val) - 15) <= 1


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["o1", "o2"]), st.integers(0, 12)),
                  min_size=1, max_size=80),
    fractions=st.sampled_from([(0.7, 0.15, 0.15), (0.8, 0.2), (0.5, 0.5, 0.0), (0.34, 0.33, 0.33)]),
    seed=st.integers(0, 2**31),
    shuffle_seed=st.integers(0, 1000),
    label_scoped=st.booleans(),
)
def test_split_properties(rows, fractions, seed, shuffle_seed, label_scoped) -> None:
    samples = [Sample(Path(f"/x/{i}.jpg"), label, origin, group=f"{label}:{g}" if label_scoped else f"g{g}")
               for i, (label, origin, g) in enumerate(rows)]
    sp = split(samples, fractions=fractions, seed=seed)
    _check_partition(samples, sp)
    shuffled = list(samples)
    random.Random(shuffle_seed).shuffle(shuffled)
    assert split(shuffled, fractions=fractions, seed=seed) == sp
    if label_scoped:  # groups inside one label: strata with enough groups reach every non-empty split
        groups: dict[tuple[str, str], set[str]] = {}
        for s in samples:
            groups.setdefault((s.label, s.origin), set())
        owner: dict[str, Counter] = {}
        for s in samples:
            owner.setdefault(s.group, Counter())[(s.label, s.origin)] += 1
        for g, c in owner.items():
            groups[min(c, key=lambda k: (-c[k], k))].add(g)
        active = [n for n, f in zip(("train", "val", "test"), fractions, strict=False) if f > 0]
        for stratum, gs in groups.items():
            if len(gs) >= 3:
                for name in active:
                    assert any(g in gs for g in {s.group for s in getattr(sp, name)}), (stratum, name)


# ----------------------------------------------------------------------------------------------- counts


def test_counts_table_and_format() -> None:
    s = _toy({("a", "x"): 3, ("b", "x"): 1, ("b", "y"): 2})
    df = counts_table(s)
    assert df.to_dict() == {"x": {"a": 3, "b": 1, "total": 4}, "y": {"a": 0, "b": 2, "total": 2},
                            "total": {"a": 3, "b": 3, "total": 6}}
    assert str(df.dtypes.iloc[0]) == "int64"
    t = counts_table(s, rows="origin", cols="label")
    assert t.loc["y", "b"] == 2 and t.loc["total", "total"] == 6
    empty = counts_table([])
    assert empty.loc["total", "total"] == 0
    table = format_counts(s, title="t")
    assert [c.header for c in table.columns] == ["label \\ origin", "x", "y", "total"]
    assert list(table.columns[-1].cells) == ["3", "3", "6"]


# -------------------------------------------------------------------------------------------------- CLI


@pytest.fixture()
def cli() -> typer.Typer:
    from bglab.cli.dataset import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_cli_info_tables(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["dataset", "info", str(shared_path("rps", "webcam")),
                                 str(shared_path("rps", "sxsw")), "--split", "0.7,0.15,0.15"])
    assert r.exit_code == 0, r.output
    assert re.search(r"rock\s*│\s*740\s*│\s*450\s*│\s*1190", r.output), r.output
    assert re.search(r"total\s*│\s*1877\s*│\s*1350\s*│\s*3227", r.output)
    assert "train (" in r.output and "test (" in r.output


def test_cli_info_json(cli: typer.Typer, files: Path) -> None:
    r = CliRunner().invoke(cli, ["dataset", "info", str(shared_path("rps", "webcam")), "--json",
                                 "--split", "0.8,0.2", "--seed", "5"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["total"] == 1350 and out["classes"] == ["paper", "rock", "scissors"]
    assert out["counts"]["paper"] == {"webcam": 450}
    parts = out["split"]["parts"]
    assert set(parts) == {"train", "val"} and parts["train"]["total"] == 1080
    assert parts["val"]["counts"]["rock"] == {"webcam": 90}
    m = _write(files / "lab.csv", "path,label\nimg/a.jpg,cat\nimg/b.jpg,dog\n")
    r2 = CliRunner().invoke(cli, ["dataset", "info", "--manifest", str(m), "--json"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.output)["counts"] == {"cat": {"lab": 1}, "dog": {"lab": 1}}


def test_cli_info_errors(cli: typer.Typer, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["dataset", "info", str(tmp_path / "nope")])
    assert isinstance(r.exception, DatasetError) and "not a folder" in str(r.exception)
    _touch(tmp_path / "d" / "c" / "a.jpg")
    r2 = CliRunner().invoke(cli, ["dataset", "info", str(tmp_path / "d"), "--split", "0.7,x"])
    assert r2.exit_code == 2 and "--split" in r2.output
    r3 = CliRunner().invoke(cli, ["dataset", "info", str(tmp_path / "d"), "--split", "0.7,0.7"])
    assert isinstance(r3.exception, ConfigError)
