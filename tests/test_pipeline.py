"""Pipelines in memory: config parsing and validation, every step, on_missing policies, seeds, torch wrapper."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from bglab.cli.preprocess import apply_overrides
from bglab.errors import ConfigError
from bglab.foreground import registry
from bglab.io.files import read_image
from bglab.ops.box import Box
from bglab.pipeline import Pipeline, StepResult, sample_seed
from tests.conftest import shared_path

# ------------------------------------------------------------------------------------------- helpers


class _NoneLocator:
    name = "none"

    def locate(self, image, *, source=None):
        return []


def make_none_locator(runtime):
    return _NoneLocator()


@pytest.fixture
def none_locator(monkeypatch):
    """A locator that never finds anything, registered for this test only."""
    info = registry.BackendInfo("test-none", "locator", __name__, "make_none_locator", "finds nothing")
    monkeypatch.setitem(registry._BACKENDS, "test-none", info)
    return "test-none"


def green_screen(h: int = 60, w: int = 90, box: tuple[int, int, int, int] = (30, 10, 60, 40)) -> np.ndarray:
    """A green screen with a skin-coloured rectangle at ``box`` (x0, y0, x1, y1)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40, 200, 60)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = (210, 160, 130)
    return img


CHROMA = {"segment": {"backend": "chroma"}}


# -------------------------------------------------------------------------------------------- config


def test_config_round_trip_and_step_forms(tmp_path):
    cfg = {"seed": 7, "steps": ["grey", {"step": "distort", "noise": 3}]}
    p = Pipeline.from_config({"steps": [CHROMA, {"crop": {"margin": 0.2}}, {"resize": {"size": [48, 32]}}],
                              "output": {"format": "webp"}})
    again = Pipeline.from_config(p.to_config())
    assert again.to_config() == p.to_config()
    assert p.to_config()["steps"][2] == {"resize": {"size": [48, 32], "pad_color": [0, 0, 0],
                                                    "interpolation": "auto"}}
    assert p.format == "webp"
    q = Pipeline.from_config(cfg)
    assert [s.name for s in q.steps] == ["grey", "distort"] and q.seed == 7
    # the same pipeline from YAML and TOML files
    (tmp_path / "p.yaml").write_text("seed: 7\nsteps:\n  - grey\n  - distort: {noise: 3}\n")
    (tmp_path / "p.toml").write_text('seed = 7\n[[steps]]\nstep = "grey"\n[[steps]]\nstep = "distort"\nnoise = 3\n')
    assert Pipeline.from_config(tmp_path / "p.yaml").to_config() == q.to_config()
    assert Pipeline.from_config(str(tmp_path / "p.toml")).to_config() == q.to_config()
    assert q.step_labels == ["grey", "distort"]
    assert Pipeline.from_config({"steps": ["grey", "distort", "distort"]}).step_labels == \
        ["grey", "distort", "distort2"]


@pytest.mark.parametrize(("cfg", "words"), [
    ({"steps": ["blurr"]}, ["steps[0]", "'blurr'", "locate, segment, background"]),
    ({"steps": [{"crop": {"margin": 0.1, "sqare": True}}]}, ["steps[0].crop", "'sqare'", "square"]),
    ({"steps": [{"locate": {"backend": "full", "on_missing": "drop"}}]},
     ["on_missing", "'drop'", "keep, skip, mask-box"]),
    ({"steps": [{"locate": {"backend": "nope"}}]}, ["locate.backend", "'nope'", "mediapipe-hands"]),
    ({"steps": [{"segment": {"backend": "full"}}]}, ["segment.backend", "'full'", "chroma"]),
    ({"steps": [{"background": {"mode": "remove"}}]}, ["background", "segment step before"]),
    ({"steps": [{"background": {"mode": "paint"}}]}, ["mode", "remove, colour, blur, swap, keep"]),
    ({"steps": [{"crop": {"to": "box"}}]}, ["crop", "locate step before"]),
    ({"steps": [{"resize": {}}]}, ["resize", "size"]),
    ({"steps": [{"resize": {"size": 0}}]}, ["resize.size", "range"]),
    ({"steps": ["grey", CHROMA]}, ["segment", "before grey"]),
    ({"steps": [{"locate": {"backend": "full", "on_missing": "mask-box"}}]}, ["mask-box", "segment step"]),
    ({"steps": [{"distort": {"dropout": 2}}]}, ["distort.dropout", "range"]),
    ({"stepz": []}, ["'stepz'", "steps"]),
    ({"steps": "grey"}, ["steps", "list"]),
    ({"version": 2}, ["version"]),
])
def test_config_errors_name_the_key_and_the_choices(cfg, words):
    with pytest.raises(ConfigError) as err:
        Pipeline.from_config(cfg)
    for w in words:
        assert w in str(err.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Pipeline.from_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [grey\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        Pipeline.from_config(bad)


def test_overrides_add_steps_in_canonical_order_and_set_values():
    cfg = apply_overrides({"steps": [{"resize": {"size": 32}}]}, backend="chroma", background="remove",
                          crop=True, margin=0.3, size=64, grey=True, noise=2.0, seed=5)
    names = [next(iter(s)) for s in cfg["steps"]]
    assert names == ["segment", "background", "crop", "resize", "grey", "distort"]
    p = Pipeline.from_config(cfg)
    assert p.steps[3].size == (64, 64) and p.steps[2].margin == 0.3 and p.seed == 5
    assert p.steps[0].backend == "chroma" and p.steps[1].mode == "remove"
    with pytest.raises(ConfigError, match="locate"):
        apply_overrides(None, on_missing="skip")
    # --background alone brings the default segmenter
    assert next(iter(apply_overrides(None, background="blur")["steps"][0])) == "segment"


# --------------------------------------------------------------------------------------------- steps


def test_crop_resize_grey_on_a_synthetic_green_screen():
    p = Pipeline.from_config({"steps": [CHROMA, {"background": {"mode": "remove"}},
                                        {"crop": {"to": "mask", "margin": 0.0}}, {"resize": {"size": 32}}, "grey"]})
    r = p(green_screen(), key="a.png")
    assert isinstance(r, StepResult) and r.status == "done" and r.found is None
    assert r.image.shape == (32, 32) and r.image.dtype == np.uint8
    assert r.coverage == pytest.approx(30 * 30 / (60 * 90), abs=0.01)
    assert set(r.timings) == {"segment", "background", "crop", "resize", "grey"}
    # the crop was the square itself: the output is the square's grey level everywhere
    assert abs(int(np.median(r.image)) - round(0.299 * 210 + 0.587 * 160 + 0.114 * 130)) <= 1


def test_located_box_is_reported_in_input_pixels():
    p = Pipeline.from_config({"steps": [{"locate": {"backend": "mask-box", "margin": 0.0}}, CHROMA,
                                        {"crop": {"margin": 0.5}}, {"resize": {"size": 17}}]})
    r = p(green_screen(box=(20, 5, 50, 35)))
    assert r.found is True and r.box_source == "mask-box"
    assert r.box is not None and np.allclose(r.box.xyxy, (20, 5, 50, 35), atol=1e-6)
    assert r.image.shape == (17, 17, 3)
    assert r.mask is not None and r.mask.shape == (17, 17)


def test_on_missing_policies(none_locator):
    img = green_screen()
    keep = Pipeline.from_config({"steps": [{"locate": {"backend": none_locator}}, {"resize": {"size": 20}}]})(img)
    assert keep.status == "not-found" and keep.found is False and keep.box is None
    assert keep.image.shape == (20, 20, 3)  # whole image kept
    skip = Pipeline.from_config({"steps": [{"locate": {"backend": none_locator, "on_missing": "skip"}},
                                           {"resize": {"size": 20}}]})(img)
    assert skip.status == "skipped" and skip.image is None and "resize" not in skip.timings
    mb = Pipeline.from_config({"steps": [{"locate": {"backend": none_locator, "on_missing": "mask-box"}}, CHROMA,
                                         {"crop": {"to": "box", "margin": 0}}]})(img)
    assert mb.status == "not-found" and mb.found is False and mb.box_source == "mask-box"
    assert mb.image.shape == (30, 30, 3)
    fb = Pipeline.from_config({"steps": [{"locate": {"backend": none_locator, "fallback": ["full"]}}]})(img)
    assert fb.status == "done" and fb.found is True and fb.box_source == "full"
    assert fb.box == Box(0, 0, 90, 60)


def test_background_modes(tmp_path):
    img = green_screen()

    def run(bg: dict) -> np.ndarray:
        return Pipeline.from_config({"steps": [CHROMA, {"background": bg}]})(img).image

    assert run({"mode": "remove", "alpha": True}).shape == (60, 90, 4)
    assert tuple(run({"mode": "remove"})[0, 0]) == (0, 0, 0)
    assert tuple(run({"mode": "colour", "color": "#ff0000"})[0, 0]) == (255, 0, 0)
    assert tuple(run({"mode": "colour", "colour": [1, 2, 3]})[0, 0]) == (1, 2, 3)
    assert np.array_equal(run({"mode": "keep"}), img)
    blurred = run({"mode": "blur", "blur": 5})
    assert np.array_equal(blurred[20, 40], img[20, 40])  # the foreground stays sharp
    bg = np.full((10, 10, 3), 77, np.uint8)
    from bglab.io.files import write_image

    write_image(tmp_path / "bg.png", bg)
    swapped = run({"mode": "swap", "image": str(tmp_path / "bg.png")})
    assert tuple(swapped[0, 0]) == (77, 77, 77) and tuple(swapped[20, 40]) == (210, 160, 130)
    with pytest.raises(ConfigError, match="image"):
        Pipeline.from_config({"steps": [CHROMA, {"background": {"mode": "swap"}}]})


def test_background_on_empty_keeps_the_image_when_nothing_was_found():
    """A segmenter that finds nothing would blank the whole image; ``on_empty: keep`` leaves it as it was."""
    screen = green_screen(box=(0, 0, 0, 0))  # nothing but screen: the key finds no foreground
    blank = Pipeline.from_config({"steps": [CHROMA, {"background": {"mode": "remove"}}]})(screen).image
    assert not blank.any()
    keep = Pipeline.from_config({"steps": [CHROMA, {"background": {"mode": "remove", "on_empty": "keep"}}]})
    assert np.array_equal(keep(screen).image, screen)
    hand = green_screen()
    assert tuple(keep(hand).image[0, 0]) == (0, 0, 0), "with a foreground the background is still removed"
    assert keep.to_config()["steps"][1]["background"]["on_empty"] == "keep"
    with pytest.raises(ConfigError, match="on_empty"):
        Pipeline.from_config({"steps": [CHROMA, {"background": {"on_empty": "maybe"}}]})


def test_distort_is_seeded_by_global_seed_and_sample_key():
    cfg = {"seed": 1, "steps": [{"distort": {"dropout": 0.1, "noise": 8}}]}
    img = green_screen()
    a = Pipeline.from_config(cfg)(img, key="webcam/rock/a.png").image
    b = Pipeline.from_config(cfg)(img, key="webcam/rock/a.png").image
    c = Pipeline.from_config(cfg)(img, key="webcam/rock/b.png").image
    d = Pipeline.from_config({**cfg, "seed": 2})(img, key="webcam/rock/a.png").image
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert not np.array_equal(a, img)
    assert sample_seed(1, "x") == sample_seed(1, "x") != sample_seed(1, "y")
    assert sample_seed(0, "webcam/rock/a.png") == 2884769063967003372  # stable across versions and machines


def test_run_batch_records_a_bad_sample_and_goes_on():
    p = Pipeline.from_config({"steps": [CHROMA, {"resize": {"size": 16}}]})
    bad = np.zeros((5, 5), np.float32)
    out = p.run_batch([green_screen(), bad, green_screen()], keys=["a", "b", "c"])
    assert [r.status for r in out] == ["done", "failed", "done"]
    assert "RGB uint8" in out[1].error and out[1].image is None
    assert np.array_equal(out[0].image, out[2].image)
    with pytest.raises(Exception, match="RGB uint8"):
        p(bad)


def test_batch_equals_one_by_one_on_real_webcam_images():
    folder = shared_path("rps", "webcam", "scissors")
    files = sorted(folder.glob("*.png"))[:4]
    images = [read_image(f) for f in files]
    p = Pipeline.from_config({"seed": 3, "steps": [{"locate": {"backend": "mask-box"}}, CHROMA,
                                                   {"background": {"mode": "remove"}}, {"crop": {"square": True}},
                                                   {"resize": {"size": 64}}, "grey", {"distort": {"noise": 4}}]})
    batch = p.run_batch(images, sources=files, keys=[f.name for f in files])
    for f, img, r in zip(files, images, batch, strict=True):
        one = p(img, source=f, key=f.name)
        assert r.status == "done" and r.found is True
        assert np.array_equal(one.image, r.image) and one.box == r.box
        assert r.image.shape == (64, 64)
        # the hand enters from the right edge of these frames: the box touches it
        assert r.box.x1 == img.shape[1] and 0.05 < r.coverage < 0.6


def test_mask_files_segment_uses_the_original_image_even_after_a_crop():
    root = shared_path("pets3")
    f = root / "Abyssinian" / "images" / "Abyssinian_1.jpg"
    img = read_image(f)
    p = Pipeline.from_config({"steps": [{"locate": {"backend": "full"}}, {"crop": {"to": "box", "margin": 0}},
                                        {"resize": {"size": 64}},
                                        {"segment": {"backend": "mask-files", "options": {"masks": str(root)},
                                                     "refine": False}},
                                        {"background": {"mode": "colour", "color": "white"}}]})
    r = p(img, source=f)
    assert r.coverage == pytest.approx(0.1719, abs=1e-3)  # pets3/manifest.csv fg_frac
    assert r.mask.shape == (64, 64) and r.image.shape == (64, 64, 3)


def test_pickled_pipeline_carries_no_session_and_reopens():
    p = Pipeline.from_config({"steps": [CHROMA]})
    first = p(green_screen())
    assert p.steps[0].segmenter is not None
    q = pickle.loads(pickle.dumps(p))
    assert q.steps[0].segmenter is None and q.to_config() == p.to_config()
    assert np.array_equal(q(green_screen()).image, first.image)


# -------------------------------------------------------------------------------------------- torch


def test_pipeline_dataset_matches_the_pipeline(tmp_path):
    torch = pytest.importorskip("torch")
    from bglab.data.dataset import read_imagefolder
    from bglab.pipeline.torchdata import PipelineDataset

    samples = [s for s in read_imagefolder(shared_path("rps", "webcam")) if s.path.name < "0a"]
    assert len({s.label for s in samples}) == 3
    cfg = {"steps": [CHROMA, {"background": {"mode": "remove"}}, {"crop": {}}, {"resize": {"size": 32}}, "grey"]}
    ds = PipelineDataset(samples, cfg)
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert ds.classes == ["paper", "rock", "scissors"] and y == ds.class_to_idx[samples[0].label]
    direct = Pipeline.from_config(cfg)(read_image(samples[0].path), source=samples[0].path)
    assert np.array_equal((x[0].numpy() * 255).round().astype(np.uint8), direct.image)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)
    xb, yb = next(iter(loader))
    assert xb.shape[1:] == (1, 32, 32) and yb.dtype == torch.int64
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.pipeline.steps[0].segmenter is None
    with pytest.raises(ConfigError, match="skip"):
        PipelineDataset(samples, {"steps": [{"locate": {"backend": "full", "on_missing": "skip"}}]})


@pytest.mark.slow
def test_pipeline_dataset_in_dataloader_workers():
    torch = pytest.importorskip("torch")
    from bglab.pipeline.torchdata import PipelineDataset

    ds = PipelineDataset(shared_path("rps", "webcam"), {"steps": [CHROMA, {"resize": {"size": 24}}]})
    ds.samples = ds.samples[::150]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="spawn")
    seen = sum(len(yb) for _, yb in loader)
    assert seen == len(ds)
    x0, _ = ds[0]
    first = next(iter(torch.utils.data.DataLoader(ds, batch_size=1, num_workers=0)))[0][0]
    assert torch.equal(first, x0)


def test_reference_config_parses():
    p = Pipeline.from_config(Path(__file__).resolve().parents[1] / "bglab" / "configs" / "preprocess-reference.yaml")
    assert [s.name for s in p.steps] == ["locate", "crop", "segment", "background", "resize", "grey"]
    loc = p.locate_step
    assert loc.backend == "mediapipe-hands" and loc.options["min_confidence"] == 0.1
    assert loc.on_missing == "mask-box" and p.steps[4].size == (64, 64)
