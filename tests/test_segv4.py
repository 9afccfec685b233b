"""Hand segmenter v4: the EfficientNet-Lite0 U-Net (train, resume, export, backend) and the new scene kinds.

Synthetic data (tests/test_segtrain.py's fake green-screen hands) and tiny sizes; the pretrained encoder is
3 M parameters, so the training tests run a handful of 32-64 px samples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("albumentations")
pytest.importorskip("safetensors")

from bglab.errors import BackendError, ConfigError, ModelIntegrityError  # noqa: E402
from bglab.train import composite as C  # noqa: E402
from bglab.train import segtrain as S  # noqa: E402
from tests.test_segtrain import _hand_photo, _tiny_cfg, fake_data  # noqa: E402, F401

MODELS = Path(__file__).resolve().parents[1] / "bglab" / "models"


@pytest.fixture(autouse=True)
def _torch_threads(one_torch_thread):
    """Small models: see ``one_torch_thread`` in conftest."""


def _have_weights() -> bool:
    from bglab.nets import BACKBONES
    from bglab.nets.weights import WeightsError, reference_weights_path

    try:
        reference_weights_path(BACKBONES["efficientnet-lite0"])
    except WeightsError:
        return False
    return True


needs_weights = pytest.mark.skipif(not _have_weights(), reason="ImageNet weights not installed (extra 'pretrained')")


# ----------------------------------------------------------------------------------------------- model
def test_effunet_shapes_frozen_layers_and_multiple_of_32():
    from bglab.train.effunet import EffUNet

    m = EffUNet(pretrained=False).eval()
    for shape in ((2, 3, 64, 64), (1, 3, 96, 160), (1, 3, 32, 224)):
        with torch.no_grad():
            y = m(torch.randn(*shape))
        assert y.shape == (shape[0], 1, shape[2], shape[3]) and torch.isfinite(y).all()
    # stem + stages 0-1 frozen (no gradient, batch-norm statistics kept in train mode); the rest trains
    m.train()
    assert not m.stem.bn.training and not m.blocks[2].dw.bn.training and m.blocks[3].dw.bn.training
    assert all(not p.requires_grad for p in m.stem.parameters())
    enc, dec = m.encoder_parameters(), m.decoder_parameters()
    assert enc and dec and all(p.requires_grad for p in enc + dec)
    assert {id(p) for p in enc}.isdisjoint({id(p) for p in dec})
    # the checkpoint holds each tensor once (safetensors refuses shared tensors)
    keys = list(m.state_dict())
    assert len(keys) == len(set(keys)) and not any(k.startswith("frozen") for k in keys)


@needs_weights
def test_pretrained_encoder_weights_are_the_backbone_weights():
    from bglab.nets import build_backbone
    from bglab.train.effunet import EffUNet

    ref = build_backbone("efficientnet-lite0", pretrained=True).state_dict()
    m = EffUNet(pretrained=True).state_dict()
    for k in ("stem.conv.weight", "blocks.5.dw.conv.weight", "blocks.15.project.bn.running_var"):
        assert torch.equal(m[k], ref[k])
    assert "fc.weight" not in m and "head.conv.weight" not in m and m["head.weight"].shape[0] == 1


def test_renormalise_is_exact():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    from bglab.train.effunet import LITE_MEAN, LITE_STD

    a = C.to_input(img)[None]
    b = C.to_input(img, LITE_MEAN, LITE_STD)[None]
    got = S.renormalise(a, (C.IMAGENET_MEAN, C.IMAGENET_STD), (LITE_MEAN, LITE_STD))
    assert np.allclose(got, b, atol=1e-5)
    assert np.allclose(b, (img.transpose(2, 0, 1)[None].astype(np.float32) - 127) / 128, atol=1e-5)


# ----------------------------------------------------------------------------------------------- training
@needs_weights
def test_train_effnet_resume_export_onnx_and_backend(fake_data, tmp_path):  # noqa: F811
    pytest.importorskip("onnx")
    out = tmp_path / "run"
    cfg = _tiny_cfg(fake_data, out, epochs=1, size=64, encoder="efficientnet-lite0", scenes=True, batch=4)
    st = S.train(cfg, progress=False, log=lambda s: None)
    assert st["epoch"] == 0 and (out / "best.safetensors").is_file()
    conf = json.loads((out / "config.json").read_text())
    assert conf["encoder"] == "efficientnet-lite0" and conf["scenes"] is True
    # resume: continues at the next epoch; a different encoder or scene setting is refused
    with pytest.raises(ConfigError, match="different encoder"):
        S.train(_tiny_cfg(fake_data, out, epochs=2, size=64, scenes=True), resume=True, progress=False,
                log=lambda s: None)
    with pytest.raises(ConfigError, match="different scenes"):
        S.train(_tiny_cfg(fake_data, out, epochs=2, size=64, encoder="efficientnet-lite0"), resume=True,
                progress=False, log=lambda s: None)
    msgs: list[str] = []
    st2 = S.train(_tiny_cfg(fake_data, out, epochs=2, size=64, encoder="efficientnet-lite0", scenes=True, batch=4),
                  resume=True, progress=False, log=msgs.append)
    assert st2["epoch"] == 1 and any("resumed at epoch 1" in m for m in msgs)
    assert any("from checkpoint" in m for m in msgs), "a resumed run does not reload the ImageNet weights"
    # export: a size that is not a multiple of 32 is refused; the export checks ORT against torch itself
    with pytest.raises(ConfigError, match="multiple of 32"):
        S.export_onnx(out, tmp_path / "bad.onnx", size=80, log=lambda s: None)
    info = S.export_onnx(out, tmp_path / "v4.onnx", size=96, log=lambda s: None)
    assert info["input"]["multiple"] == 32 and info["input"]["size"] == 96
    assert info["input"]["mean"] == pytest.approx([127 / 255] * 3) and info["name"].startswith("hand_unet_eff")
    assert info["export"]["max_abs_diff_vs_torch"] < 1e-4
    # the backend (same code path as unet) equals torch on two image sizes (inputs 96x64 and 64x96 -> other
    # multiples of 32 than the traced one)
    from bglab.foreground.unet import create_effnet

    seg = create_effnet(model=str(tmp_path / "v4.onnx"))
    assert seg.multiple == 32 and seg.name == "unet-effnet"
    model = S.build_model(conf)
    S.load_weights(model, out / "best.safetensors")
    rng = np.random.default_rng(3)
    for shape in ((50, 75, 3), (140, 90, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        x = seg.preprocess(img)
        assert x.shape[1] % 32 == 0 and x.shape[2] % 32 == 0
        ref = S.predict_image(model, img, size=96, arch=conf)
        got = seg.predict(img)
        assert got.shape == shape[:2] and np.abs(got - ref).max() < 1e-4


def test_resume_refuses_changed_encoder_for_old_runs(fake_data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    S.train(_tiny_cfg(fake_data, out, epochs=1), progress=False, log=lambda s: None)
    conf = json.loads((out / "config.json").read_text())
    conf.pop("encoder")  # a run written before v4 has no encoder key: it is the small U-Net
    conf.pop("scenes")
    (out / "config.json").write_text(json.dumps(conf))
    st = S.train(_tiny_cfg(fake_data, out, epochs=2), resume=True, progress=False, log=lambda s: None)
    assert st["epoch"] == 1
    with pytest.raises(ConfigError, match="different encoder"):
        S.train(_tiny_cfg(fake_data, out, epochs=3, encoder="efficientnet-lite0", size=32), resume=True,
                progress=False, log=lambda s: None)


def test_unknown_encoder_is_refused(fake_data, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="unknown encoder"):
        S.train(_tiny_cfg(fake_data, tmp_path / "r", encoder="resnet9000"), progress=False, log=lambda s: None)


@needs_weights
def test_cli_encoder_options_and_ablation_rows_with_test_sets(fake_data, tmp_path):  # noqa: F811
    from bglab.cli.app import main

    common = ["--keyed", str(fake_data["keyed"]), "--images", str(fake_data["images"]),
              "--data-root", str(fake_data["data"]), "--samples-per-epoch", "4", "--val-composites", "4",
              "--workers", "0"]
    assert main(["train-seg", *common, "--size", "48", "--out", str(tmp_path / "x"),
                 "--encoder", "efficientnet-lite0"]) == 2  # not a multiple of 32
    assert main(["train-seg", *common, "--size", "32", "--out", str(tmp_path / "x"), "--encoder", "vgg"]) == 2
    # a fake wild set: two fake hand photos with their masks
    wild = tmp_path / "wild"
    (wild / "images").mkdir(parents=True)
    (wild / "masks").mkdir()
    rng = np.random.default_rng(5)
    for i in range(2):
        img, m = _hand_photo(rng)
        cv2.imwrite(str(wild / "images" / f"w{i}.jpg"), img)
        cv2.imwrite(str(wild / "masks" / f"w{i}.png"), m)
    rc = main(["ablate-seg", *common, "--size", "32", "--out", str(tmp_path / "abl"), "--minutes", "0.002",
               "--only", "+augmentation", "--only", "+scenes", "--threads", "1", "--wild", str(wild),
               "--eval-size", "64"])
    assert rc == 0
    rows = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["name"] for r in rows] == ["+augmentation", "+scenes"]
    assert rows[1]["encoder"] == "efficientnet-lite0" and rows[1]["scenes"] is True
    for r in rows:
        assert 0 <= r["hands_wild_iou"] <= 1 and 0 <= r["webcam_test_f1"] <= 1 and r["eval_size"] == 64
    assert main(["ablate-seg", *common, "--out", str(tmp_path / "abl2"), "--only", "+nonsense"]) != 0


# ----------------------------------------------------------------------------------------------- scenes
def _scene_ds(scene: str, **kw) -> C.CompositeDataset:
    rng = np.random.default_rng(0)
    photos = [_hand_photo(rng) for _ in range(4)]
    hands = [C.make_hand(i, m.astype(np.float32) / 255) for i, m in photos]
    plain = [(i, m.astype(np.float32) / 255) for i, m in photos]
    bgs = [cv2.GaussianBlur(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8), (0, 0), 3) for _ in range(4)]
    names = ["backgrounds/a.jpg", "pets3/b.jpg", "facemask/c.png#0", "facemask/d.png#0"]
    spec = C.CompositeSpec(scenes={scene: 1.0}, p_plain=0.0, p_empty=0.0, **kw)
    return C.CompositeDataset(hands, plain, bgs, size=48, length=12, seed=1, spec=spec, bg_names=names)


@pytest.mark.parametrize("scene", C.SCENES)
def test_each_scene_kind_gives_valid_deterministic_samples(scene):
    ds = _scene_ds(scene)
    kinds = set()
    for i in range(6):
        a, b = ds.sample(i), ds.sample(i)
        assert a.image.shape == (48, 48, 3) and a.image.dtype == np.uint8 and a.mask.shape == (48, 48)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert 0 <= a.mask.min() and a.mask.max() <= 1
        kinds.add(a.kind)
        if scene == "negative":
            assert a.mask.max() == 0, "hard negatives have no hand"
    assert kinds == ({"negative"} if scene == "negative" else {f"scene:{scene}"})
    if scene != "negative":
        assert any(ds.sample(i).mask.max() > 0.5 for i in range(6))


def test_face_scenes_use_face_backgrounds_and_unknown_scenes_are_refused():
    ds = _scene_ds("face")
    assert ds.face_idx == [2, 3] and ds.scene_idx == [0, 1]
    with pytest.raises(ValueError, match="unknown scene"):
        _scene_ds("beach")


def test_egocentric_hands_enter_from_an_edge_and_are_large():
    rng = np.random.default_rng(0)
    img, m = _hand_photo(rng)
    hand = C.make_hand(img, m.astype(np.float32) / 255)
    fracs, touches = [], 0
    for k in range(20):
        canvas = np.full((100, 100, 3), 128, np.float32)
        label = np.zeros((100, 100), np.float32)
        C.paste_hand(canvas, label, hand, np.random.default_rng(k), placement=C.EGO_PLACEMENT)
        fg = label > 0.5
        fracs.append(fg.mean())
        touches += bool(fg[-1].any() or fg[:, 0].any() or fg[:, -1].any())
    assert touches >= 18 and np.median(fracs) > 0.03


def test_default_placement_draws_are_unchanged():
    """Placement() reproduces the v3 draw exactly (same composites for the same seed)."""
    rng = np.random.default_rng(0)
    img, m = _hand_photo(rng)
    hand = C.make_hand(img, m.astype(np.float32) / 255)
    a = [np.zeros((64, 64, 3), np.float32), np.zeros((64, 64), np.float32)]
    b = [np.zeros((64, 64, 3), np.float32), np.zeros((64, 64), np.float32)]
    C.paste_hand(a[0], a[1], hand, np.random.default_rng(7))
    C.paste_hand(b[0], b[1], hand, np.random.default_rng(7), placement=C.Placement())
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_distractors_change_the_image_not_the_label_and_photometric_keeps_shape():
    rng = np.random.default_rng(0)
    canvas = np.full((64, 64, 3), 128, np.float32)
    kinds = C.add_distractors(canvas, rng, n=8)
    assert set(kinds) <= {"stripes", "colour", "skin", "shadow"} and len(kinds) == 8
    assert np.abs(canvas - 128).max() > 10
    img = np.full((40, 60, 3), 120, np.uint8)
    outs = [C.photometric(img, np.random.default_rng(k)) for k in range(12)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, img) for o in outs)
    bg = np.full((80, 80, 3), 60, np.uint8)
    im, lab = C.composite(bg, [], np.random.default_rng(1), (48, 48), distractors=2, pale=True)
    assert lab.max() == 0 and im.mean() > 60, "pale scenes are washed light"


def test_scene_spec_switches_and_v3_mix_is_default(fake_data, tmp_path):  # noqa: F811
    cfg = _tiny_cfg(fake_data, tmp_path / "r")
    assert S.scene_spec(cfg, real=False).scenes == {} and S.scene_spec(cfg, real=False).p_photo == 0
    cfg.scenes = True
    sp = S.scene_spec(cfg, real=True)
    assert sp.scenes == C.V4_SCENES and sp.p_photo > 0 and sp.p_real == cfg.p_real


# ----------------------------------------------------------------------------------------------- backend
def test_input_shape_rounds_to_multiples():
    from bglab.foreground.unet import input_shape

    assert input_shape(288, 512, 320, 32) == (192, 320)
    assert input_shape(1, 1, 256, 32) == (256, 256)
    assert input_shape(2, 300, 256, 32) == (32, 256)
    assert input_shape(200, 300, 160) == (107, 160)  # multiple 1: v3 unchanged


def test_unet_effnet_is_registered_and_the_default():
    """v4.1 beat v3 on both shared evaluation sets (docs/segmenter-v4.md), so it is the default; v3 stays."""
    from bglab.foreground import DEFAULT_SEGMENTER, backends, resolve

    names = [b.name for b in backends("segmenter")]
    assert "unet-effnet" in names and "unet" in names
    assert DEFAULT_SEGMENTER == "unet-effnet" and resolve(None).name == "unet-effnet"


V4 = MODELS / "hand_unet_effnet.onnx"
needs_v4 = pytest.mark.skipif(not V4.is_file(), reason="v4 model not shipped in this checkout")


@pytest.fixture(scope="module")
def v4():
    from bglab.foreground import create

    return create("unet-effnet")


@needs_v4
def test_shipped_v4_is_verified_small_and_carded(v4):
    from bglab.io.files import sha256_file

    info = json.loads(V4.with_suffix(".json").read_text())
    assert info["sha256"] == sha256_file(V4) and V4.stat().st_size <= 25 * 1024 * 1024
    assert v4.multiple == 32 and v4.size % 32 == 0 and v4.name == "unet-effnet"
    assert "unet-effnet" in (MODELS / "MODEL_CARD.md").read_text()


@needs_v4
def test_v4_corrupt_file_is_refused_by_checksum(tmp_path):
    from bglab.foreground.unet import UNetSegmenter

    bad = tmp_path / "hand_unet_effnet.onnx"
    data = bytearray(V4.read_bytes())
    data[len(data) // 3] ^= 0x55
    bad.write_bytes(bytes(data))
    shutil.copy(V4.with_suffix(".json"), tmp_path / "hand_unet_effnet.json")
    with pytest.raises(ModelIntegrityError, match="corrupt or was replaced"):
        UNetSegmenter(bad)
    bad.write_bytes(V4.read_bytes()[:1000])  # truncated
    with pytest.raises(ModelIntegrityError, match="corrupt or was replaced"):
        UNetSegmenter(bad)


@needs_v4
@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3), (2, 300, 3), (50, 40), (50, 40, 1), (30, 20, 4),
                                   (2400, 3200, 3)])
def test_v4_tiny_huge_and_greyscale_inputs(v4, shape):
    rng = np.random.default_rng(1)
    im = rng.integers(0, 255, shape, dtype=np.uint8)
    m = v4.predict(im)
    assert m.shape == shape[:2] and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1


@needs_v4
def test_v4_no_hand_gives_an_empty_mask_reported_as_such(v4, tmp_path):
    from bglab.cli.app import main
    from bglab.ops.mask import coverage

    grey = np.full((240, 320, 3), 128, np.uint8)
    black = np.zeros((100, 100, 3), np.uint8)
    for im in (grey, black):
        assert coverage(v4.predict(im)) < 0.01
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    rc = main(["remove", str(tmp_path / "grey.png"), "-o", str(tmp_path / "out"), "--backend", "unet-effnet"])
    assert rc == 0
    from conftest import csv_rows

    rows = csv_rows(tmp_path / "out" / "remove_report.csv")
    assert len(rows) == 1 and rows[0]["status"] in ("not-found", "suspect")  # never an empty cut-out marked done


@needs_v4
def test_v4_several_hands_and_a_webcam_hand(v4):
    """Two webcam hands side by side: both get foreground (each half has hand pixels)."""
    from tests.conftest import shared_path

    paths = sorted(shared_path("rps", "webcam", "paper").glob("*.png"))[:2]
    ims = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    both = np.concatenate(ims, axis=1)
    m = v4.predict(both) > 0.5
    w = ims[0].shape[1]
    assert m[:, :w].mean() > 0.03 and m[:, w:].mean() > 0.03
    single = v4.predict(ims[0]) > 0.5
    green = ims[0][..., 1].astype(int) > ims[0][..., 0].astype(int) + 30
    assert 0.05 < single.mean() < 0.8 and single[green].mean() < 0.1


def test_bad_model_size_option_is_refused(tmp_path):
    from bglab.foreground.unet import DEFAULT_MODEL, UNetSegmenter

    if not V4.is_file():
        pytest.skip("v4 model not shipped")
    with pytest.raises(BackendError, match="multiple of 32"):
        UNetSegmenter(V4, size=100)
    assert UNetSegmenter(DEFAULT_MODEL, size=100).size == 100


@needs_v4
def test_v4_by_name_in_a_preprocessing_pipeline():
    from bglab.pipeline import Pipeline

    p = Pipeline.from_config({"steps": [{"segment": {"backend": "unet-effnet"}},
                                        {"background": {"mode": "remove", "color": "black"}}]})
    img = np.full((60, 90, 3), 120, np.uint8)
    res = p(img)
    assert res.image.shape == (60, 90, 3) and res.image.dtype == np.uint8


def test_v4_box_prompt_masks_only_inside_the_boxes_and_no_box_falls_back(v4, tmp_path):
    """``-O locator=NAME``: v4 runs on each padded box crop (nothing outside it is foreground); where the
    locator finds nothing, ``no_box=empty`` gives an empty mask and ``no_box=full`` the whole-image mask."""
    from bglab.foreground import create

    img, _ = _hand_photo(np.random.default_rng(3), 160, 200)
    csv = tmp_path / "boxes.csv"
    csv.write_text("file,label,xmin,ymin,xmax,ymax\nhand.png,hand,40,30,120,110\n")
    boxed = create("unet-effnet", locator="box-csv", boxes=str(csv), box_margin=0.1)
    m = boxed.predict(img, source=tmp_path / "hand.png")
    assert m.shape == img.shape[:2] and m.dtype == np.float32
    outside = np.ones(m.shape, bool)
    outside[22:118, 32:128] = False  # the box padded by 0.1 of its size on each side
    assert m[outside].max() == 0.0
    assert create("unet-effnet", locator="box-csv", boxes=str(csv)).predict(
        img, source=tmp_path / "other.png").max() == 0.0
    full = create("unet-effnet", locator="box-csv", boxes=str(csv), no_box="full")
    assert np.array_equal(full.predict(img, source=tmp_path / "other.png"), v4.predict(img))
    with pytest.raises(ConfigError, match="no_box"):
        create("unet-effnet", locator="box-csv", boxes=str(csv), no_box="maybe")
    with pytest.raises(BackendError, match="bad options"):
        create("unet-effnet", boxes=str(csv))
