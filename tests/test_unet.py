"""The hand U-Net: model options and loss (PyTorch), and the shipped ONNX ``unet`` backend (ONNX Runtime)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from bglab.errors import BackendError, ModelIntegrityError
from tests.conftest import shared_path

MODELS = Path(__file__).resolve().parents[1] / "bglab" / "models"


@pytest.fixture(autouse=True)
def _torch_threads(one_torch_thread):
    """Tiny models: see ``one_torch_thread`` in conftest."""


# ----------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize(
    "kw",
    [
        dict(depth=1, base=4),
        dict(depth=2, base=4, skip="add"),
        dict(depth=3, base=8, batchnorm=False),
        dict(depth=3, base=4, dropout=0.3, skip="add", batchnorm=False),
        dict(depth=4, base=4, separable=True),
        dict(depth=4, base=8, max_mult=4),
    ],
)
def test_unet_shapes_for_options(kw):
    torch = pytest.importorskip("torch")
    from bglab.train.unet import UNet, count_params

    m = UNet(**kw).eval()
    for shape in ((2, 3, 32, 32), (1, 3, 19, 27), (1, 3, 5, 9)):
        with torch.no_grad():
            y = m(torch.randn(*shape))
        assert y.shape == (shape[0], 1, shape[2], shape[3]) and torch.isfinite(y).all()
    n = count_params(m)
    assert n > 0
    has_bn = any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    has_do = any(isinstance(x, torch.nn.Dropout2d) for x in m.modules())
    assert has_bn == kw.get("batchnorm", True) and has_do == (kw.get("dropout", 0.0) > 0)


def test_skip_modes_differ_in_decoder_width():
    pytest.importorskip("torch")
    from bglab.train.unet import UNet, count_params

    assert count_params(UNet(depth=3, base=8, skip="concat")) > count_params(UNet(depth=3, base=8, skip="add"))
    assert count_params(UNet(depth=3, base=8, separable=True)) < count_params(UNet(depth=3, base=8))
    with pytest.raises(ValueError):
        UNet(skip="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        UNet(depth=0)


def test_loss_decreases_on_tiny_batch():
    torch = pytest.importorskip("torch")
    from bglab.train.unet import UNet, bce_dice_loss

    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32) * 0.1
    y = torch.zeros(4, 1, 32, 32)
    for i in range(4):  # a bright square = foreground
        y[i, :, 4 + i * 3:18 + i * 3, 6:20] = 1
        x[i, :, 4 + i * 3:18 + i * 3, 6:20] += 1.5
    m = UNet(depth=2, base=8)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = bce_dice_loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_dice_loss_is_zero_for_perfect_logits():
    torch = pytest.importorskip("torch")
    from bglab.train.unet import bce_dice_loss

    y = torch.zeros(2, 1, 8, 8)
    y[:, :, 2:6, 2:6] = 1
    perfect = (y * 2 - 1) * 50
    assert float(bce_dice_loss(perfect, y)) < 1e-3
    assert float(bce_dice_loss(-perfect, y)) > 1.5


# ----------------------------------------------------------------------------------------------- backend
@pytest.fixture(scope="module")
def seg():
    from bglab.foreground import create

    return create("unet")


def test_unet_shipped_model_verified(seg):
    from bglab.foreground.unet import DEFAULT_MODEL
    from bglab.io.files import sha256_file

    assert seg.name == "unet"
    info = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert seg.model_path == DEFAULT_MODEL and info["sha256"] == sha256_file(DEFAULT_MODEL)
    assert DEFAULT_MODEL.stat().st_size <= 10 * 1024 * 1024 and info["bytes"] == DEFAULT_MODEL.stat().st_size
    assert seg.size == info["input"]["size"] and 0 < seg.recommended_threshold < 1
    assert (MODELS / "MODEL_CARD.md").is_file()


def test_corrupt_or_replaced_model_is_refused(tmp_path):
    from bglab.foreground.unet import DEFAULT_MODEL, UNetSegmenter

    bad = tmp_path / "hand_unet.onnx"
    data = bytearray(DEFAULT_MODEL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    shutil.copy(DEFAULT_MODEL.with_suffix(".json"), tmp_path / "hand_unet.json")
    with pytest.raises(ModelIntegrityError, match="corrupt or was replaced"):
        UNetSegmenter(bad)
    # a JSON without a checksum is refused too
    (tmp_path / "hand_unet.json").write_text(json.dumps({"threshold": 0.5}))
    with pytest.raises(ModelIntegrityError, match="no sha256"):
        UNetSegmenter(bad)


def test_user_model_without_json_is_refused_unless_unverified(tmp_path):
    from bglab.foreground.unet import DEFAULT_MODEL, UNetSegmenter

    own = tmp_path / "mine.onnx"
    shutil.copy(DEFAULT_MODEL, own)
    with pytest.raises(ModelIntegrityError, match=r"no mine\.json next to the model.*unverified=true"):
        UNetSegmenter(own, size=96)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = UNetSegmenter(own, size=96, unverified=True)
    assert any("not verified" in str(x.message) for x in w)
    assert s.predict(np.zeros((40, 60, 3), np.uint8)).shape == (40, 60)
    with pytest.raises(BackendError, match="not found"):
        UNetSegmenter(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        UNetSegmenter(tmp_path / "junk.onnx", unverified=True)


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_predictions_on_real_photos_have_shape_and_range(seg):
    wild = sorted(shared_path("hands_wild", "images").glob("*.jpg"))
    cams = [sorted(shared_path("rps", "webcam", c).glob("*.png"))[0] for c in ("rock", "paper", "scissors")]
    images = [_read(p) for p in [wild[0], wild[12], wild[25], *cams]]
    masks = seg.predict_batch(images)
    for im, m in zip(images, masks, strict=True):
        assert m.shape == im.shape[:2] and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0
    # batched and single predictions agree
    assert np.allclose(seg.predict(images[3]), masks[3], atol=1e-5)


def test_webcam_hand_is_found(seg):
    """A webcam hand on the green screen: the mask covers the hand, not the screen."""
    cam = _read(sorted(shared_path("rps", "webcam", "paper").glob("*.png"))[3])
    m = seg.predict(cam)
    green = (cam[..., 1].astype(int) > cam[..., 0].astype(int) + 30)
    assert 0.05 < (m > 0.5).mean() < 0.8
    assert (m[green] > 0.5).mean() < 0.1


def test_empty_images_give_low_coverage(seg):
    from bglab.ops.mask import coverage

    grey = np.full((240, 320, 3), 128, np.uint8)
    black = np.zeros((100, 100, 3), np.uint8)
    rng = np.random.default_rng(0)
    noise = rng.integers(90, 110, (120, 160, 3), dtype=np.uint8)
    for im in (grey, black, noise):
        assert coverage(seg.predict(im)) < 0.05


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3), (2, 300, 3), (50, 40), (50, 40, 1), (30, 20, 4)])
def test_tiny_odd_and_greyscale_inputs(seg, shape):
    rng = np.random.default_rng(1)
    im = rng.integers(0, 255, shape, dtype=np.uint8)
    m = seg.predict(im)
    assert m.shape == shape[:2] and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1


def test_huge_input_and_threshold(seg):
    from bglab.foreground import create

    huge = np.full((2400, 3200, 3), 100, np.uint8)
    assert seg.predict(huge).shape == (2400, 3200)
    hard = create("unet", threshold=0.5)
    cam = _read(sorted(shared_path("rps", "webcam", "rock").glob("*.png"))[0])
    out = hard.predict(cam)
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_bad_input_types_raise_backend_error(seg):
    with pytest.raises(BackendError):
        seg.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(BackendError):
        seg.predict(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(BackendError):
        seg.predict(np.zeros((0, 10, 3), np.uint8))


@pytest.mark.slow
def test_quality_on_hands_wild_is_recorded_honestly(seg):
    """Mean IoU on the 30 wild scenes is close to what hand_unet.json records (no tuning here, a check)."""
    from bglab.train.segtrain import mask_scores

    info = json.loads((MODELS / "hand_unet.json").read_text())
    rec = info.get("scores", {}).get("hands_wild", {}).get("iou")
    if rec is None:
        pytest.skip("no hands_wild score recorded in hand_unet.json")
    ious = []
    for p in sorted(shared_path("hands_wild", "images").glob("*.jpg")):
        gt = _read(p.parent.parent / "masks" / f"{p.stem}.png")[..., 0] > 127
        ious.append(mask_scores(seg.predict(_read(p)) >= 0.5, gt)["iou"])
    assert abs(float(np.mean(ious)) - rec) < 0.02
