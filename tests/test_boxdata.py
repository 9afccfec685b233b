"""Box annotations: reading CSV / VOC / COCO, reporting every broken box with file and line, skip / repair rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bglab.cli.app import main
from bglab.data.boxdata import (
    KINDS,
    BoxAnnotation,
    check_boxes,
    read_boxes,
    read_boxes_coco,
    read_boxes_voc,
    to_samples,
    write_boxes_csv,
    write_clean_manifest,
)
from bglab.data.dataset import read_manifest, split
from bglab.errors import DatasetError
from bglab.ops.box import Box
from tests.conftest import shared_path

HEADER = "file,width,height,label,label_original,xmin,ymin,xmax,ymax\n"
# line numbers in the file: header is line 1
ROWS = [
    ("good", "a.jpg,40,30,with_mask,x,5,5,15,15"),  # 2
    ("nan", "a.jpg,40,30,with_mask,x,nan,5,15,15"),  # 3
    ("text", "a.jpg,40,30,with_mask,x,abc,5,15,15"),  # 4
    ("negative", "a.jpg,40,30,with_mask,x,-3,5,15,15"),  # 5
    ("reversed", "a.jpg,40,30,with_mask,x,15,5,5,15"),  # 6
    ("zero-width", "a.jpg,40,30,with_mask,x,7,5,7,15"),  # 7
    ("zero-height", "a.jpg,40,30,with_mask,x,5,9,15,9"),  # 8
    ("outside-image", "a.jpg,40,30,with_mask,x,50,5,60,15"),  # 9
    ("partly-outside", "a.jpg,40,30,without_mask,x,30,20,45,35"),  # 10
    ("missing-file", "gone.jpg,40,30,with_mask,x,5,5,15,15"),  # 11
    ("image-size-mismatch", "b.jpg,80,60,with_mask,x,5,5,15,15"),  # 12
    ("unreadable", "corrupt.jpg,40,30,with_mask,x,5,5,15,15"),  # 13
]


def _img(path: Path, w: int, h: int) -> Path:
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


@pytest.fixture()
def bad(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    _img(images / "a.jpg", 40, 30)
    _img(images / "b.jpg", 40, 30)  # annotated as 80x60
    _img(images / "lonely.jpg", 20, 20)  # no boxes
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text(HEADER + "".join(r + "\n" for _, r in ROWS))
    return csv_path, images


def _by_line(report) -> dict[str, object]:
    return {i.source_line: i for i in report.issues}


def test_csv_every_broken_kind_reported_with_file_and_line_train_mode(bad):
    csv_path, images = bad
    anns = read_boxes(csv_path)
    assert len(anns) == len(ROWS)
    assert all(isinstance(a, BoxAnnotation) for a in anns)
    rep = check_boxes(anns, images, mode="train")
    issues = _by_line(rep)
    for line, (kind, _) in enumerate(ROWS, start=2):
        where = f"ann.csv:{line}"
        if kind == "good":
            assert where not in issues
            continue
        assert where in issues, kind
        assert kind in issues[where].kinds, (kind, issues[where])
        assert issues[where].action == "skipped"
    # train mode keeps only the good box
    assert [a.source_line for a in rep.kept] == ["ann.csv:2"]
    lonely = [i for i in rep.issues if i.kinds == ("files-with-no-boxes",)]
    assert [i.image for i in lonely] == ["lonely.jpg"]
    counts = rep.counts
    assert set(counts) == set(KINDS)
    assert counts["files-with-no-boxes"] == 1 and counts["nan"] == 1 and counts["text"] == 1
    assert counts["negative"] == 1 and counts["partly-outside"] == 2  # the negative one is partly outside too
    assert "ann.csv:4" in str(issues["ann.csv:4"]) and "'abc'" in issues["ann.csv:4"].detail
    assert not rep.ok
    json.dumps(rep.as_dict())  # strict JSON-able (NaN boxes become null)


def test_csv_test_mode_repairs_what_is_safe_and_drops_the_rest(bad):
    csv_path, images = bad
    rep = check_boxes(read_boxes(csv_path), images, mode="test")
    issues = _by_line(rep)
    kept = {a.source_line: a.box for a in rep.kept}
    expected_repaired = {
        "ann.csv:5": Box(0, 5, 15, 15),  # negative -> clipped
        "ann.csv:7": Box(7, 5, 8, 15),  # zero width -> one pixel
        "ann.csv:8": Box(5, 9, 15, 10),  # zero height -> one pixel
        "ann.csv:10": Box(30, 20, 40, 30),  # partly outside -> clipped
        "ann.csv:12": Box(5, 5, 15, 15),  # size mismatch: kept against the file's real size
    }
    for where, box in expected_repaired.items():
        assert issues[where].action == "repaired"
        assert kept[where] == box
        assert issues[where].repaired == box.xyxy
    for where in ("ann.csv:3", "ann.csv:4", "ann.csv:6", "ann.csv:9", "ann.csv:11", "ann.csv:13"):
        assert issues[where].action == "dropped"
        assert where not in kept
    assert kept["ann.csv:2"] == Box(5, 5, 15, 15)
    for b in kept.values():
        assert b.is_valid and not b.problems(40, 30)


def test_check_without_images_uses_annotated_size(bad):
    csv_path, _ = bad
    rep = check_boxes(read_boxes(csv_path), mode="train")
    kinds = {k for i in rep.issues for k in i.kinds}
    assert not {"missing-file", "image-size-mismatch", "unreadable"} & kinds  # these need the folder
    assert {"nan", "text", "negative", "reversed", "zero-width", "zero-height", "outside-image"} <= kinds


def test_csv_missing_columns_and_missing_file_raise_naming_the_file(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("file,label,xmin,ymin\na.jpg,cat,1,2\n")
    with pytest.raises(DatasetError, match="x.csv.*xmax"):
        read_boxes(p)
    with pytest.raises(DatasetError, match="nope.csv"):
        read_boxes(tmp_path / "nope.csv")
    with pytest.raises(DatasetError, match="format"):
        read_boxes(tmp_path / "boxes.parquet")


def _voc(objects: str, *, filename: str = "<filename>v.jpg</filename>") -> str:
    return (f"<annotation>{filename}<size><width>40</width><height>30</height><depth>3</depth></size>"
            f"{objects}</annotation>")


OBJ = "<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>2</ymin><xmax>{b}</xmax><ymax>20</ymax></bndbox></object>"


def test_voc_missing_fields_broken_xml_and_empty_files(tmp_path):
    d = tmp_path / "voc"
    d.mkdir()
    (d / "good.xml").write_text(_voc(OBJ.format(n="with_mask", a=1, b=10) + OBJ.format(n="without_mask", a=12, b=30)))
    (d / "nobox.xml").write_text(_voc("<object><name>with_mask</name></object>"))
    (d / "noxmax.xml").write_text(_voc("<object><name>x</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
                                       "<ymax>5</ymax></bndbox></object>"))
    (d / "text.xml").write_text(_voc(OBJ.format(n="with_mask", a="left", b=10)))
    (d / "broken.xml").write_text("<annotation><filename>z.jpg</filename>")
    (d / "empty.xml").write_text(_voc(""))
    (d / "nofilename.xml").write_text(_voc(OBJ.format(n="a", a=1, b=5), filename=""))
    anns = read_boxes(d)
    by = {a.source_line: a for a in anns}
    assert by["good.xml:object 1"].box == Box(1, 2, 10, 20) and by["good.xml:object 1"].width == 40
    assert by["good.xml:object 2"].label == "without_mask"
    assert by["nobox.xml:object 1"].error == "missing-field" and "<bndbox>" in by["nobox.xml:object 1"].detail
    assert by["noxmax.xml:object 1"].error == "missing-field" and "<xmax>" in by["noxmax.xml:object 1"].detail
    assert by["text.xml:object 1"].error == "text"
    assert any(a.error == "unreadable" and a.source_line.startswith("broken.xml") for a in anns)
    assert by["empty.xml"].error == "files-with-no-boxes"
    assert by["nofilename.xml:filename"].error == "missing-field"
    rep = check_boxes(anns, mode="test")
    kinds = {i.source_line: i.kinds for i in rep.issues}
    assert kinds["nobox.xml:object 1"] == ("missing-field",)
    assert kinds["empty.xml"] == ("files-with-no-boxes",)
    assert "good.xml:object 2" not in kinds and kinds["text.xml:object 1"] == ("text",)
    assert [a.source_line for a in rep.kept] == ["good.xml:object 1", "good.xml:object 2"]
    # one file on its own
    assert len(read_boxes_voc(d / "good.xml")) == 2


def test_coco_unknown_image_category_bad_bbox_and_unannotated_image(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
                   {"file_name": "noid.jpg"}],
        "categories": [{"id": 7, "name": "with_mask"}],
        "annotations": [
            {"image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 8]},
            {"image_id": 99, "category_id": 7, "bbox": [1, 2, 10, 8]},
            {"image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 8]},
            {"image_id": 1, "category_id": 7, "bbox": [1, "two", 10, 8]},
            {"image_id": 1, "category_id": 7},
            {"image_id": 1, "category_id": 7, "bbox": [35, 2, 10, 8]},
        ],
    }
    p = tmp_path / "coco.json"
    p.write_text(json.dumps(data))
    anns = read_boxes_coco(p)
    by = {a.source_line: a for a in anns}
    assert by["coco.json:annotations[0]"].box == Box(1, 2, 11, 10)
    assert by["coco.json:annotations[1]"].error == "unknown-image" and "99" in by["coco.json:annotations[1]"].detail
    assert by["coco.json:annotations[2]"].error == "unknown-category"
    assert by["coco.json:annotations[3]"].error == "text"
    assert by["coco.json:annotations[4]"].error == "missing-field"
    assert by["coco.json:images[2]"].error == "missing-field"
    assert by["coco.json:images[1]"].error == "files-with-no-boxes" and by["coco.json:images[1]"].image == "b.jpg"
    rep = check_boxes(anns, mode="train")
    kinds = {i.source_line: i.kinds for i in rep.issues}
    assert kinds["coco.json:annotations[5]"] == ("partly-outside",)
    assert [a.source_line for a in rep.kept] == ["coco.json:annotations[0]"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json"):
        read_boxes(bad)


def test_clean_csv_round_trip_samples_and_split_by_image(bad, tmp_path):
    csv_path, images = bad
    rep = check_boxes(read_boxes(csv_path), images, mode="test")
    out = write_boxes_csv(rep.kept, tmp_path / "clean.csv")
    again = read_boxes(out)
    assert [a.box for a in again] == [a.box for a in rep.kept]
    assert check_boxes(again, images, mode="train").ok or all(
        i.kinds == ("files-with-no-boxes",) for i in check_boxes(again, images, mode="train").issues)
    samples = to_samples(rep.kept, images, origin="fm")
    assert {s.group for s in samples} == {"image/a.jpg", "image/b.jpg"}
    m = write_clean_manifest(rep.kept, images, tmp_path / "manifest.csv")
    back = read_manifest(m)
    assert [s.box for s in back] == [s.box for s in samples]
    # many faces per image: a split never separates them
    many = [BoxAnnotation(f"img{i}.jpg", 10, 10, "x", Box(0, 0, 1, 1), "") for i in range(20) for _ in range(3)]
    parts = split(to_samples(many, tmp_path), seed=3)
    where: dict[str, set[str]] = {}
    for name, part in parts.as_dict().items():
        for s in part:
            where.setdefault(s.path.name, set()).add(name)
    assert all(len(v) == 1 for v in where.values()) and len(where) == 20


def test_boxes_check_cli(bad, tmp_path, capsys):
    csv_path, images = bad
    out = tmp_path / "clean.csv"
    code = main(["boxes", "check", str(csv_path), "--images", str(images), "--mode", "test", "--out", str(out),
                 "--json"])
    assert code == 1  # problems found
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"]["missing-file"] == 1 and rep["actions"]["repaired"] == 5
    assert rep["counts"]["unreadable"] == 1
    assert len(read_boxes(out)) == rep["kept"] == 6
    code = main(["boxes", "check", str(out)])
    assert code == 0
    assert "no problems" in capsys.readouterr().out
    assert main(["boxes", "check", str(tmp_path / "missing.csv")]) == 2


def test_boxes_check_real_facemask_annotations(capsys):
    ann = shared_path("facemask", "annotations.csv")
    images = shared_path("facemask", "images")
    anns = read_boxes(ann)
    assert len(anns) == 4072
    rep = check_boxes(anns, images, mode="train")
    # the staged copy is clean: every kind counts zero (the study's broken boxes are not in this copy)
    assert rep.n_boxes == 4072 and rep.n_images == 853
    assert sum(rep.counts.values()) == 0 and len(rep.kept) == 4072
    assert {a.label for a in anns} == {"with_mask", "without_mask", "mask_weared_incorrect"}
    code = main(["boxes", "check", str(ann), "--images", str(images)])
    assert code == 0
    assert "4072 boxes in 853 images" in capsys.readouterr().out


_cell = st.one_of(st.integers(-50, 90).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.sampled_from(["", "abc", " 7 ", "1e3", "nan", "-0", "3.5"]))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a.jpg", "b.jpg", "", "z.jpg"]), _cell, _cell,
                               st.sampled_from(["with_mask", ""]), _cell, _cell, _cell, _cell),
                     min_size=1, max_size=12),
       mode=st.sampled_from(["train", "test"]))
def test_garbage_rows_never_crash_and_every_box_is_accounted_for(tmp_path_factory, rows, mode):
    d = tmp_path_factory.mktemp("garbage")
    lines = ["file,width,height,label,xmin,ymin,xmax,ymax", *(",".join(r) for r in rows)]
    (d / "g.csv").write_text("\n".join(lines) + "\n")
    anns = read_boxes(d / "g.csv")
    rep = check_boxes(anns, mode=mode)
    acted = [i for i in rep.issues if i.action != "reported"]
    # every box is kept clean, or kept repaired (test mode), or named in an issue with its line
    assert len(rep.kept) + len([i for i in acted if i.action != "repaired"]) == rep.n_boxes
    for k in rep.kept:
        assert k.box is not None and k.box.is_valid
        if k.width is not None:
            assert not k.box.problems(k.width, k.height)
    for i in rep.issues:
        assert i.source_line.startswith("g.csv:") and i.kinds
    json.dumps(rep.as_dict())
