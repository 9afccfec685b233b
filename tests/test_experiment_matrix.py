"""Matrix experiments: variant arms read from another tree (aligned by class and stem), train x test-arm rows and
predictions, the matrix / BG-Gap report checked against the saved predictions, the background-swap augmentation
(deterministic, background pixels only), saliency shares, resumption in the middle of a matrix, and the pets3
matrix config."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from bglab.errors import ConfigError  # noqa: E402
from bglab.experiment.config import load_experiment_config, parse_config  # noqa: E402
from tests.conftest import csv_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog")
N_PER_CLASS = 12
SIZE = 20
COLOURS = {"cat": (200, 60, 60), "dog": (60, 60, 200)}  # the background colour gives the class away


@pytest.fixture(autouse=True, scope="module")
def _threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _fg_mask(i: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cy, cx = 10 + (i % 3) - 1, 10 + (i % 2)
    return (abs(yy - cy) < 5) & (abs(xx - cx) < 5)


def _bg(label: str, i: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[...] = COLOURS[label]
    return np.clip(img.astype(int) + rng.integers(-20, 21, size=img.shape), 0, 255).astype(np.uint8)


def _fg(label: str, img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[mask] = (240, 240, 240) if label == "cat" else (20, 20, 20)
    return out


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A source tree (<class>/images + masks) and a variants tree with original, mixed-same, mixed-rand, only-bg-t."""
    from bglab.io.files import write_image

    root = tmp_path_factory.mktemp("matrix")
    src, var = root / "src", root / "variants"
    rng = np.random.default_rng(0)
    bgs = {c: [_bg(c, i, rng) for i in range(N_PER_CLASS)] for c in CLASSES}
    for c in CLASSES:
        other = [x for x in CLASSES if x != c][0]
        for i in range(N_PER_CLASS):
            stem = f"{c}_{i:02d}"
            m = _fg_mask(i)
            m8 = (m * 255).astype(np.uint8)
            kinds = {
                "original": _fg(c, bgs[c][i], m),
                "mixed-same": _fg(c, bgs[c][(i + 1) % N_PER_CLASS], m),
                "mixed-rand": _fg(c, bgs[other][i], m),
                "only-bg-t": np.where(m[:, :, None], bgs[c][i][::-1], bgs[c][i]).astype(np.uint8),
            }
            for d, name in ((src, "images"), (src, "masks")):
                (d / c / name).mkdir(parents=True, exist_ok=True)
            write_image(src / c / "images" / f"{stem}.png", kinds["original"])
            write_image(src / c / "masks" / f"{stem}.png", m8)
            for kind, img in kinds.items():
                if kind == "mixed-rand" and stem == "dog_03":
                    continue  # a missing counterpart: left out of every arm
                if kind == "only-bg-t":  # the layout written before issue 21: <class>/{images,masks}, still read
                    write_image(var / kind / c / "images" / f"{stem}.png", img)
                    write_image(var / kind / c / "masks" / f"{stem}.png", m8)
                else:  # bglab variants' layout: images in <kind>/<class>/, masks in the sibling _masks/ tree
                    write_image(var / kind / c / f"{stem}.png", img)
                    write_image(var / "_masks" / kind / c / f"{stem}.png", m8)
    return src, var


def matrix_config(src: Path, var: Path, **over: object) -> dict:
    arms = {"original": []}
    for kind in ("mixed-same", "mixed-rand", "only-bg-t"):
        arms[kind] = {"from": str(var / kind), "steps": []}
    cfg = {
        "name": "matrix-micro",
        "seeds": [0, 1],
        "threads": 1,
        "input": {"size": 16, "channels": 3},
        "sources": {"pets": {"path": str(src)}},
        "protocols": {"p": {"split": {"pets": [0.5, 0.2, 0.3]}, "test_sets": {"test": "pets/test"}}},
        "arms": arms,
        "model": {"name": "cnn", "widths": [4, 8], "hidden": 16, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "eval_every": 1},
        "variants": {"base": {}, "bgswap": {"train": {"augment": {"bg_swap": 0.5, "bg_from": "only-bg-t"}}}},
        "evaluate": {"bootstrap": 100},
        "studies": {"matrix": {"protocols": ["p"], "arms": ["original", "mixed-rand"], "variants": ["base"],
                               "test_arms": ["original", "mixed-same", "mixed-rand"]},
                    "recipe": {"protocols": ["p"], "arms": ["original"], "variants": ["bgswap"],
                               "test_arms": ["original", "mixed-same", "mixed-rand"]}},
        "saliency": {"n": 2, "test_set": "test"},
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def matrix_run(trees: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from bglab.experiment.runner import run_experiment

    out = tmp_path_factory.mktemp("mrun") / "run"
    summary = run_experiment(parse_config(matrix_config(*trees)), out)
    return out, summary


# ------------------------------------------------------------------------------------------------ config


def test_config_matrix_keys_parse(trees: tuple[Path, Path]) -> None:
    cfg = parse_config(matrix_config(*trees))
    assert cfg.arms["mixed-rand"].source_dir == trees[1] / "mixed-rand"
    assert cfg.studies["matrix"].test_arms == ("original", "mixed-same", "mixed-rand")
    assert cfg.studies["matrix"].bg_gap == ("mixed-same", "mixed-rand")  # the default names
    assert cfg.variants["bgswap"].train.augment.bg_swap == 0.5
    assert cfg.used_arms() == ["original", "mixed-same", "mixed-rand", "only-bg-t"]  # bg_from is preprocessed
    assert len(cfg.runs()) == 3 * 2
    assert cfg.saliency is not None and cfg.saliency.n == 2


def test_relative_from_is_relative_to_the_config_file(trees: tuple[Path, Path], tmp_path: Path) -> None:
    import yaml

    raw = matrix_config(*trees)
    raw["arms"]["mixed-rand"] = {"from": "../v/mixed-rand", "steps": []}
    path = tmp_path / "cfgs" / "m.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw))
    assert load_experiment_config(path).arms["mixed-rand"].source_dir == (tmp_path / "v" / "mixed-rand").resolve()


@pytest.mark.parametrize(("change", "key"), [
    ({"studies": {"m": {"arms": ["original"], "test_arms": ["nope"]}}}, "studies.m.test_arms[0]"),
    ({"studies": {"m": {"arms": ["original"], "test_arms": ["original", "mixed-rand"],
                        "bg_gap": ["original", "only-bg-t"]}}}, "studies.m.bg_gap"),
    ({"variants": {"base": {}, "bgswap": {"train": {"augment": {"bg_swap": 0.5, "bg_from": "nope"}}}}},
     "variants.bgswap.train.augment.bg_from"),
    ({"variants": {"base": {}, "bgswap": {"train": {"augment": {"bg_swap": 1.5}}}}}, "augment.bg_swap"),
    ({"saliency": {"n": 4, "test_set": "nope"}}, "saliency.test_set"),
    ({"arms": {"a": {"from": "x", "stepz": []}}}, "arms.a.stepz"),
])
def test_config_errors_name_the_key(trees: tuple[Path, Path], change: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(matrix_config(*trees, **change))
    assert key in str(info.value)


# ---------------------------------------------------------------------------------------------- variant arms


def test_variant_arm_aligns_by_class_and_stem_and_leaves_out_missing(trees: tuple[Path, Path], tmp_path: Path
                                                                      ) -> None:
    from bglab.experiment.data import arm_masks, load_data
    from bglab.io.files import read_image
    from bglab.ops import resize_pad

    src, var = trees
    cfg = parse_config(matrix_config(src, var))
    data = load_data(cfg, cache_dir=tmp_path / "cache")
    i = data.keys.index("pets/cat/cat_05.png")
    want = resize_pad(read_image(var / "mixed-rand" / "cat" / "cat_05.png"), 16, interpolation="area")[0]
    assert np.array_equal(data.arms["mixed-rand"].images[i], want)
    assert not np.array_equal(data.arms["mixed-rand"].images[i], data.arms["original"].images[i])
    j = data.keys.index("pets/dog/dog_03.png")
    assert not data.arms["mixed-rand"].ok[j] and data.arms["original"].ok[j] and not data.ok[j]
    assert int(data.ok.sum()) == 2 * N_PER_CLASS - 1
    assert any("dog_03" in e and "mixed-rand" in e for e in data.dropped()["mixed-rand"])
    # masks: the variant's mask tree for a from: arm, the source's mask_path otherwise, resize-padded like the image
    masks, has, reason = arm_masks(cfg.arms["mixed-rand"], data.samples, 16)
    assert reason == "" and has.sum() == 2 * N_PER_CLASS - 1 and not has[j]
    assert masks[i].sum() > 0 and masks[i].shape == (16, 16)
    m0, h0, _ = arm_masks(cfg.arms["original"], data.samples, 16)
    assert h0.all() and np.array_equal(m0[i], masks[i])
    m1, h1, _ = arm_masks(cfg.arms["only-bg-t"], data.samples, 16)  # a tree in the old layout
    assert h1.all() and np.array_equal(m1[i], masks[i])
    # the cache fingerprint covers the resolved files: a changed variant file is re-read
    caches = sorted(p.name for p in (tmp_path / "cache").glob("mixed-rand-*.npz"))
    assert len(caches) == 1
    from bglab.experiment.data import prepare_arm

    again = prepare_arm(cfg.arms["mixed-rand"], data.samples, size=16, channels=3, cache_dir=tmp_path / "cache")
    assert again.cached
    import shutil

    copy = tmp_path / "var2"
    shutil.copytree(var / "mixed-rand", copy / "mixed-rand")
    from bglab.io.files import write_image

    write_image(copy / "mixed-rand" / "cat" / "cat_05.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    cfg2 = parse_config(matrix_config(src, copy))
    changed = prepare_arm(cfg2.arms["mixed-rand"], data.samples, size=16, channels=3, cache_dir=tmp_path / "cache")
    assert not changed.cached and changed.images[i].max() == 0


def test_missing_from_folder_is_a_clear_error(trees: tuple[Path, Path], tmp_path: Path) -> None:
    from bglab.errors import DatasetError
    from bglab.experiment.data import load_data

    raw = matrix_config(*trees)
    raw["arms"]["mixed-rand"] = {"from": str(tmp_path / "nowhere"), "steps": []}
    with pytest.raises(DatasetError, match="from: folder does not exist"):
        load_data(parse_config(raw), cache_dir=None)


def test_crop_arm_masks_are_not_mappable(trees: tuple[Path, Path]) -> None:
    from bglab.experiment.config import ArmConfig
    from bglab.experiment.data import arm_masks, load_sources

    cfg = parse_config(matrix_config(*trees))
    samples = load_sources(cfg)["pets"]
    arm = ArmConfig("cropped", [{"crop": {"to": "mask"}}], {"steps": []})
    masks, has, reason = arm_masks(arm, samples, 16)
    assert not has.any() and "crops" in reason


def test_unreadable_mask_is_reported_not_swallowed(trees: tuple[Path, Path]) -> None:
    from bglab.experiment.data import arm_masks, load_sources

    cfg = parse_config(matrix_config(*trees))
    samples = load_sources(cfg)["pets"]
    broken = next(s for s in samples if s.mask_path is not None)
    good = broken.mask_path.read_bytes()
    broken.mask_path.write_bytes(b"not a png")
    try:
        errors: list[str] = []
        masks, has, reason = arm_masks(cfg.arms["original"], samples, 16, errors)
        k = samples.index(broken)
        assert not has[k] and not masks[k].any() and has.sum() == len(samples) - 1 and reason == ""
        assert len(errors) == 1 and broken.mask_path.name in errors[0]
    finally:
        broken.mask_path.write_bytes(good)  # the module's trees are shared by other tests


# ---------------------------------------------------------------------------------------------- bg swap


def test_bg_swap_plan_is_seeded_and_never_picks_itself() -> None:
    from bglab.experiment.augment import bg_swap_plan

    sel, partner = bg_swap_plan(0, 3, 50, 0.5)
    sel2, partner2 = bg_swap_plan(0, 3, 50, 0.5)
    assert sel.equal(sel2) and partner.equal(partner2)
    assert not bg_swap_plan(0, 4, 50, 0.5)[1].equal(partner)  # fresh each epoch
    assert (partner.numpy() != np.arange(50)).all() and int(partner.min()) >= 0 and int(partner.max()) < 50
    assert 10 < int(sel.sum()) < 40
    assert not bg_swap_plan(0, 1, 50, 0.0)[0].any() and bg_swap_plan(0, 1, 50, 1.0)[0].all()


def test_apply_bg_swap_changes_only_background_pixels() -> None:
    import torch

    from bglab.experiment.augment import apply_bg_swap

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)
    bg = torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)
    keep = torch.rand((4, 1, 8, 8), generator=g) < 0.4
    sel = torch.tensor([True, False, True, False])
    y = apply_bg_swap(x, keep, bg, sel)
    k = keep.expand(-1, 3, -1, -1)
    assert y[~sel].equal(x[~sel])                       # unselected images untouched
    assert (y[sel][k[sel]] == x[sel][k[sel]]).all()     # foreground kept
    assert (y[sel][~k[sel]] == bg[sel][~k[sel]]).all()  # background replaced


def test_bg_swap_run_is_deterministic_and_changes_training(trees: tuple[Path, Path], tmp_path: Path) -> None:
    from bglab.experiment.runner import run_experiment

    raw = matrix_config(*trees, seeds=[0], saliency=None,
                        studies={"s": {"protocols": ["p"], "arms": ["original"], "variants": ["base", "bgswap"]}})
    cfg = parse_config(raw)
    outs = [tmp_path / "a", tmp_path / "b"]
    for o in outs:
        run_experiment(cfg, o, report=False)
    r1, r2 = (csv_rows(o / "metrics" / "p__original__bgswap__s0.csv") for o in outs)
    assert [(r["accuracy"], r["loss"]) for r in r1] == [(r["accuracy"], r["loss"]) for r in r2]
    base = csv_rows(outs[0] / "metrics" / "p__original__base__s0.csv")
    fit = [r["loss"] for r in r1 if r["split"] == "fit"]
    assert fit != [r["loss"] for r in base if r["split"] == "fit"]  # same init and order: only the swap differs


def test_bg_swap_without_masks_is_refused(trees: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from bglab.experiment.runner import run_experiment

    src = tmp_path / "nomasks"
    for c in CLASSES:
        shutil.copytree(trees[0] / c / "images", src / c / "images")
    raw = matrix_config(src, trees[1], seeds=[0], saliency=None,
                        studies={"s": {"protocols": ["p"], "arms": ["original"], "variants": ["bgswap"]}})
    with pytest.raises(ConfigError, match="bg_swap needs foreground masks"):
        run_experiment(parse_config(raw), tmp_path / "run", report=False)


# ------------------------------------------------------------------------------------------------ matrix


def _acc(path: Path) -> float:
    with np.load(path, allow_pickle=False) as z:
        return float((z["y_true"] == z["y_pred"]).mean())


def test_matrix_rows_and_predictions(matrix_run: tuple[Path, dict]) -> None:
    out, summary = matrix_run
    assert summary["complete"] is True
    rows = csv_rows(out / "metrics.csv")
    mx = [r for r in rows if r["split"] == "matrix"]
    # 3 trained lines x 2 seeds x 3 test arms, final epoch only
    assert Counter((r["arm"], r["variant"], r["test_arm"]) for r in mx) == {
        (a, v, t): 2 for a, v in (("original", "base"), ("mixed-rand", "base"), ("original", "bgswap"))
        for t in ("original", "mixed-same", "mixed-rand")}
    assert {r["epoch"] for r in mx} == {"2"}
    assert all(r["test_arm"] == r["arm"] for r in rows if r["split"] != "matrix")
    for r in mx:
        run = f"p__{r['arm']}__{r['variant']}__s{r['seed']}"
        path = out / "predictions" / run / "matrix" / f"test__{r['test_arm']}.npz"
        assert float(r["accuracy"]) == pytest.approx(_acc(path))
    # the same test samples in every test arm, and the matrix cell of the own arm equals the ordinary test row
    k = [np.load(out / "predictions" / "p__original__base__s0" / "matrix" / f"test__{t}.npz")["keys"]
         for t in ("original", "mixed-rand")]
    assert np.array_equal(k[0], k[1]) and "pets/dog/dog_03.png" not in set(k[0])
    own = _acc(out / "predictions" / "p__original__base__s0" / "test__clean.npz")
    assert own == pytest.approx(_acc(out / "predictions" / "p__original__base__s0" / "matrix" / "test__original.npz"))


def test_report_matrix_and_bg_gap_match_hand_computation(matrix_run: tuple[Path, dict]) -> None:
    from bglab.experiment.stats import t_interval

    out, summary = matrix_run
    pred = out / "predictions"
    for row, (arm, var) in {"original": ("original", "base"), "mixed-rand": ("mixed-rand", "base"),
                            "original+bgswap": ("original", "bgswap")}.items():
        for ta in ("original", "mixed-same", "mixed-rand"):
            accs = [_acc(pred / f"p__{arm}__{var}__s{s}" / "matrix" / f"test__{ta}.npz") for s in (0, 1)]
            assert summary["matrix"]["p"]["test"][row][ta] == pytest.approx(float(np.mean(accs)))
        gaps = [_acc(pred / f"p__{arm}__{var}__s{s}" / "matrix" / "test__mixed-same.npz")
                - _acc(pred / f"p__{arm}__{var}__s{s}" / "matrix" / "test__mixed-rand.npz") for s in (0, 1)]
        g = summary["bg_gap"]["p"]["test"][row]
        m, lo, hi = t_interval(gaps)
        assert g["mean"] == pytest.approx(m) and g["values"] == pytest.approx(gaps)
        if math.isnan(lo) or len(gaps) < 3:  # issue 18: no t-interval over fewer than 3 seeds
            assert g["lo"] is None and g["hi"] is None
        else:
            assert g["lo"] == pytest.approx(lo) and g["hi"] == pytest.approx(hi)
        assert g["text"].startswith(f"{row}:") and "BG-Gap" in g["text"]
    text = (out / "report.html").read_text()
    for title in ("Train x test matrix", "BG-Gap = acc(mixed-same) - acc(mixed-rand)", "original+bgswap",
                  "Saliency (Grad-CAM)", "Verdict", "Final accuracy"):
        assert title in text, title
    cell = summary["analysis"]["matrix"]["protocols"]["p"]["cells"]["mixed-rand|test|original"]
    if cell["lo"] is None:  # 2 seeds: the mean and n, no t-interval (issue 18)
        lo_hi = f"{100 * cell['mean']:.1f} (n={cell['n']})"
    else:
        lo_hi = f"{100 * cell['mean']:.1f} [{100 * cell['lo']:.1f}, {100 * cell['hi']:.1f}]"
    assert lo_hi in text  # the table shows mean [CI] in %
    assert "<script" not in text and text.count("data:image/png;base64,") >= 8
    json.loads((out / "summary.json").read_text())  # strict JSON (no NaN)


def test_saliency_files_and_report(matrix_run: tuple[Path, dict]) -> None:
    out, summary = matrix_run
    with np.load(out / "predictions" / "p__mixed-rand__base__s1" / "saliency__test.npz", allow_pickle=False) as z:
        share, has, keys = z["share"], z["has_mask"], z["keys"]
        assert z["sheet_images"].shape[0] == z["sheet_heat"].shape[0] == 2 * len(CLASSES)
        assert z["sheet_images"].shape[1:] == (16, 16, 3)
        assert str(z["reason"]) == ""
        sheet_keys = [str(keys[i]) for i in z["sheet_index"]]
    assert has.all() and np.nanmin(share) >= 0 and np.nanmax(share) <= 1
    # the sheet's images are the first n of each class by key, the same for every arm
    with np.load(out / "predictions" / "p__original__base__s0" / "saliency__test.npz", allow_pickle=False) as z:
        assert [str(z["keys"][i]) for i in z["sheet_index"]] == sheet_keys
    assert sheet_keys[:2] == sorted(k for k in map(str, keys) if "/cat/" in k)[:2]
    lines = summary["analysis"]["saliency"]["protocols"]["p"]["lines"]
    assert set(lines) == {"original", "mixed-rand", "original+bgswap"}
    per_seed = []
    for s in (0, 1):
        with np.load(out / "predictions" / f"p__mixed-rand__base__s{s}" / "saliency__test.npz") as z:
            per_seed.append(float(np.nanmean(z["share"])))
    assert lines["mixed-rand"]["share"]["mean"] == pytest.approx(float(np.mean(per_seed)))
    assert summary["saliency_inside_fg"]["p"]["mixed-rand"]["mean"] == pytest.approx(float(np.mean(per_seed)))


def test_resume_mid_matrix_equals_uninterrupted(trees: tuple[Path, Path], tmp_path: Path,
                                                matrix_run: tuple[Path, dict]) -> None:
    from bglab.experiment.runner import run_experiment

    cfg = parse_config(matrix_config(*trees))
    out = tmp_path / "run"
    first = run_experiment(cfg, out, max_epochs=9)  # 6 runs x 2 epochs: stops inside the first bg_swap run
    assert first["complete"] is False
    state = json.loads((out / "checkpoints" / "p__original__bgswap__s0.json").read_text())
    assert state["epoch"] == 1 and state["done"] is False
    assert run_experiment(cfg, out)["complete"] is True

    def key(r: dict[str, str]) -> tuple:
        return (r["arm"], r["variant"], r["seed"], r["epoch"], r["split"], r["test_set"], r["distortion"],
                r["test_arm"])

    ref = {key(r): r for r in csv_rows(matrix_run[0] / "metrics.csv")}
    got = {key(r): r for r in csv_rows(out / "metrics.csv")}
    assert got.keys() == ref.keys()
    for k, r in ref.items():
        assert float(got[k]["accuracy"]) == pytest.approx(float(r["accuracy"]), abs=1e-9), k
        assert float(got[k]["loss"]) == pytest.approx(float(r["loss"]), rel=1e-4, abs=1e-6), k
    assert {r["session"] for r in got.values()} == {"1", "2"}


# ------------------------------------------------------------------------------------------ pets3 config


def test_pets3_matrix_config_parses() -> None:
    full = load_experiment_config(REPO / "bglab" / "configs" / "pets3-matrix.yaml")
    quick = load_experiment_config(REPO / "bglab" / "configs" / "pets3-matrix.yaml", quick=True)
    assert full.seeds == (0, 1, 2) and quick.seeds == (0,)
    assert full.size == 64 and full.channels == 3
    assert full.protocols["pets3"].split["pets3"] == (0.6, 0.15, 0.25)
    rows = {(k.arm, k.variant) for k in full.runs()}
    assert len(rows) == 13 and ("original", "bgswap") in rows
    assert full.matrix_studies()[0].test_arms == ("original", "only-fg", "no-fg", "only-bg-b", "only-bg-t",
                                                  "mixed-same", "mixed-rand", "mixed-next")
    assert full.variants["bgswap"].train.augment.bg_from == "only-bg-t"
    assert full.arms["mixed-rand"].source_dir == (REPO / "work" / "pets3-variants" / "mixed-rand").resolve()
    assert quick.variants["base"].train.epochs == quick.variants["bgswap"].train.epochs == 2
    assert full.variants["bgswap"].train.epochs == 40 and full.variants["bgswap"].train.augment.flip
    assert len(quick.runs()) == 3 and len(full.runs()) == 13 * 3


def test_pets3_matrix_quick_profile(shared_data: Path, tmp_path: Path) -> None:
    """The shipped config's quick profile on real pets3 photos, with the variant trees it needs made here."""
    import shutil

    import yaml

    from bglab.background.variants import generate_variants, parse_kinds
    from bglab.experiment.runner import run_experiment

    sub = tmp_path / "pets3"  # 12 photos per class, with their masks
    for cls in ("Abyssinian", "Bengal", "american_bulldog"):
        for kind in ("images", "masks"):
            (sub / cls / kind).mkdir(parents=True)
        for img in sorted((shared_data / "pets3" / cls / "images").glob("*.jpg"))[:12]:
            shutil.copy(img, sub / cls / "images" / img.name)
            shutil.copy(shared_data / "pets3" / cls / "masks" / f"{img.stem}.png", sub / cls / "masks")
    raw = yaml.safe_load((REPO / "bglab" / "configs" / "pets3-matrix.yaml").read_text())
    cfg0 = load_experiment_config(REPO / "bglab" / "configs" / "pets3-matrix.yaml", quick=True)
    kinds = sorted({cfg0.arms[a].source_dir.name for a in cfg0.used_arms() if cfg0.arms[a].source_dir}
                   | {"only-bg-t"})
    rep = generate_variants(sub, tmp_path / "variants", parse_kinds(",".join(kinds)), size=96)
    assert not rep.failed
    raw["sources"]["pets3"]["path"] = str(sub)
    for arm in raw["arms"].values():
        if isinstance(arm, dict) and "from" in arm:
            arm["from"] = str(tmp_path / "variants" / Path(arm["from"]).name)
    cfg = parse_config(raw, base_dir=REPO / "bglab" / "configs", quick=True)
    summary = run_experiment(cfg, tmp_path / "quick")
    assert summary["complete"] is True and all(s == "done" for s in summary["runs"].values())
    gaps = summary["bg_gap"]["pets3"]["test"]
    assert {"original", "mixed-rand", "original+bgswap"} <= set(gaps)
    for g in gaps.values():
        assert -1.0 <= g["mean"] <= 1.0


def test_cli_prints_bg_gap_lines(trees: tuple[Path, Path], matrix_run: tuple[Path, dict], tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    import yaml

    from bglab.cli.app import main

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(matrix_config(*trees), sort_keys=False))  # the same arm order
    assert main(["experiment", str(path), "--out", str(matrix_run[0])]) == 0  # finished: nothing is retrained
    text = capsys.readouterr().out
    assert "[p; test] original+bgswap:" in text.replace("\n", " ") and "BG-Gap" in text


def test_backend_path_options_resolve_against_the_config_folder(tmp_path):
    """A relative ``masks`` / ``model`` / ``boxes`` option or swap ``image`` means the same file wherever bglab runs."""
    from bglab.experiment.config import _resolve_step_paths

    steps = [{"segment": {"backend": "mask-files", "options": {"masks": "../m"}}},
             {"locate": {"backend": "box-csv", "options": {"boxes": "/abs/a.csv"},
                         "fallback": [{"backend": "box-model", "options": {"model": "run/best.safetensors"}}]}},
             {"background": {"mode": "swap", "image": "../backgrounds"}}, "grey"]
    out = _resolve_step_paths(steps, tmp_path / "configs")
    assert out[2]["background"]["image"] == str((tmp_path / "backgrounds").resolve())
    assert out[0]["segment"]["options"]["masks"] == str((tmp_path / "m").resolve())
    assert out[1]["locate"]["options"]["boxes"] == "/abs/a.csv"
    assert out[1]["locate"]["fallback"][0]["options"]["model"] == str(
        (tmp_path / "configs" / "run" / "best.safetensors").resolve())
    assert steps[0]["segment"]["options"]["masks"] == "../m"  # the input is not changed
