"""``bglab challenge``: the broken share agrees with a brute-force loop, a background-blind arm is never broken,
fast and full modes agree where they should, bad input is recorded or refused, and the CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bglab import ops  # noqa: E402
from bglab.cli.app import main  # noqa: E402
from bglab.data.dataset import read_imagefolder  # noqa: E402
from bglab.experiment.challenge import ChallengeError, find_runs, run_challenge, score_predictions  # noqa: E402
from bglab.io.files import read_image, read_mask, write_image  # noqa: E402
from bglab.ops.box import Box  # noqa: E402

CLASSES = ["cat", "dog", "fox"]
S = 16
GREY = {"seed": 0, "steps": [{"resize": {"size": S}}, "grey"]}
MODEL = {"name": "cnn", "widths": [4, 8], "hidden": 8, "dropout": 0.0}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _picture(c: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 16x16 RGB image (class shape on a random coloured clutter) and its bool mask."""
    img = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:S, 0:S]
    cy, cx = 8 + rng.integers(-2, 3), 8 + rng.integers(-2, 3)
    if c == 0:
        m = (abs(yy - cy) < 4) & (abs(xx - cx) < 4)
    elif c == 1:
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < 16
    else:
        m = ((abs(yy - cy) < 2) & (abs(xx - cx) < 5)) | ((abs(xx - cx) < 2) & (abs(yy - cy) < 5))
    img[m] = rng.integers(150, 256, size=3)
    return img, m


def _write_data(root: Path, n: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir(parents=True)
        for i in range(n):
            img, m = _picture(c, rng)
            write_image(root / name / "images" / f"{name}_{i}.png", img)
            write_image(root / name / "masks" / f"{name}_{i}.png", (m * 255).astype(np.uint8))
    return root


def _fit(model: torch.nn.Module, data: Path, steps: int) -> None:
    """A few full-batch Adam steps on the grey originals: a model that predicts more than one class."""
    x = np.stack([ops.to_grey(read_image(s.path)) for s in read_imagefolder(data)])
    y = torch.tensor([CLASSES.index(s.label) for s in read_imagefolder(data)])
    xt = torch.from_numpy(x).float().div(255).sub(0.5).div(0.5)[:, None]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), y).backward()
        opt.step()
    model.eval()


def _write_run(run_dir: Path, *, arm: str = "original", pipeline: dict | None = None, seeds: tuple[int, ...] = (0,),
               done: bool = True, init: int = 0, train_on: Path | None = None, steps: int = 30) -> Path:
    from bglab.experiment.checkpoints import save_checkpoint
    from bglab.train.classifiers import build_classifier

    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"baseline: {arm}\narms:\n  {arm}: []\n")
    for seed in seeds:
        torch.manual_seed(init + seed)
        model = build_classifier("cnn", len(CLASSES), 1, S, **{k: v for k, v in MODEL.items() if k != "name"})
        if train_on is not None:
            _fit(model, train_on, steps)
        run = f"p__{arm}__base__s{seed}"
        state = {"run": run, "protocol": "p", "arm": arm, "variant": "base", "seed": seed, "classes": CLASSES,
                 "size": S, "channels": 1, "model": MODEL, "pipeline": pipeline or GREY, "done": done, "epoch": 1}
        save_checkpoint(run_dir / "checkpoints" / f"{run}.safetensors", model, None, state)
    return run_dir


def _forward(model: torch.nn.Module, grey: np.ndarray) -> int:
    x = torch.from_numpy(grey).float().div(255).sub(0.5).div(0.5)[None, None]
    with torch.no_grad():
        return int(model(x).argmax(1))


def _brute_force(run_dir: Path, data: Path) -> dict:
    """Every foreground on every background, one composite at a time, straight from the ops."""
    model = find_runs(run_dir)[0].model
    items = []
    for s in read_imagefolder(data):
        img = read_image(s.path)
        m = read_mask(s.mask_path) > 127
        items.append((CLASSES.index(s.label), img, m))
    bgs = [ops.fill_box(img, Box.from_mask(m), mode="tiles", mask=m) for _, img, m in items]
    y = np.array([c for c, _, _ in items])
    po = np.array([_forward(model, ops.to_grey(img)) for _, img, _ in items])
    p = np.array([[_forward(model, ops.to_grey(ops.composite(img, m, bg))) for bg in bgs] for _, img, m in items])
    return {"y": y, "po": po, "p": p}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_data(tmp_path_factory.mktemp("chdata") / "test")


def test_broken_share_matches_brute_force(data: Path, tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "run", init=3, train_on=data, steps=10)
    res = run_challenge(run_dir, read_imagefolder(data), max_fg=None, max_bg=None)
    bf = _brute_force(run_dir, data)
    row = res.runs[0]
    # the same 12 foregrounds / backgrounds, in label / key order as read_imagefolder gives them
    assert [it.key for it in res.foregrounds] == [it.key for it in res.backgrounds]
    np.testing.assert_array_equal(res.predictions[row["run"]]["original"], bf["po"])
    np.testing.assert_array_equal(res.predictions[row["run"]]["composites"], bf["p"])
    correct = bf["po"] == bf["y"]
    broken = correct & (bf["p"] != bf["y"][:, None]).any(axis=1)
    assert row["original_correct"] == int(correct.sum()) and row["broken"] == int(broken.sum())
    assert 0 < row["broken"] < row["original_correct"]  # a non-degenerate case (init seed chosen for it)
    assert row["broken_share"] == pytest.approx(broken.sum() / correct.sum())
    assert row["composite_accuracy"] == pytest.approx((bf["p"] == bf["y"][:, None]).mean())
    for c, name in enumerate(CLASSES):
        sel = bf["y"] == c
        pc = row["per_class"][name]
        assert pc["broken"] == int(broken[sel].sum()) and pc["original_correct"] == int(correct[sel].sum())
    assert res.info["mode"]["original"]["mode"] == "fast"


def test_full_mode_equals_fast_mode_at_model_size(data: Path, tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "run", init=3, train_on=data, steps=10)
    fast = run_challenge(run_dir, read_imagefolder(data), max_fg=6, max_bg=5, mode="fast")
    full = run_challenge(run_dir, read_imagefolder(data), max_fg=6, max_bg=5, mode="full")
    run = fast.runs[0]["run"]
    assert full.info["mode"]["original"]["mode"] == "full"
    np.testing.assert_array_equal(fast.predictions[run]["composites"], full.predictions[run]["composites"])
    assert len(fast.foregrounds) == 6 and len(fast.backgrounds) == 5


def test_background_blind_arm_is_never_broken(data: Path, tmp_path: Path) -> None:
    # the arm removes the background with the ground-truth mask: every composite equals the original input
    blind = {"seed": 0, "steps": [{"segment": {"backend": "mask-files", "options": {"masks": str(data)}}},
                                  {"background": {"mode": "remove", "color": "black"}},
                                  {"resize": {"size": S}}, "grey"]}
    run_dir = _write_run(tmp_path / "run", arm="remove", pipeline=blind, init=3, train_on=data, steps=10)
    res = run_challenge(run_dir, read_imagefolder(data), max_fg=6, max_bg=6)
    row = res.runs[0]
    assert res.info["mode"]["remove"] == {"mode": "full", "ignored_steps": []}
    assert row["original_correct"] > 0
    assert row["broken"] == 0 and row["broken_share"] == 0.0
    assert row["composite_accuracy"] == pytest.approx(row["original_accuracy"])
    fast = run_challenge(run_dir, read_imagefolder(data), max_fg=6, max_bg=6, mode="fast")
    assert fast.info["mode"]["remove"]["ignored_steps"] == ["segment", "background"]  # said, not hidden


def test_on_a_run_directory_of_the_experiment_runner(tmp_path: Path) -> None:
    from bglab.experiment.config import parse_config
    from bglab.experiment.runner import run_experiment

    src = _write_data(tmp_path / "train", n=8, seed=1)
    test = _write_data(tmp_path / "test", n=3, seed=2)
    cfg = parse_config({
        "name": "tiny", "seeds": [0, 1], "threads": 1, "input": {"size": S, "channels": 1},
        "sources": {"pets": {"path": str(src)}},
        "protocols": {"p": {"split": {"pets": [0.75, 0.25, 0.0]}, "test_sets": {"val": "pets/val"}}},
        "arms": {"original": [], "masked": [{"segment": {"backend": "mask-files", "options": {"masks": str(src)}}},
                                            {"background": {"mode": "remove"}}]},
        "baseline": "original",
        "model": MODEL, "train": {"epochs": 1, "batch_size": 8, "lr": 0.003, "eval_every": 1},
    })
    run_experiment(cfg, tmp_path / "run", report=False)
    res = run_challenge(tmp_path / "run", read_imagefolder(test), max_fg=None, max_bg=None)
    assert {r["run"] for r in res.runs} == {"p__original__base__s0", "p__original__base__s1"}  # the baseline arm
    assert res.groups[0]["n_seeds"] == 2 and res.info["n_fg"] == 9
    for r in res.runs:
        p = res.predictions[r["run"]]
        assert p["composites"].shape == (9, 9) and (p["composites"] >= 0).all()
        assert r["composite_accuracy"] == pytest.approx((p["composites"] == np.repeat([0, 1, 2], 3)[:, None]).mean())
    masked = run_challenge(tmp_path / "run", read_imagefolder(test), arm="masked", max_fg=4, max_bg=4)
    assert masked.info["mode"]["masked"]["mode"] == "full" and {r["arm"] for r in masked.runs} == {"masked"}
    # --test-set: exactly the run's held-out images, never its training images
    from bglab.experiment.challenge import ChallengeError, held_out

    everything = read_imagefolder(src)
    val = held_out(tmp_path / "run", everything, "val")
    keys = {str(k) for k in np.load(next((tmp_path / "run" / "predictions").glob("*/val__clean.npz")))["keys"]}
    assert 0 < len(val) < len(everything) and len(val) == len(keys)
    assert {(s.label, s.path.name) for s in val} == {tuple(k.split("/")[-2:]) for k in keys}
    with pytest.raises(ChallengeError, match="test sets found: val"):
        held_out(tmp_path / "run", everything, "nope")
    with pytest.raises(ChallengeError, match="none of the images"):  # the training images only
        held_out(tmp_path / "run", [s for s in everything if s not in val], "val")


def test_score_predictions_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    po = np.array([0, 1, 1, 1])  # foreground 1 is wrong on its own image: not counted as breakable
    p = np.array([[0, 0, 0], [1, 1, 1], [1, 0, -1], [1, 1, 1]])  # -1: composite not made
    sc = score_predictions(y, po, p, ["a", "b"])
    assert sc["original_correct"] == 3 and sc["broken"] == 1 and sc["broken_share"] == pytest.approx(1 / 3)
    assert sc["n_composites"] == 11 and sc["composite_accuracy"] == pytest.approx(7 / 11)
    assert sc["per_class"]["a"]["broken_share"] == 0.0 and sc["per_class"]["b"]["broken_share"] == 0.5
    assert sc["flipping_backgrounds"] == [0, 3, 1, 0]


def test_seeds_give_a_confidence_interval_and_subsamples_are_seeded(data: Path, tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "run", seeds=(0, 1, 2))
    a = run_challenge(run_dir, read_imagefolder(data), max_fg=5, max_bg=4, seed=7)
    b = run_challenge(run_dir, read_imagefolder(data), max_fg=5, max_bg=4, seed=7)
    assert [it.key for it in a.foregrounds] == [it.key for it in b.foregrounds]
    assert len(a.runs) == 3 and a.groups[0]["n_seeds"] == 3
    ca = a.groups[0]["composite_accuracy"]
    assert ca["lo"] <= ca["mean"] <= ca["hi"]
    vals = [r["composite_accuracy"] for r in a.runs]
    assert ca["mean"] == pytest.approx(np.mean(vals))


def test_bad_files_are_recorded_and_the_rest_goes_on(data: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "bad"
    shutil.copytree(data, d)
    (d / "cat" / "images" / "broken.png").write_bytes(b"not a png")
    write_image(d / "dog" / "images" / "nomask.png", np.zeros((S, S, 3), np.uint8))  # no mask file
    write_image(d / "fox" / "images" / "empty.png", np.zeros((S, S, 3), np.uint8))
    write_image(d / "fox" / "masks" / "empty.png", np.zeros((S, S), np.uint8))  # no foreground
    run_dir = _write_run(tmp_path / "run")
    res = run_challenge(run_dir, read_imagefolder(d), max_fg=None, max_bg=None)
    assert len(res.foregrounds) == 12
    assert [Path(f["path"]).name for f in res.failed] == ["broken.png"]
    reasons = {Path(s["path"]).name: s["reason"] for s in res.skipped}
    assert "no mask file" in reasons["nomask.png"] and "empty mask" in reasons["empty.png"]
    out = tmp_path / "out"
    assert main(["challenge", str(run_dir), str(d), "--out", str(out), "--json"]) == 1  # files failed
    doc = json.loads((out / "challenge.json").read_text())
    assert doc["n_fg"] == 12 and len(doc["failed"]) == 1


def test_refusals(data: Path, tmp_path: Path) -> None:
    unfinished = _write_run(tmp_path / "unfinished", done=False)
    with pytest.raises(ChallengeError, match="no finished runs"):
        run_challenge(unfinished, read_imagefolder(data))
    with pytest.raises(ChallengeError, match="no checkpoints"):
        run_challenge(tmp_path, read_imagefolder(data))
    run_dir = _write_run(tmp_path / "run")
    with pytest.raises(ChallengeError, match="no finished run of arm 'crop'"):
        run_challenge(run_dir, read_imagefolder(data), arm="crop")
    with pytest.raises(ChallengeError, match="no masks"):
        run_challenge(run_dir, read_imagefolder(data, mask_dir=None))
    with pytest.raises(ChallengeError, match="unknown mode"):
        run_challenge(run_dir, read_imagefolder(data), mode="quick")


def test_cli_json_out_and_exit_codes(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = _write_run(tmp_path / "run", init=3, train_on=data, steps=10)
    out = tmp_path / "out"
    assert main(["challenge", str(run_dir), str(data), "--max-fg", "6", "--max-bg", "6", "--json",
                 "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_fg"] == 6 and doc["runs"][0]["run"] == "p__original__base__s0"
    assert doc["timing"]["predictions"] == 36
    assert json.loads((out / "challenge.json").read_text())["runs"][0]["broken"] == doc["runs"][0]["broken"]
    if doc["runs"][0]["broken"]:
        assert (out / "challenge_broken.png").stat().st_size > 0
    assert main(["challenge", str(run_dir), str(data), "--max-fg", "3", "--max-bg", "3"]) == 0
    assert "adversarial backgrounds" in capsys.readouterr().out
    assert main(["challenge", str(tmp_path / "nowhere"), str(data)]) == 2
    assert main(["challenge", str(run_dir), str(data), "--arm", "nope"]) == 2
    assert main(["challenge", str(run_dir), str(data), "--backend", "no-such-backend"]) == 2


def test_chroma_backend_makes_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "screen"
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(2):
            img, m = _picture(c, rng)
            img[~m] = (40, 180, 60)  # green screen
            write_image(root / name / f"{name}_{i}.png", np.kron(img, np.ones((4, 4, 1), np.uint8)))
    run_dir = _write_run(tmp_path / "run")
    assert main(["challenge", str(run_dir), str(root), "--json"]) == 2  # no masks and no --backend
    from bglab.foreground import create

    res = run_challenge(run_dir, read_imagefolder(root, mask_dir=None), segmenter=create("chroma", kind="segmenter"))
    assert len(res.foregrounds) == 6 and res.runs[0]["n_composites"] == 36


def test_real_pets3_masks(shared_data: Path, tmp_path: Path) -> None:
    pets = shared_data / "pets3"
    if not pets.is_dir():
        pytest.skip("pets3 missing")
    from bglab.experiment.checkpoints import save_checkpoint
    from bglab.train.classifiers import build_classifier

    classes = sorted(p.name for p in pets.iterdir() if p.is_dir())
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    model = build_classifier("cnn", len(classes), 1, 32, widths=[4, 8], hidden=8, dropout=0.0)
    state = {"run": "r", "protocol": "p", "arm": "original", "variant": "base", "seed": 0, "classes": classes,
             "size": 32, "channels": 1, "model": MODEL, "done": True,
             "pipeline": {"seed": 0, "steps": [{"resize": {"size": 32}}, "grey"]}}
    save_checkpoint(tmp_path / "run" / "checkpoints" / "r.safetensors", model, None, state)
    res = run_challenge(tmp_path / "run", read_imagefolder(pets), max_fg=4, max_bg=3)
    assert len(res.foregrounds) == 4 and len(res.backgrounds) == 3 and not res.failed
    assert res.runs[0]["n_composites"] == 12
    for it in res.foregrounds:  # Only-BG-T: nothing of the object's box is left as it was
        box = Box.from_mask(it.mask)
        x0, y0, x1, y1 = (int(v) for v in (box.x0, box.y0, box.x1, box.y1))
        assert not np.array_equal(it.background[y0:y1, x0:x1], it.image[y0:y1, x0:x1])
