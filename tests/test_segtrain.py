"""Hand U-Net training: compositing data set, checkpoints (no pickle), resume, ONNX export, CLI.

Everything runs on synthetic data (a skin-coloured "hand" on a green screen, noise backgrounds) and tiny
models, so the file takes a few seconds.
"""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("albumentations")
pytest.importorskip("safetensors")

from bglab.io.files import sha256_file  # noqa: E402
from bglab.train import composite as C  # noqa: E402
from bglab.train import segtrain as S  # noqa: E402
from bglab.train.unet import UNet  # noqa: E402

SKIN = (230, 170, 140)


@pytest.fixture(autouse=True)
def _torch_threads(one_torch_thread):
    """Tiny models: see ``one_torch_thread`` in conftest."""
GREEN = (40, 200, 40)


def _hand_photo(rng: np.random.Generator, h: int = 60, w: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """A fake webcam photo: an 'arm' entering from the right with a round 'fist', on a green screen."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = GREEN
    m = np.zeros((h, w), np.uint8)
    cy = int(rng.integers(h // 3, 2 * h // 3))
    cv2.rectangle(m, (w // 2, cy - 6), (w - 1, cy + 6), 255, -1)
    cv2.circle(m, (w // 2, cy), int(rng.integers(9, 14)), 255, -1)
    img[m > 0] = SKIN
    return img, m


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> dict[str, Path]:
    """keyed/, images/ (3 classes x 8) and a data root with backgrounds/ (noise photos) + key_report.csv."""
    root = tmp_path_factory.mktemp("segdata")
    rng = np.random.default_rng(0)
    rows = []
    for cls in C.CLASSES:
        (root / "images" / cls).mkdir(parents=True)
        (root / "keyed" / cls).mkdir(parents=True)
        for i in range(8):
            img, m = _hand_photo(rng)
            cv2.imwrite(str(root / "images" / cls / f"{cls}{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "keyed" / cls / f"{cls}{i}.png"), m)
            rows.append((f"{cls}/{cls}{i}.png", "ok" if i != 7 else "rejected"))
    with (root / "keyed" / "key_report.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "status", "fg_fraction", "components", "reason"])
        for f, st in rows:
            w.writerow([f, st, "0.2", "1", ""])
    (root / "data" / "backgrounds").mkdir(parents=True)
    for i in range(6):
        bg = cv2.GaussianBlur(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8), (0, 0), 3)
        cv2.imwrite(str(root / "data" / "backgrounds" / f"bg{i}.jpg"), bg)
    return {"keyed": root / "keyed", "images": root / "images", "data": root / "data"}


def _tiny_cfg(fake_data: dict[str, Path], out: Path, **kw) -> S.TrainConfig:
    base = dict(keyed=str(fake_data["keyed"]), images=str(fake_data["images"]), out=str(out),
                data_root=str(fake_data["data"]), size=32, epochs=2, depth=2, base=4, batch=4,
                samples_per_epoch=8, val_composites=4, workers=0, threads=1, faces=False)
    base.update(kw)
    return S.TrainConfig(**base)


# ----------------------------------------------------------------------------------------------- data
def test_list_keyed_respects_qc_and_split_is_seeded(fake_data):
    recs = C.list_keyed(fake_data["keyed"], fake_data["images"])
    assert len(recs) == 21 and all(r.stem != f"{r.cls}7" for r in recs), "QC rejects must be skipped"
    a, b = C.split_records(recs, seed=3), C.split_records(recs, seed=3)
    assert {k: [r.key for r in v] for k, v in a.items()} == {k: [r.key for r in v] for k, v in b.items()}
    keys = [set(r.key for r in a[k]) for k in ("train", "val", "test")]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert sum(len(k) for k in keys) == 21
    assert {r.cls for r in a["test"]} == set(C.CLASSES), "split is stratified by class"
    c = C.split_records(recs, seed=4)
    assert [r.key for r in c["test"]] != [r.key for r in a["test"]]


def test_real_photos_jpg_masks_png_and_grouped_split_like_the_experiment(fake_data, tmp_path):
    """Real-scene photos (.jpg, Roboflow ``.rf.`` copies) match their .png masks by stem, and split_grouped gives
    exactly the parts bglab.data.dataset.split gives a source of that name: copies of one photo never cross parts."""
    from bglab.data.dataset import read_imagefolder
    from bglab.data.dataset import split as split_samples

    rng = np.random.default_rng(5)
    photos, masks = tmp_path / "sx", tmp_path / "sx-masks"
    for cls in C.CLASSES:
        (photos / cls).mkdir(parents=True)
        (masks / cls).mkdir(parents=True)
        for g in range(6):
            for copy in range(1 + g % 3):
                img, m = _hand_photo(rng)
                name = f"{cls}_{g}_jpg.rf.{copy:04d}"
                cv2.imwrite(str(photos / cls / f"{name}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                cv2.imwrite(str(masks / cls / f"{name}.png"), m)
    recs = C.list_keyed(masks, photos)
    assert len(recs) == 3 * 12 and all(r.image.suffix == ".jpg" for r in recs)
    parts = C.split_grouped(recs, (0.5, 0.2, 0.3), origin="sx", seed=0)
    want = split_samples(read_imagefolder(photos, origin="sx"), fractions=(0.5, 0.2, 0.3), seed=0)
    for name in ("train", "val", "test"):
        assert sorted(r.image for r in parts[name]) == sorted(s.path for s in getattr(want, name))
    groups = [{r.image.name.split(".rf.")[0] for r in parts[k]} for k in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])


def test_real_samples_are_drawn_and_prepare_data_validates_on_them(fake_data, tmp_path):
    hands, plain = C.load_hands(C.list_keyed(fake_data["keyed"], fake_data["images"])[:4])
    bgs = [np.full((50, 50, 3), 90, np.uint8)]
    real = [(np.full((70, 40, 3), 200, np.uint8), np.ones((70, 40), np.float32))]
    ds = C.CompositeDataset(hands, plain, bgs, size=32, length=40, seed=0,
                            spec=C.CompositeSpec(p_plain=0.0, p_empty=0.0, p_real=0.5), real=real)
    kinds = [ds.sample(i).kind for i in range(40)]
    assert 8 < kinds.count("real") < 32 and "composite" in kinds
    with pytest.raises(ValueError, match="p_real"):
        C.CompositeDataset(hands, plain, bgs, spec=C.CompositeSpec(p_real=0.3))
    # prepare_data: the fake keyed photos double as "real" photos; their val part joins the validation set
    cfg = _tiny_cfg(fake_data, tmp_path / "r", real_images=str(fake_data["images"]),
                    real_masks=str(fake_data["keyed"]), real_split=(0.5, 0.25, 0.25))
    data = S.prepare_data(cfg, log=lambda s: None)
    assert data.counts["real_train"] > 0 and data.counts["real_val"] > 0 and data.counts["real_test_unused"] > 0
    assert (data.val_kind == 2).sum() == data.counts["real_val"]
    assert set(data.splits["real_test"]).isdisjoint(data.splits["real_train"])
    ev = S.evaluate(S.build_model(cfg.arch()), data.val_x, data.val_y, data.val_kind)
    assert 0 <= ev["val_f1_real"] <= 1
    with pytest.raises(S.ConfigError, match="real_masks"):
        S.prepare_data(_tiny_cfg(fake_data, tmp_path / "x", real_images=str(fake_data["images"])))


def test_several_real_sets_each_split_and_any_folder_names(fake_data, tmp_path):
    """Two pseudo-labelled real sets (one sorted into classes, one in a single plain folder like the face-mask
    photos) join the training and validation data; their masks pair with their photos set by set."""
    flat_img, flat_mask = tmp_path / "flat" / "images", tmp_path / "flat_masks" / "images"
    flat_img.mkdir(parents=True)
    flat_mask.mkdir(parents=True)
    (tmp_path / "flat_masks" / "_rejected").mkdir()  # bglab key's reject folder is not a class
    rng = np.random.default_rng(3)
    for i in range(12):
        img, m = _hand_photo(rng)
        cv2.imwrite(str(flat_img / f"p{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(flat_mask / f"p{i}.png"), m)
    recs = C.list_keyed(tmp_path / "flat_masks", tmp_path / "flat", classes=None)
    assert len(recs) == 12 and {r.cls for r in recs} == {"images"}
    assert [r.cls for r in C.list_keyed(fake_data["keyed"], fake_data["images"], classes=None)] == \
        [r.cls for r in C.list_keyed(fake_data["keyed"], fake_data["images"])], "RPS classes keep their order"
    one = S.prepare_data(_tiny_cfg(fake_data, tmp_path / "a", real_images=str(fake_data["images"]),
                                   real_masks=str(fake_data["keyed"])), log=lambda s: None)
    two = S.prepare_data(_tiny_cfg(fake_data, tmp_path / "b", real_images=[str(fake_data["images"]),
                                                                           str(tmp_path / "flat")],
                                   real_masks=[str(fake_data["keyed"]), str(tmp_path / "flat_masks")]),
                         log=lambda s: None)
    assert two.counts["real_train"] > one.counts["real_train"] and two.counts["real_val"] > one.counts["real_val"]
    assert set(one.splits["real_train"]) < set(two.splits["real_train"]), "the first set splits as it did alone"
    assert any(k.startswith("images/") for k in two.splits["real_train"])
    with pytest.raises(S.ConfigError, match="2 --real-images folder"):
        _tiny_cfg(fake_data, tmp_path / "c", real_images=[str(fake_data["images"]), str(tmp_path / "flat")],
                  real_masks=[str(fake_data["keyed"])]).real_sets()


def test_init_warm_starts_from_a_checkpoint_and_refuses_a_foreign_one(fake_data, tmp_path):
    S.train(_tiny_cfg(fake_data, tmp_path / "first", epochs=1), progress=False, log=lambda s: None)
    ckpt = tmp_path / "first" / "best.safetensors"
    saved = S.read_init(_tiny_cfg(fake_data, tmp_path / "x", init=str(ckpt)))
    assert saved is not None and any(k.endswith("weight") for k in saved)
    # lr 0: the warm-started run's weights are the checkpoint's (batch-norm running statistics aside)
    msgs: list[str] = []
    S.train(_tiny_cfg(fake_data, tmp_path / "second", epochs=1, lr=0.0, init=str(ckpt)), progress=False,
            log=msgs.append)
    assert any("warm start" in m for m in msgs)
    from safetensors.torch import load_file

    after = load_file(str(tmp_path / "second" / "last.safetensors"))
    convs = [k for k in saved if k.endswith(".weight") and saved[k].ndim == 4]
    assert convs and all(torch.equal(after[k], saved[k]) for k in convs)
    assert json.loads((tmp_path / "second" / "config.json").read_text())["init"] == str(ckpt)
    # refused before the run folder exists: another architecture (keys listed), not a checkpoint, missing file
    with pytest.raises(S.ConfigError, match="base: 4 in the file vs 8 asked"):
        S.train(_tiny_cfg(fake_data, tmp_path / "no1", base=8, init=str(ckpt)), progress=False, log=lambda s: None)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(S.BglabError, match="not a readable safetensors"):
        S.train(_tiny_cfg(fake_data, tmp_path / "no2", init=str(junk)), progress=False, log=lambda s: None)
    with pytest.raises(S.BglabError, match="not found"):
        S.train(_tiny_cfg(fake_data, tmp_path / "no3", init=str(tmp_path / "nope.safetensors")), progress=False,
                log=lambda s: None)
    assert not any((tmp_path / n).exists() for n in ("no1", "no2", "no3"))


def _onnx_probs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _torch_probs(model, x: np.ndarray) -> np.ndarray:
    from bglab.train.unet import ProbModel

    with torch.no_grad():
        return ProbModel(model).eval()(torch.from_numpy(x)).numpy()


def test_init_from_an_exported_onnx_model_rebuilds_its_function(fake_data, tmp_path):
    """An exported model (batch-norm folded) read back with --init computes what the ONNX file computes, before
    and after its batch-norm statistics are measured; a run warm-started from it trains."""
    from bglab.train.onnx_weights import recalibrate_batchnorm

    S.train(_tiny_cfg(fake_data, tmp_path / "first", epochs=1), progress=False, log=lambda s: None)
    onnx_path = tmp_path / "m.onnx"
    S.export_onnx(tmp_path / "first", onnx_path, size=32, log=lambda s: None)
    cfg = _tiny_cfg(fake_data, tmp_path / "x", init=str(onnx_path))
    model = S.build_model(cfg.arch())
    model.load_state_dict(S.read_init(cfg))
    x = np.random.default_rng(1).normal(size=(3, 3, 32, 40)).astype(np.float32)
    ref = _onnx_probs(onnx_path, x)
    assert np.abs(_torch_probs(model, x) - ref).max() < 1e-4
    assert recalibrate_batchnorm(model, x[:2]) > 0  # the tiny U-Net has batch-norm
    assert np.abs(_torch_probs(model, x) - ref).max() < 1e-4  # same function, new statistics
    msgs: list[str] = []
    S.train(_tiny_cfg(fake_data, tmp_path / "second", epochs=1, init=str(onnx_path)), progress=False,
            log=msgs.append)
    assert any("batch-norm statistics of" in m for m in msgs)
    conf = json.loads((tmp_path / "second" / "config.json").read_text())
    assert conf["init_sha256"] == sha256_file(onnx_path)
    S.train(_tiny_cfg(fake_data, tmp_path / "second", epochs=2, init=str(onnx_path)), resume=True, progress=False,
            log=lambda s: None)  # a resumed session keeps the record of what the run started from
    # stopped before its first epoch was saved: --resume starts it again from its init, not from ImageNet
    (tmp_path / "third").mkdir()
    (tmp_path / "third" / "config.json").write_text(json.dumps(conf))
    msgs.clear()
    S.train(_tiny_cfg(fake_data, tmp_path / "third", epochs=1, init=str(onnx_path)), resume=True, progress=False,
            log=msgs.append)
    assert any("warm start" in m for m in msgs) and any(m.startswith("start (the --init") for m in msgs)
    assert json.loads((tmp_path / "second" / "config.json").read_text())["init_sha256"] == sha256_file(onnx_path)
    # the start is scored first and is the bar: best.safetensors is the init until an epoch beats it
    state = json.loads((tmp_path / "second" / "state.json").read_text())
    assert any(m.startswith("start (the --init weights") for m in msgs)
    assert state["best_loss"] <= state["start_scores"]["val_loss"]
    assert (tmp_path / "second" / "best.safetensors").is_file()


def test_init_refuses_a_foreign_or_damaged_onnx_model_before_writing(fake_data, tmp_path):
    S.train(_tiny_cfg(fake_data, tmp_path / "first", epochs=1), progress=False, log=lambda s: None)
    onnx_path = tmp_path / "m.onnx"
    S.export_onnx(tmp_path / "first", onnx_path, size=32, log=lambda s: None)
    cases = []
    with pytest.raises(S.ConfigError, match="base: 4 in the file vs 8 asked"):  # the model card's record
        S.train(_tiny_cfg(fake_data, tmp_path / "no1", base=8, init=str(onnx_path)), progress=False,
                log=lambda s: None)
    cases.append("no1")
    with pytest.raises(S.ConfigError, match="encoder: 'none' in the file vs 'efficientnet-lite0' asked"):
        S.read_init(_tiny_cfg(fake_data, tmp_path / "no2", encoder="efficientnet-lite0", size=64,
                              init=str(onnx_path)))
    cases.append("no2")
    from bglab.train.onnx_weights import load_onnx_weights

    other = S.build_model(_tiny_cfg(fake_data, tmp_path / "x", base=8).arch())
    with pytest.raises(S.ConfigError, match=r"another architecture: .*weight \(4, 3, 3, 3\) in the file"):
        load_onnx_weights(other, onnx_path)  # a record that lies: the shapes are checked too, listed
    bad = tmp_path / "bad" / "m.onnx"
    bad.parent.mkdir()
    bad.write_bytes(onnx_path.read_bytes()[:-10] + b"0123456789")  # damaged: the checksum refuses it
    (bad.with_suffix(".json")).write_text(onnx_path.with_suffix(".json").read_text())
    from bglab.errors import ModelIntegrityError

    with pytest.raises(ModelIntegrityError, match="sha256"):
        S.train(_tiny_cfg(fake_data, tmp_path / "no3", init=str(bad)), progress=False, log=lambda s: None)
    cases.append("no3")
    bad.with_suffix(".json").unlink()
    with pytest.raises(ModelIntegrityError, match="checksum cannot be verified"):
        S.train(_tiny_cfg(fake_data, tmp_path / "no4", init=str(bad)), progress=False, log=lambda s: None)
    cases.append("no4")
    with pytest.raises(S.BglabError, match="not found"):
        S.train(_tiny_cfg(fake_data, tmp_path / "no5", init=str(tmp_path / "nope.onnx")), progress=False,
                log=lambda s: None)
    cases.append("no5")
    assert not any((tmp_path / n).exists() for n in cases)


def test_the_shipped_effnet_model_reads_back_into_pytorch_exactly():
    """`train-seg --init bglab/models/hand_unet_effnet.onnx --encoder efficientnet-lite0` starts from the shipped
    segmenter itself: the rebuilt network agrees with ONNX Runtime on a photo-like input and on noise."""
    from bglab.foreground.unet import EFFNET_MODEL

    cfg = S.TrainConfig(keyed="k", images="i", out="o", encoder="efficientnet-lite0", init="unet-effnet")
    assert S.init_file(cfg) == EFFNET_MODEL  # a shipped model by its backend's name
    model = S.build_model(cfg.arch())
    model.load_state_dict(S.read_init(cfg))
    img, _ = _hand_photo(np.random.default_rng(3), 96, 128)
    photo = ((img.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None]
    noise = np.random.default_rng(4).normal(size=(1, 3, 64, 96)).astype(np.float32)
    for x in (photo, noise):
        assert np.abs(_torch_probs(model, x) - _onnx_probs(EFFNET_MODEL, x)).max() < 1e-4
    with pytest.raises(S.ConfigError, match="encoder: 'efficientnet-lite0' in the file vs 'none' asked"):
        S.read_init(S.TrainConfig(keyed="k", images="i", out="o", init="unet-effnet"))


def test_make_hand_finds_arm_side_and_despills():
    img, m = _hand_photo(np.random.default_rng(1))
    img[m > 0] = (200, 230, 150)  # green spill on the hand
    hand = C.make_hand(img, m.astype(np.float32) / 255)
    assert hand is not None and hand.direction == (1.0, 0.0), "arm leaves through the right edge"
    assert hand.rgb.shape[:2] == hand.alpha.shape and hand.alpha.max() == 1.0
    fg = hand.alpha > 0.5
    assert (hand.rgb[fg][:, 1] <= np.maximum(hand.rgb[fg][:, 0], hand.rgb[fg][:, 2])).all(), "spill limited"
    assert C.make_hand(img, np.zeros(m.shape, np.float32)) is None


def test_composite_mask_matches_pasted_hand():
    rng = np.random.default_rng(2)
    img = np.zeros((60, 90, 3), np.uint8)
    img[:] = (255, 0, 0)  # pure red 'hand'
    m = np.zeros((60, 90), np.float32)
    cv2.rectangle(m, (30, 20), (89, 40), 1.0, -1)
    hand = C.make_hand(img, m, despill=False)
    bg = np.zeros((100, 100, 3), np.uint8)
    bg[:] = (0, 0, 255)  # pure blue background
    for seed in range(5):
        out, label = C.composite(bg, [hand], np.random.default_rng(seed), (64, 64), colour=False, shadow_p=0.0)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        assert label.shape == (64, 64) and label.dtype == np.float32
        assert 0.0 <= label.min() and label.max() <= 1.0
        inside = label > 0.99
        far = cv2.dilate((label > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        if inside.any():
            # the hand's own colour where the label says hand (edges are softened a little when pasting)
            assert (out[inside][:, 0] > out[inside][:, 2]).all() and (out[inside][:, 0] > 200).mean() > 0.8
        assert far.any() and (out[far] == (0, 0, 255)).all(), "background untouched away from the hand"
    empty, lab0 = C.composite(bg, [], rng, (32, 48))
    assert empty.shape == (32, 48, 3) and lab0.max() == 0.0


def test_dataset_shapes_dtypes_and_determinism(fake_data):
    recs = C.list_keyed(fake_data["keyed"], fake_data["images"])
    hands, plain = C.load_hands(recs)
    bgs = [b for _, b in C.load_backgrounds(fake_data["data"], pets=False, faces=False)]
    ds = C.CompositeDataset(hands, plain, bgs, size=48, length=10, seed=1)
    x, y = ds[3]
    assert x.shape == (3, 48, 48) and x.dtype == np.float32
    assert y.shape == (1, 48, 48) and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    x2, y2 = ds[3]
    assert np.array_equal(x, x2) and np.array_equal(y, y2), "sample = f(seed, epoch, index)"
    ds.epoch = 1
    x3, _ = ds[3]
    assert not np.array_equal(x, x3)
    kinds = {ds.sample(i).kind for i in range(40)}
    assert "composite" in kinds
    # un-augmented: plain photos, resized, mask where the skin is
    plain_ds = C.CompositeDataset(hands, plain, bgs, size=32, length=4, augment=False)
    smp = plain_ds.sample(0)
    assert smp.kind == "plain" and smp.image.shape == (32, 32, 3)
    skin = (smp.image[..., 0] > 150) & (smp.image[..., 1] < 190)
    assert (smp.mask[skin] > 0.5).mean() > 0.9


# ----------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_is_safetensors_not_pickle(tmp_path):
    torch.manual_seed(0)
    m = UNet(depth=2, base=4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 16, 16)
    for _ in range(2):
        loss = m(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2)
    sched.step(1.0)
    S.save_checkpoint(tmp_path, m, opt, sched, {"epoch": 4, "best_loss": 0.5}, {"depth": 2})
    raw = (tmp_path / "last.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert raw[8:9] == b"{" and json.loads(raw[8:8 + n])["__metadata__"]["arch"], "safetensors header"
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4], "no pickle / torch zip"
    m2 = UNet(depth=2, base=4)
    opt2 = torch.optim.Adam(m2.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, patience=2)
    state = S.load_checkpoint(tmp_path, m2, opt2, sched2)
    assert state["epoch"] == 4
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for pid in s1:
        assert torch.equal(s1[pid]["exp_avg"], s2[pid]["exp_avg"]) and float(s1[pid]["step"]) == float(s2[pid]["step"])
    assert sched2.state_dict()["best"] == sched.state_dict()["best"]


@pytest.mark.parametrize("encoder", ["none", "efficientnet-lite0"])
def test_channels_last_training_layout_computes_what_nchw_computes(tmp_path, encoder):
    """train-seg trains in channels-last (S.CHANNELS_LAST, faster on CPU): the same weights give the same outputs
    and gradients as NCHW, and a checkpoint written from it reads back into a plain NCHW network exactly."""
    arch = {"depth": 2, "base": 4, "dropout": 0.0, "batchnorm": True, "skip": "concat", "max_mult": 4,
            "separable": False, "encoder": encoder}
    torch.manual_seed(0)
    a = S.build_model(arch)
    b = S.build_model(arch)
    b.load_state_dict(a.state_dict())
    b.to(memory_format=S.CHANNELS_LAST)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # training mode: batch statistics
        ya, yb = a(x), b(x.contiguous(memory_format=S.CHANNELS_LAST))
    assert torch.allclose(ya, yb, atol=1e-4)
    # gradients in eval mode: with batch statistics a batch-norm's bias gradient is a cancellation of large
    # terms (float32 noise at random weights), which says nothing about the layout
    a.eval()
    b.eval()
    a(x).square().mean().backward()
    b(x.contiguous(memory_format=S.CHANNELS_LAST)).square().mean().backward()
    trained = 0
    for (k, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        if pa.grad is None:  # the pretrained encoder's frozen stem and first stages
            assert pb.grad is None, k
            continue
        assert float((pa.grad - pb.grad).norm()) <= 1e-3 * float(pa.grad.norm()) + 1e-6, k  # float32 sums
        trained += 1
    assert trained > 10
    assert b.state_dict()[next(k for k, v in b.state_dict().items() if v.ndim == 4)].is_contiguous(
        memory_format=S.CHANNELS_LAST)
    S.save_weights(b, tmp_path / "w.safetensors", arch)
    c = S.build_model(arch)
    S.load_weights(c, tmp_path / "w.safetensors")
    for (k, pb), (_, pc) in zip(b.state_dict().items(), c.state_dict().items(), strict=True):
        assert torch.equal(pb, pc), k


def test_train_then_resume_continues_at_next_epoch(fake_data, tmp_path):
    out = tmp_path / "run"
    st = S.train(_tiny_cfg(fake_data, out, epochs=2), progress=False, log=lambda s: None)
    assert st["epoch"] == 1 and (out / "best.safetensors").is_file()
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 21
    with pytest.raises(S.ConfigError, match="already holds"):
        S.train(_tiny_cfg(fake_data, out, epochs=3), progress=False, log=lambda s: None)
    with pytest.raises(S.ConfigError, match="different base"):
        S.train(_tiny_cfg(fake_data, out, epochs=3, base=8), resume=True, progress=False, log=lambda s: None)
    msgs: list[str] = []
    st2 = S.train(_tiny_cfg(fake_data, out, epochs=3), resume=True, progress=False, log=msgs.append)
    assert any("resumed at epoch 2" in m for m in msgs)
    assert st2["epoch"] == 2
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert json.loads((out / "state.json").read_text())["epoch"] == 2


def test_export_matches_torch_and_backend_loads_it(fake_data, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "run"
    S.train(_tiny_cfg(fake_data, out, epochs=1), progress=False, log=lambda s: None)
    info = S.export_onnx(out, tmp_path / "m.onnx", size=48, log=lambda s: None)
    assert info["export"]["max_abs_diff_vs_torch"] < 1e-4
    assert info["sha256"] == sha256_file(tmp_path / "m.onnx") and info["input"]["size"] == 48
    from bglab.foreground.unet import create

    seg = create(model=str(tmp_path / "m.onnx"))
    assert seg.size == 48
    masks = seg.predict_batch([np.zeros((30, 50, 3), np.uint8), np.zeros((30, 50, 3), np.uint8),
                               np.zeros((7, 5, 3), np.uint8)])
    assert [m.shape for m in masks] == [(30, 50), (30, 50), (7, 5)]
    assert all(m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1 for m in masks)
    assert np.array_equal(masks[0], masks[1])
    # bench scores recorded in the JSON survive a re-export of the same weights, not a new model
    j = tmp_path / "m.json"
    j.write_text(json.dumps({**json.loads(j.read_text()), "scores": {"hands_wild": {"iou": 0.5}}}))
    assert "scores" in S.export_onnx(out, tmp_path / "m.onnx", size=48, log=lambda s: None)
    S.train(_tiny_cfg(fake_data, out, epochs=2), resume=True, progress=False, log=lambda s: None)
    msgs: list[str] = []
    info2 = S.export_onnx(out, tmp_path / "m.onnx", which="last", size=48, log=msgs.append)
    assert info2["sha256"] != info["sha256"] and "scores" not in info2 and "scores" not in json.loads(j.read_text())
    assert any("dropped" in m for m in msgs)


def test_failed_export_leaves_no_file_behind(fake_data, tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "run"
    S.train(_tiny_cfg(fake_data, out, epochs=1), progress=False, log=lambda s: None)
    target = tmp_path / "old.onnx"
    target.write_bytes(b"the previous model")

    def broken(model):
        raise onnx.checker.ValidationError("simulated")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(onnx.checker.ValidationError):
        S.export_onnx(out, target, size=48, log=lambda s: None)
    assert target.read_bytes() == b"the previous model", "the earlier export is kept whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx", "run"], "no temporary file is left"


def test_cli_train_export_and_ablate_tiny(fake_data, tmp_path):
    pytest.importorskip("onnx")
    from bglab.cli.app import main

    common = ["--keyed", str(fake_data["keyed"]), "--images", str(fake_data["images"]),
              "--data-root", str(fake_data["data"]), "--size", "32", "--samples-per-epoch", "4",
              "--val-composites", "4", "--workers", "0"]
    rc = main(["train-seg", *common, "--out", str(tmp_path / "r"), "--epochs", "1", "--depth", "2", "--base", "4",
               "--skip", "add", "--no-batchnorm", "--dropout", "0.1", "--no-faces", "--threads", "1"])
    assert rc == 0 and (tmp_path / "r" / "last.safetensors").is_file()
    conf = json.loads((tmp_path / "r" / "config.json").read_text())
    assert conf["skip"] == "add" and conf["batchnorm"] is False and "train-seg" in conf["command"]
    assert main(["export-seg", str(tmp_path / "r"), str(tmp_path / "r.onnx")]) == 0
    # warm start + two real sets (repeatable options, paired in order)
    real = ["--real-images", str(fake_data["images"]), "--real-masks", str(fake_data["keyed"])]
    rc = main(["train-seg", *common, "--out", str(tmp_path / "r2"), "--epochs", "1", "--depth", "2", "--base", "4",
               "--skip", "add", "--no-batchnorm", "--dropout", "0.1", "--no-faces", "--threads", "1",
               "--init", str(tmp_path / "r" / "last.safetensors"), *real, *real])
    conf2 = json.loads((tmp_path / "r2" / "config.json").read_text())
    assert rc == 0 and conf2["init"].endswith("last.safetensors") and len(conf2["real_masks"]) == 2
    assert json.loads((tmp_path / "r.json").read_text())["arch"]["skip"] == "add"
    assert main(["train-seg", *common, "--out", str(tmp_path / "x"), "--skip", "sideways"]) == 2
    assert main(["train-seg", *common, "--out", str(tmp_path / "x"), "--real-split", "0.5,0.6"]) == 2
    rc = main(["ablate-seg", *common, "--out", str(tmp_path / "abl"), "--minutes", "0.002",
               "--only", "base", "--only", "+augmentation", "--threads", "1"])
    assert rc == 0
    rows = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["name"] for r in rows] == ["base", "+augmentation"]
    assert all(r["val_f1"] is not None and 0 <= r["val_f1"] <= 1 for r in rows)


def test_mask_scores_edge_cases():
    a = np.zeros((4, 4), bool)
    assert S.mask_scores(a, a)["iou"] == 1.0
    b = a.copy()
    b[0, 0] = True
    assert S.mask_scores(a, b)["f1"] == 0.0 and S.mask_scores(b, a)["precision"] == 0.0
    c = b.copy()
    c[0, 1] = True
    s = S.mask_scores(c, b)
    assert s["iou"] == 0.5 and s["recall"] == 1.0 and s["precision"] == 0.5 and abs(s["f1"] - 2 / 3) < 1e-9


def test_resume_after_a_time_budget_stop_trains_on(fake_data, tmp_path):
    """A run stopped by its time budget, resumed with a larger one, trains on (the old stop reason is cleared)."""
    out = tmp_path / "run"
    S.train(_tiny_cfg(fake_data, out, epochs=1), progress=False, log=lambda s: None)
    saved = json.loads((out / "state.json").read_text())
    saved["stop"] = "time budget"
    (out / "state.json").write_text(json.dumps(saved))
    st = S.train(_tiny_cfg(fake_data, out, epochs=3), resume=True, progress=False, log=lambda s: None)
    assert st["epoch"] == 2 and st["stop"] == "epochs done"
    assert [int(r["epoch"]) for r in csv.DictReader((out / "log.csv").open())] == [0, 1, 2]
