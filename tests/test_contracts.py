"""Contracts every registered backend and every pipeline step keeps, parametrized over the registries.

In the spirit of albumentations' tests over all transforms: a backend registered in ``bglab/foreground/__init__.py``
or a step added to ``bglab.pipeline`` is covered the day it exists. Backends: the record's facts are true of the
factory (path options are parameters, ``served`` follows ``reads_files``), a synthetic image gives a float32 mask
in [0, 1] of the image's size (or boxes inside the image), batch == single, a misspelt option is refused
naming the accepted ones. Steps: ``to_config`` -> parse gives the same config and fingerprint, every written key
is accepted back, an unknown key and a wrongly typed value are refused naming the key. Shipped configs keep
their fingerprints.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bglab.errors import BackendError, BglabError, ConfigError
from bglab.foreground import backends, create, is_available, resolve
from bglab.io.files import write_image, write_mask
from bglab.ops.box import Box
from bglab.pipeline import STEP_NAMES, Pipeline

REPO = Path(__file__).resolve().parents[1]
U2NETP = REPO / "bglab" / "models" / "u2netp.onnx"
H, W = 48, 64
ALL = [b.name for b in backends()]
SEGMENTERS = [b.name for b in backends("segmenter")]
LOCATORS = [b.name for b in backends("locator")]


def _scene(seed: int = 0) -> np.ndarray:
    """A green screen with a skin-coloured block and a little noise: every backend has something to find."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = (40, 180, 60)
    img[12:36, 20:44] = (205, 150, 120)
    return np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- backend options

def _mask_folder(tmp: Path) -> dict[str, Any]:
    m = np.zeros((H, W), np.uint8)
    m[12:36, 20:44] = 255
    for stem in ("scene0", "scene1"):
        write_mask(tmp / "masks" / f"{stem}.png", m)
    return {"masks": str(tmp / "masks")}


def _box_list(tmp: Path) -> dict[str, Any]:
    p = tmp / "boxes.csv"
    p.write_text("file,width,height,label,xmin,ymin,xmax,ymax\n"
                 f"scene0.png,{W},{H},hand,20,12,44,36\nscene1.png,{W},{H},hand,18,10,40,30\n")
    return {"boxes": str(p)}


def _box_model(tmp: Path) -> dict[str, Any]:
    torch = pytest.importorskip("torch", reason="box-model with a .safetensors file needs torch (extra 'train')")
    from bglab.train.detector import BoxLabelNet, save_detector

    torch.manual_seed(0)
    return {"model": str(save_detector(BoxLabelNet(2, width=8, size=32).eval(), tmp / "det.safetensors",
                                       ["no", "yes"]))}


def _u2net_file(tmp: Path) -> dict[str, Any]:
    if not U2NETP.is_file():
        pytest.skip("bglab/models/u2netp.onnx is installed by `make models`")
    return {"model_path": str(U2NETP)}


# The options a backend needs to run at all (a file it reads); every other backend runs with none. A new
# backend whose factory needs something fails test_backend_runs... below until it gets a line here.
NEEDS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "mask-files": _mask_folder, "mask-box": _mask_folder, "box-csv": _box_list, "box-model": _box_model,
    "rembg": _u2net_file,
}


def _open(name: str, tmp: Path) -> tuple[Any, list[tuple[np.ndarray, Path]]]:
    """The backend with the options it needs, and two synthetic images written where it can find them."""
    options = NEEDS[name](tmp) if name in NEEDS else {}
    ok, why = is_available(name, **options)
    if not ok:
        pytest.skip(f"{name} is not available here: {why}")
    inputs = []
    for i in range(2):
        img = _scene(i)
        write_image(tmp / f"scene{i}.png", img)
        inputs.append((img, tmp / f"scene{i}.png"))
    return create(name, **options), inputs


# ---------------------------------------------------------------------------------------- backend contracts

@pytest.mark.parametrize("name", ALL)
def test_backend_record_tells_the_truth(name: str) -> None:
    info = resolve(name)
    assert info.kind in ("segmenter", "locator") and info.summary.strip()
    assert info.served == (info.kind == "segmenter" and not info.reads_files)
    assert not info.reads_files or info.path_options, "a backend that reads files by path names the option"
    factory = getattr(importlib.import_module(info.module), info.factory)  # no extra needed to import the module
    params = inspect.signature(factory).parameters
    assert "runtime" in params, "factories take the Runtime first"
    for opt in (*info.path_options, *info.requires_unless):
        assert opt in params, f"{name}: registry names option {opt!r} that its factory does not take"
    if info.requires:
        assert info.extra, f"{name} needs {info.requires}: name the pip extra that provides them"


def test_resolve_refuses_with_the_choices() -> None:
    assert resolve(None).name == "unet-effnet"  # the default segmenter
    with pytest.raises(BackendError, match="unknown backend 'nope'") as exc:
        resolve("nope")
    assert "grabcut" in (exc.value.hint or "")
    with pytest.raises(BackendError, match="'full' is a locator, not a segmenter") as exc:
        resolve("full", "segmenter")
    assert "unet" in (exc.value.hint or "")


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_gives_a_soft_mask_and_batch_equals_single(name: str, tmp_path: Path) -> None:
    seg, inputs = _open(name, tmp_path)
    singles = []
    for img, src in inputs:
        mask = seg.predict(img, source=src)
        assert isinstance(mask, np.ndarray) and mask.shape == (H, W), f"{name}: mask shape {mask.shape}"
        assert mask.dtype == np.float32, f"{name}: mask dtype {mask.dtype}"
        assert np.isfinite(mask).all() and mask.min() >= 0.0 and mask.max() <= 1.0
        singles.append(mask)
    batch = seg.predict_batch([img for img, _ in inputs], sources=[src for _, src in inputs])
    assert len(batch) == len(inputs)
    for one, many in zip(singles, batch, strict=True):
        assert many.shape == one.shape and many.dtype == one.dtype
        np.testing.assert_allclose(many, one, atol=1e-4, err_msg=f"{name}: predict_batch differs from predict")


@pytest.mark.parametrize("name", LOCATORS)
def test_locator_gives_boxes_inside_the_image(name: str, tmp_path: Path) -> None:
    loc, inputs = _open(name, tmp_path)
    for img, src in inputs:
        boxes = loc.locate(img, source=src)
        assert isinstance(boxes, list) and all(isinstance(b, Box) for b in boxes)
        for b in boxes:
            assert 0 <= b.x0 < b.x1 <= W and 0 <= b.y0 < b.y1 <= H, f"{name}: box {b} outside {W}x{H}"
        assert loc.locate(img, source=src) == boxes, f"{name}: the same image gave other boxes"


@pytest.mark.parametrize("name", ALL)
def test_misspelt_option_is_refused_naming_the_accepted_ones(name: str, tmp_path: Path) -> None:
    options = NEEDS[name](tmp_path) if name in NEEDS else {}
    if not is_available(name, **options)[0]:
        pytest.skip(f"{name} is not available here")
    with pytest.raises(BglabError, match="not_an_option") as exc:
        create(name, **options, not_an_option=1)
    info = resolve(name)
    accepted = [p for p in inspect.signature(getattr(importlib.import_module(info.module), info.factory)).parameters
                if p != "runtime"]
    hint = exc.value.hint or ""  # its own options, or those of the backend it passes them on to (mask-box)
    assert not accepted or "takes:" in hint or any(p in hint for p in accepted), f"{name}: unhelpful hint {hint!r}"


# ---------------------------------------------------------------------------------------- step contracts

# The smallest valid pipeline that holds each step (some steps need one before them); a new step fails
# test_every_step_has_a_sample until it has one.
STEP_SAMPLES: dict[str, list[Any]] = {
    "locate": [{"locate": {"backend": "full", "margin": 0.05}}],
    "segment": [{"segment": {"backend": "chroma", "threshold": 0.4, "options": {"tolerance": 0.2}}}],
    "background": [{"segment": {"backend": "chroma"}},
                   {"background": {"mode": "remove", "color": "#102030", "alpha": True}}],
    "crop": [{"locate": {"backend": "full"}}, {"crop": {"to": "box", "margin": 0.2, "square": True}}],
    "pose": [{"pose": {"size": 64, "with_photo": True}}],
    "resize": [{"resize": {"size": 40, "pad_color": "white"}}],
    "grey": ["grey"],
    "distort": [{"distort": {"dropout": 0.1, "noise": 5.0}}],
}


def _fingerprint(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def test_every_step_has_a_sample() -> None:
    assert set(STEP_SAMPLES) == set(STEP_NAMES)


@pytest.mark.parametrize("name", STEP_NAMES)
def test_step_config_round_trips_with_a_stable_fingerprint(name: str) -> None:
    pipe = Pipeline.from_config({"seed": 3, "steps": STEP_SAMPLES[name]})
    config = pipe.to_config()
    again = Pipeline.from_config(config).to_config()
    assert again == config and _fingerprint(again) == _fingerprint(config)
    assert Pipeline.from_config(yaml.safe_load(pipe.to_yaml())).to_config() == config  # through the YAML file
    step = next(st for st in pipe.steps if st.name == name)
    written = step.to_config()
    assert set(written) <= set(step.keys), f"{name} writes keys it does not read back: {set(written) - set(step.keys)}"
    assert Pipeline.from_config({"seed": 3, "steps": [*STEP_SAMPLES[name][:-1], {name: written}]}
                                ).to_config() == config  # the step's own config is complete


@pytest.mark.parametrize("name", STEP_NAMES)
def test_step_refuses_an_unknown_key_naming_the_allowed_ones(name: str) -> None:
    *before, last = STEP_SAMPLES[name]
    body = dict(last[name]) if isinstance(last, dict) else {}
    with pytest.raises(ConfigError, match=rf"steps\[{len(before)}\]\.{name}: unknown key 'not_a_key'") as exc:
        Pipeline.from_config({"steps": [*before, {name: {**body, "not_a_key": 1}}]})
    assert "allowed keys:" in (exc.value.hint or "")


@pytest.mark.parametrize("name", STEP_NAMES)
def test_step_refuses_a_wrongly_typed_value_naming_the_key(name: str) -> None:
    *before, last = STEP_SAMPLES[name]
    step = next(st for st in Pipeline.from_config({"steps": STEP_SAMPLES[name]}).steps if st.name == name)
    typed = [k for k, v in step.to_config().items() if isinstance(v, bool | int | float)]
    if not typed:
        pytest.skip(f"{name} has no number or true/false setting")
    body = dict(last[name]) if isinstance(last, dict) else {}
    for key in typed:
        with pytest.raises(ConfigError, match=rf"steps\[{len(before)}\]\.{name}\.{key}: "):
            Pipeline.from_config({"steps": [*before, {name: {**body, key: {"not": "a value"}}}]})


@pytest.mark.parametrize("name", STEP_NAMES)
def test_step_fields_are_declared_once_and_each_refuses_a_bad_value(name: str) -> None:
    """The step's keys, parsing and to_config all come from its schema: the step parses its own to_config back
    to the same step, and every declared number / choice refuses a value out of its range / choices."""
    *before, last = STEP_SAMPLES[name]
    step = next(st for st in Pipeline.from_config({"steps": STEP_SAMPLES[name]}).steps if st.name == name)
    assert step.keys == step.schema.keys
    assert type(step)(step.to_config(), "again").to_config() == step.to_config()
    body = dict(last[name]) if isinstance(last, dict) else {}
    for f in step.schema.fields:
        bad = ("not-a-choice" if f.kind == "choice" else f.lo - 1 if f.lo is not None
               else f.hi + 1 if f.hi is not None else None)
        if bad is None:
            continue
        with pytest.raises(ConfigError, match=rf"steps\[{len(before)}\]\.{name}\.{f.name}: ") as exc:
            Pipeline.from_config({"steps": [*before, {name: {**body, f.name: bad}}]})
        assert exc.value.hint, f"{name}.{f.name}: no hint"


def test_serve_settings_refuse_each_declared_range() -> None:
    from bglab.serve.settings import SETTINGS, ServerSettings

    ranged = [f for f in SETTINGS.fields if f.lo is not None or f.hi is not None]
    assert {f.name for f in ranged} >= {"port", "workers", "timeout", "keep_alive"}
    for f in ranged:
        bad = f.hi + 1 if f.hi is not None else f.lo - (f.kind != "float")  # a float (seconds) must be > lo
        with pytest.raises(ConfigError, match=rf"^{f.name} must be ") as exc:
            ServerSettings(**{f.name: bad})
        assert exc.value.hint


# ---------------------------------------------------------------------------------------- shipped configs

# sha256 (first 16 hex digits) of each shipped config as resolved, with its paths written without the
# location of the repository or of the config file (absolute paths relative to the repository, then leading
# ../ dropped): a refactor of the config code must leave every one unchanged (run directories resume, caches
# hit), and so must moving the configs (checked when they moved into bglab/configs/).
SHIPPED = {
    "pets3-matrix.yaml": "769722a1437d6475", "pets3-pretrained.yaml": "bbb9fa8ca24022e1",
    "pets3-u2netp-pretrained.yaml": "f40af98e491b7b03", "pets3-u2netp.yaml": "8f74eb24365f7b4e",
    "preprocess-reference.yaml": "97b5b869e02e0f7d", "rps-correlated.yaml": "36830bbeea497616",
    "rps-pose-photo.yaml": "75050eaa03cf3025", "rps-pose-recipe.yaml": "4c6d075f8a646f04",
    "rps-pose-turns.yaml": "4b0d2e775c2992fd", "rps-pretrained.yaml": "b6d18dc8d1d6ee80",
    "rps-recipe-cosine.yaml": "70ad99a94058fe22", "rps-recipe.yaml": "f5cf037a4ade4a0e",
    "rps-reference.yaml": "cc41c2f9bcbec851", "rps-swap.yaml": "23144cb39c82c144",
    "rps-viewpoint.yaml": "a729ab8c8c0fe7f6",
}


def _relative(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _relative(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_relative(v) for v in x]
    if isinstance(x, str) and x.startswith("/"):
        x = os.path.relpath(x, REPO)
    while isinstance(x, str) and x.startswith("../"):
        x = x[3:]
    return x


def _shipped(name: str) -> Path:
    found = [p for p in (*REPO.glob(f"configs/{name}"), *(REPO / "bglab").glob(f"**/configs/{name}"))]
    if not found:
        pytest.fail(f"shipped config {name} not found under configs/ or bglab/**/configs/")
    return found[0]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_fingerprint_is_unchanged(name: str) -> None:
    from bglab.experiment.config import load_experiment_config, resolved_config

    path = _shipped(name)
    raw = yaml.safe_load(path.read_text())
    pipeline = set(raw) <= {"version", "seed", "steps", "output"}
    resolved = Pipeline.from_config(path).to_config() if pipeline else resolved_config(load_experiment_config(path))
    assert _fingerprint(_relative(resolved))[:16] == SHIPPED[name]


# ---------------------------------------------------------------------------------------- adding a backend

NEW_BACKEND = '''
"""A segmenter whose one option is a file: the mask is every pixel brighter than the level in that file."""
from pathlib import Path

import numpy as np

from bglab.foreground.base import SegmenterBase, rgb_input


class LevelSegmenter(SegmenterBase):
    name = "level-file"

    def __init__(self, level: float) -> None:
        self.level = level

    def predict(self, image, *, source=None):
        return (rgb_input(image, self.name).mean(axis=2) > self.level).astype(np.float32)


def create(runtime, *, levels=None):
    return LevelSegmenter(float(Path(levels).read_text()))
'''


def test_a_segmenter_with_a_path_option_is_one_file_and_one_registry_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What docs/ARCHITECTURE.md promises: the new module plus one ``register`` line reach the CLI help, the
    pipeline, the experiment config's path resolution and the server, with nothing else edited."""
    from bglab.experiment.config import _resolve_step_paths
    from bglab.foreground import registry
    from bglab.serve.settings import ServerSettings

    (tmp_path / "level_backend.py").write_text(NEW_BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))  # the registration is undone after
    registry.register(registry.BackendInfo("level-file", "segmenter", "level_backend", "create",
                                           "pixels brighter than the level in a file", path_options=("levels",)))
    (tmp_path / "cfg" / "models").mkdir(parents=True)
    (tmp_path / "cfg" / "models" / "level.txt").write_text("100\n")

    assert "level-file" in registry.choices_help("segmenter")  # the CLI's --backend help
    steps = _resolve_step_paths([{"segment": {"backend": "level-file", "options": {"levels": "models/level.txt"}}}],
                                tmp_path / "cfg")  # an experiment arm: relative to the config file
    assert steps[0]["segment"]["options"]["levels"] == str(tmp_path / "cfg" / "models" / "level.txt")
    pipe = Pipeline.from_config({"steps": [*steps, {"background": {"mode": "remove"}}]})
    image = _scene(0)
    result = pipe(image)
    assert result.status == "done" and result.image[24, 30].tolist() == image[24, 30].tolist()  # the block is kept
    assert result.image[2, 2].tolist() == [0, 0, 0]  # the dark green screen went black
    assert ServerSettings(backend="level-file").allows("level-file") and resolve("level-file").served
