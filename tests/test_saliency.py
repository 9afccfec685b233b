"""Grad-CAM: it finds where a hand-built network looks, follows the target class, cleans up after itself."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from bglab.train.classifiers import build_classifier  # noqa: E402
from bglab.train.saliency import SaliencyError, grad_cam, last_conv, mass_inside, overlay_sheet  # noqa: E402

S = 32


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


class HalvesNet(nn.Module):
    """Class 0 = mean brightness of the left half, class 1 = of the right half (hand-set weights).

    The last conv (1x1, no bias) sees channel 0 only on the left half and channel 1 only on the right half,
    after a 2x2 max-pool, so Grad-CAM for class 0 must sit on the left and for class 1 on the right.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.weight[:, 0, 1, 1] = 1.0  # both channels copy the input
            self.conv2.weight.copy_(torch.eye(2)[:, :, None, None])
            self.fc.weight.copy_(torch.eye(2))
        half = torch.zeros(1, 2, S, S)
        half[:, 0, :, : S // 2] = 1.0
        half[:, 1, :, S // 2:] = 1.0
        self.register_buffer("halves", half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv1(x)) * self.halves
        a = nn.functional.max_pool2d(a, 2)
        a = torch.relu(self.conv2(a))
        return self.fc(a.mean(dim=(2, 3)) * 4)


def _left() -> np.ndarray:
    m = np.zeros((S, S), bool)
    m[:, : S // 2] = True
    return m


def _images(n: int, brighter: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, S, S, generator=g)
    if brighter == "left":
        x[..., : S // 2] += 1.0
    else:
        x[..., S // 2:] += 1.0
    return x


def test_grad_cam_finds_the_half_the_logit_depends_on() -> None:
    net = HalvesNet()
    x = _images(6, "left")
    with torch.no_grad():
        assert (net(x).argmax(1) == 0).all()  # predicted class: the left one
    heat = grad_cam(net, x)
    share = mass_inside(heat, np.broadcast_to(_left(), (6, S, S)))
    assert heat.shape == (6, S, S) and heat.dtype == np.float32
    assert float(heat.min()) >= 0.0 and np.allclose(heat.max(axis=(1, 2)), 1.0)
    assert (share > 0.9).all(), share


def test_target_overrides_the_prediction() -> None:
    net = HalvesNet()
    x = _images(4, "left")  # predicted class 0 (left) ...
    right = grad_cam(net, x, target=1)  # ... but we ask for class 1
    assert (mass_inside(right, _left()) < 0.1).all()
    per_image = grad_cam(net, x, target=torch.tensor([0, 1, 0, 1]))
    share = mass_inside(per_image, _left())
    assert (share[[0, 2]] > 0.9).all() and (share[[1, 3]] < 0.1).all()
    np.testing.assert_allclose(grad_cam(net, x, target=[0, 0, 0, 0]), grad_cam(net, x), atol=1e-6)


def test_batching_does_not_change_the_maps() -> None:
    net = HalvesNet()
    x = _images(5, "right")
    np.testing.assert_allclose(grad_cam(net, x, batch=2), grad_cam(net, x, batch=64), atol=1e-6)


def test_zero_map_stays_zero_not_nan() -> None:
    net = HalvesNet()
    heat = grad_cam(net, torch.zeros(2, 1, S, S))  # all activations 0: nothing to explain
    assert np.isfinite(heat).all() and float(heat.max()) == 0.0
    assert np.isnan(mass_inside(heat, _left())).all()


@pytest.mark.parametrize(("name", "in_ch", "opts"), [
    ("cnn", 1, {"widths": [8, 16], "hidden": 16}),
    ("cnn", 3, {"widths": [8, 16], "hidden": 16, "batchnorm": True}),
    ("resnet18", 1, {"width": 4}),
    ("resnet18", 4, {"width": 4}),
])
def test_bglab_classifiers_run_and_are_left_clean(name: str, in_ch: int, opts: dict) -> None:
    torch.manual_seed(0)
    net = build_classifier(name, 3, in_ch, 16, **opts)
    net.train()
    x = torch.randn(3, in_ch, 16, 16)
    heat = grad_cam(net, x, batch=2)
    assert heat.shape == (3, 16, 16) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert (heat.max(axis=(1, 2)) > 0).any()  # a random net still yields some non-zero map
    assert not net.training  # left in eval mode
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed
    assert isinstance(last_conv(net), nn.Conv2d)


def test_bad_inputs_raise_saliency_errors() -> None:
    net = HalvesNet()
    with pytest.raises(SaliencyError, match="one class index per image"):
        grad_cam(net, _images(3, "left"), target=[0, 1])
    with pytest.raises(SaliencyError, match=r"\(N, C, H, W\)"):
        grad_cam(net, torch.zeros(1, S, S))
    with pytest.raises(SaliencyError, match="no nn.Conv2d"):
        grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(S * S, 2)), torch.zeros(1, 1, S, S))
    with pytest.raises(SaliencyError, match="out of range"):
        grad_cam(net, _images(1, "left"), target=5)
    assert all(not m._forward_hooks for m in net.modules())


def test_mass_inside_synthetic_cases() -> None:
    heat = np.zeros((3, 4, 4), np.float32)
    heat[0, :2, :2] = 1.0  # all inside the top-left quadrant mask
    heat[1] = 1.0  # uniform: half of it in the left half
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :2] = True
    masks[1, :, :2] = True
    masks[2, :, :] = True  # map 2 is all zero: NaN, not 0 or 1
    out = mass_inside(heat, masks)
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(0.5) and np.isnan(out[2])


def test_mass_inside_resizes_masks_and_checks_counts() -> None:
    heat = np.ones((2, 8, 8), np.float32)
    small = np.zeros((2, 2, 2), np.uint8)
    small[:, :, 0] = 255  # left column at 2x2 -> left half at 8x8 (nearest)
    assert mass_inside(heat, small) == pytest.approx([0.5, 0.5])
    with pytest.raises(SaliencyError, match="2 heat maps but 3 masks"):
        mass_inside(heat, np.zeros((3, 8, 8), bool))


def test_overlay_sheet_is_an_rgb_picture() -> None:
    imgs = [np.full((20, 30, 3), 100, np.uint8), np.zeros((16, 16), np.uint8), np.full((16, 16), 0.5, np.float32)]
    heats = [np.ones((20, 30), np.float32), np.zeros((8, 8), np.float32), np.eye(16, dtype=np.float32)]
    sheet = overlay_sheet(imgs, heats, titles=["a", "b", "c"], ncols=2)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[0] > 2 * 128 and sheet.shape[1] >= 4 * 128  # 2 rows of 2 (image, overlay) pairs
    with pytest.raises(SaliencyError, match="2 heat maps"):
        overlay_sheet(imgs, heats[:2])
