"""The box + label model: shapes, losses, learning a toy task, checkpoints without pickle, the face-crop task,
the ``box-model`` / ``box-csv`` locators and ``train-det`` / ``eval-det`` end to end (tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bglab.cli.app import main
from bglab.data.boxdata import BoxAnnotation
from bglab.errors import BackendError, BglabError, ConfigError
from bglab.foreground import Locator, create
from bglab.ops.box import Box
from bglab.train.detect import crop_with_context, make_crops, scores, split_items
from bglab.train.detector import (
    BoxLabelNet,
    box_iou_xyxy,
    detection_loss,
    giou_loss,
    load_detector,
    predict,
    save_detector,
    synthetic_squares,
    to_tensor,
)


def test_shapes_and_box_range():
    torch.manual_seed(0)
    m = BoxLabelNet(3, width=8, size=32).eval()
    with torch.no_grad():
        box, logits = m(torch.randn(5, 3, 32, 32))
    assert box.shape == (5, 4) and logits.shape == (5, 3)
    assert float(box.min()) >= 0 and float(box.max()) <= 1
    assert BoxLabelNet(2, width=8, size=64)(torch.randn(2, 3, 64, 64))[0].shape == (2, 4)
    with pytest.raises(ConfigError):
        BoxLabelNet(3, size=40)
    with pytest.raises(ConfigError):
        to_tensor(np.zeros((4, 4), np.uint8))


def test_losses():
    a = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    assert float(giou_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    far = torch.tensor([[0.6, 0.6, 0.9, 0.9]])
    assert float(giou_loss(a, far)) > 1.0  # disjoint: IoU 0 plus the hull penalty
    assert float(box_iou_xyxy(a, torch.tensor([[0.1, 0.1, 0.3, 0.5]]))) == pytest.approx(0.5)
    # reversed corners are ordered before scoring
    assert float(box_iou_xyxy(torch.tensor([[0.5, 0.5, 0.1, 0.1]]), a)) == pytest.approx(1.0)
    total, parts = detection_loss(a, torch.tensor([[5.0, 0.0]]), a, torch.tensor([0]))
    assert parts["l1"] == 0 and parts["ce"] < 0.01 and float(total) < 0.01


def test_learns_box_and_colour_of_squares_on_noise():
    """A few hundred steps on coloured squares on noise: IoU and accuracy well above chance."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is fastest, and no oversubscription
    try:
        _learn_squares()
    finally:
        torch.set_num_threads(threads)


def _learn_squares() -> None:
    imgs, boxes, labels = synthetic_squares(512, 32, seed=0)
    vi, vb, vl = synthetic_squares(128, 32, seed=1)
    m = BoxLabelNet(3, width=8, size=32, dropout=0.0)
    x, b, y = to_tensor(imgs), torch.from_numpy(boxes), torch.from_numpy(labels)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        idx = torch.randint(0, len(y), (32,), generator=g)
        box, logits = m(x[idx])
        loss, _ = detection_loss(box, logits, b[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-25:]) < 0.5 * np.mean(losses[:25])
    pb, pp = predict(m, vi)
    ev = scores(pb, pp, vb, vl, ["red", "green", "blue"], mean_box=boxes.mean(0))
    assert ev.accuracy > 0.8  # chance: 1/3
    assert ev.mean_iou > 0.45 and ev.mean_iou > ev.baseline_iou + 0.15  # mean-box baseline ~0.2
    assert np.array(ev.confusion).sum() == 128


def test_checkpoint_round_trip_without_pickle(tmp_path):
    torch.manual_seed(1)
    m = BoxLabelNet(3, width=8, size=32).eval()
    p = save_detector(m, tmp_path / "d.safetensors", ["a", "b", "c"], {"note": "x"})
    head = p.read_bytes()[:16]
    assert head[:2] != b"\x80\x04" and not head.startswith(b"PK")  # not a pickle, not a torch zip
    m2, info = load_detector(p)
    assert info["classes"] == ["a", "b", "c"] and info["extra"] == {"note": "x"} and m2.size == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for u, v in zip(m(x), m2(x), strict=True):
            assert torch.allclose(u, v)
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(BglabError, match="junk.safetensors"):
        load_detector(tmp_path / "junk.safetensors")
    with pytest.raises(BglabError, match="missing.safetensors"):
        load_detector(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError):
        save_detector(m, tmp_path / "e.safetensors", ["a"])


def test_crop_with_context_geometry():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 150:170] = 255  # a 20x20 "face"
    face = Box(150, 40, 170, 60)
    crop, target, region = crop_with_context(img, face, context=2.0, size=40)
    assert crop.shape == (40, 40, 3)
    assert region == Box(140, 30, 180, 70) and target == Box(10, 10, 30, 30)
    assert crop[15:25, 15:25].min() == 255 and crop[0:5, 0:5].max() == 0
    # shifted to the edge: the face stays inside the crop
    _, t2, _ = crop_with_context(img, face, context=3.0, shift=(1.0, -1.0), size=48)
    assert 0 <= t2.x0 and t2.x1 <= 48.001 and 0 <= t2.y0 and t2.y1 <= 48.001
    assert t2.x0 == pytest.approx(0.0) and t2.y1 == pytest.approx(48.0)
    # outside the image: grey padding
    crop3, _, _ = crop_with_context(img, Box(0, 0, 10, 10), context=3.0, size=30)
    assert (crop3[0, 0] == 114).all()


def _face_set(tmp_path: Path, n_images: int = 12) -> tuple[Path, Path]:
    """Images of noise with 1-3 coloured squares ("faces"); label = colour. Returns (csv, images)."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    colors = {"red": (230, 30, 30), "green": (30, 200, 30)}
    rows = ["file,width,height,label,xmin,ymin,xmax,ymax"]
    for i in range(n_images):
        img = rng.integers(40, 200, size=(60, 80, 3), dtype=np.uint8)
        for k in range(1 + i % 3):
            lab = ["red", "green"][(i + k) % 2]
            x0, y0 = 5 + 25 * k, int(rng.integers(5, 40))
            img[y0:y0 + 12, x0:x0 + 12] = colors[lab]
            rows.append(f"f{i}.png,80,60,{lab},{x0},{y0},{x0 + 12},{y0 + 12}")
        Image.fromarray(img).save(images / f"f{i}.png")
    csv_path = tmp_path / "faces.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path, images


def test_split_by_image_and_crops(tmp_path):
    csv_path, images = _face_set(tmp_path)
    from bglab.data.boxdata import read_boxes
    from bglab.train.detect import load_items

    anns = read_boxes(csv_path)
    sp = split_items(anns, seed=0)
    assert sorted(sum(sp.values(), [])) == sorted({a.image for a in anns})
    assert not (set(sp["train"]) & set(sp["test"])) and not (set(sp["train"]) & set(sp["val"]))
    assert split_items(anns, seed=0) == sp  # seeded
    items = load_items(anns, images)
    x, b, y, regions = make_crops(items, ["green", "red"], size=32, seed=4)
    x2, b2, _, _ = make_crops(items, ["green", "red"], size=32, seed=4)
    assert x.shape == (len(items), 32, 32, 3) and np.array_equal(x, x2) and np.array_equal(b, b2)
    assert (b >= 0).all() and (b <= 1).all() and (b[:, 2] > b[:, 0]).all()
    # the face (a solid colour square) is where the target box says
    i = 0
    x0, y0, x1, y1 = (b[i] * 32).round().astype(int)
    inner = x[i, y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3)
    assert inner.std(axis=0).max() < 25
    assert len(regions) == len(items)


def test_box_csv_locator(tmp_path):
    p = tmp_path / "boxes.csv"
    p.write_text("file,width,height,label,xmin,ymin,xmax,ymax\n"
                 "a.jpg,40,30,with_mask,1,1,5,5\n"
                 "a.jpg,40,30,without_mask,10,10,30,25\n"
                 "a.jpg,40,30,with_mask,-2,3,8,3\n"  # negative + zero height: repaired
                 "a.jpg,40,30,with_mask,nan,1,5,5\n"  # dropped
                 "b.jpg,40,30,with_mask,1,1,5,5\n")
    loc = create("box-csv", boxes=str(p))
    assert isinstance(loc, Locator)
    img = np.zeros((30, 40, 3), np.uint8)
    got = loc.locate(img, source=Path("/some/where/a.jpg"))
    assert all(isinstance(b, Box) for b in got)
    assert got == [Box(10, 10, 30, 25), Box(1, 1, 5, 5), Box(0, 3, 8, 4)]  # largest first, repaired
    assert loc.locate(img, source=Path("zzz.jpg")) == []
    only = create("box-csv", boxes=str(p), label="with_mask")
    assert Box(10, 10, 30, 25) not in only.locate(img, source=Path("a.jpg"))
    with pytest.raises(BackendError, match="zzz.jpg"):
        create("box-csv", boxes=str(p), strict=True).locate(img, source=Path("zzz.jpg"))
    with pytest.raises(BackendError):
        loc.locate(img)
    with pytest.raises(ConfigError):
        create("box-csv")


def test_box_model_locator_torch_and_onnx(tmp_path):
    torch.manual_seed(0)
    m = BoxLabelNet(2, width=8, size=32).eval()
    ckpt = save_detector(m, tmp_path / "best.safetensors", ["no", "yes"])
    img = np.random.default_rng(0).integers(0, 255, size=(50, 70, 3), dtype=np.uint8)
    loc = create("box-model", model=str(ckpt))
    assert isinstance(loc, Locator)
    boxes = loc.locate(img)
    assert len(boxes) <= 1 and all(isinstance(b, Box) for b in boxes)
    box, label, prob = loc.classify(img)
    assert label in ("no", "yes") and 0.5 <= prob <= 1
    assert 0 <= box.x0 <= box.x1 <= 70 and 0 <= box.y0 <= box.y1 <= 50
    assert create("box-model", model=str(tmp_path)).locate(img) == boxes  # run folder -> best.safetensors
    with pytest.raises(BackendError):
        create("box-model", model=str(tmp_path / "nope.safetensors"))
    pytest.importorskip("onnx")
    from bglab.train.detector import export_onnx

    onnx_path = export_onnx(ckpt, tmp_path / "det.onnx")
    oloc = create("box-model", model=str(onnx_path))
    ob, olabel, oprob = oloc.classify(img)
    assert olabel == label and oprob == pytest.approx(prob, abs=1e-4)
    assert np.allclose(ob.xyxy, box.xyxy, atol=1e-2)


def test_train_det_and_eval_det_end_to_end(tmp_path, capsys):
    csv_path, images = _face_set(tmp_path, n_images=15)
    run = tmp_path / "run"
    code = main(["train-det", "--annotations", str(csv_path), "--images", str(images), "--out", str(run),
                 "--epochs", "2", "--size", "32", "--width", "8", "--threads", "1"])
    assert code == 0
    for name in ("config.json", "splits.json", "box_check.json", "log.csv", "best.safetensors", "last.safetensors",
                 "state.json", "test_metrics.json"):
        assert (run / name).is_file(), name
    splits = json.loads((run / "splits.json").read_text())
    assert not set(splits["train"]) & set(splits["test"])
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert {"mean_iou", "accuracy", "per_class_accuracy", "confusion", "baseline_iou"} <= set(metrics)
    assert metrics["n"] == sum(map(sum, metrics["confusion"]))
    capsys.readouterr()
    sheet = tmp_path / "sheet.png"
    assert main(["eval-det", str(run), "--annotations", str(csv_path), "--images", str(images), "--json",
                 "--sheet", str(sheet)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == metrics["n"] and ev["mean_iou"] == pytest.approx(metrics["mean_iou"], abs=1e-6)
    assert Image.open(sheet).size[0] > 100
    assert main(["eval-det", str(tmp_path), "--annotations", str(csv_path), "--images", str(images)]) == 2


def test_scores_with_known_values():
    classes = ["a", "b"]
    pb = np.array([[0, 0, 0.5, 0.5], [0, 0, 1, 1]], np.float32)
    tb = np.array([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]], np.float32)
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    ev = scores(pb, probs, tb, np.array([0, 1]), classes)
    assert ev.mean_iou == pytest.approx((1 + 0.25) / 2)
    assert ev.accuracy == 0.5 and ev.per_class_accuracy == {"a": 1.0, "b": 0.0}
    assert ev.confusion == [[1, 0], [1, 0]]
    assert ev.iou_at_50 == 0.5
    empty = scores(np.zeros((0, 4)), np.zeros((0, 2)), np.zeros((0, 4)), np.zeros(0, np.int64), classes)
    assert empty.n == 0 and json.dumps(empty.as_dict())


def test_box_annotation_is_typed():
    a = BoxAnnotation("x.jpg", 10, 10, "with_mask", Box(1, 1, 2, 2), "f.csv:2")
    assert not a.is_marker and a.box.width == 1


@settings(max_examples=80, deadline=None)
@given(x0=st.floats(-20, 180), y0=st.floats(-20, 80), w=st.floats(1, 60), h=st.floats(1, 60),
       context=st.floats(1.0, 4.0), sx=st.floats(-1, 1), sy=st.floats(-1, 1))
def test_crop_target_always_inside_crop(x0, y0, w, h, context, sx, sy):
    img = np.zeros((100, 200, 3), np.uint8)
    crop, t, region = crop_with_context(img, Box(x0, y0, x0 + w, y0 + h), context=context, shift=(sx, sy), size=32)
    assert crop.shape == (32, 32, 3)
    eps = 1e-6
    assert -eps <= t.x0 < t.x1 <= 32 + eps and -eps <= t.y0 < t.y1 <= 32 + eps
    assert max(t.width, t.height) == pytest.approx(32 / max(context, 4 / max(w, h)), rel=1e-6)
