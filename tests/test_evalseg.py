"""eval-seg: stem pairing, evaluate_segmenter, the CLI (table, --json, --sheet, failures), bglab backends."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from bglab.cli import backends as backends_cmd
from bglab.cli import evalseg
from bglab.foreground.evaluate import EvalFailure, EvalItem, evaluate_segmenter, pair_by_stem
from bglab.io.files import read_image, read_mask


def _app() -> typer.Typer:
    app = typer.Typer()
    evalseg.register(app)
    backends_cmd.register(app)
    return app


@pytest.fixture(scope="module")
def hands_wild(shared_data: Path) -> Path:
    root = shared_data / "hands_wild"
    if not (root / "images").is_dir():
        pytest.skip(f"shared data missing: {root}")
    return root


def test_pair_by_stem_reports_unmatched() -> None:
    images = [Path("i/b.jpg"), Path("i/a.jpg"), Path("i/c.png")]
    masks = [Path("m/a.png"), Path("m/b.png"), Path("m/z.png"), Path("m2/a.png")]
    pairs, lonely_images, lonely_masks = pair_by_stem(images, masks)
    assert pairs == [(Path("i/a.jpg"), Path("m/a.png")), (Path("i/b.jpg"), Path("m/b.png"))]
    assert lonely_images == [Path("i/c.png")]
    assert lonely_masks == [Path("m/z.png"), Path("m2/a.png")]


class _Constant:
    """A segmenter predicting one fixed fraction of the image (top half) as foreground."""

    name = "top-half"

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        out = np.zeros(image.shape[:2], np.float32)
        out[: image.shape[0] // 2] = 1.0
        return out


def test_evaluate_segmenter_scores_and_records_failures(hands_wild: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    pairs = [(hands_wild / "images" / f"{s}.jpg", hands_wild / "masks" / f"{s}.png") for s in ("01", "02", "21")]
    pairs.insert(1, (bad, hands_wild / "masks" / "03.png"))
    pairs.append((hands_wild / "images" / "04.jpg", hands_wild / "masks" / "21.png"))  # 512x288 vs 384x216
    seen: list[EvalItem | EvalFailure] = []
    res = evaluate_segmenter(_Constant(), pairs, progress=seen.append, keep_worst=2)
    assert len(seen) == 5 and len(res.items) == 3
    assert [f.image.name for f in res.failures] == ["broken.jpg", "04.jpg"]
    assert "21.png" in res.failures[1].error and "04.jpg" in res.failures[1].error
    # hand-check one score: top half vs the truth
    truth = read_mask(pairs[0][1]) > 127
    pred = np.zeros_like(truth)
    pred[: truth.shape[0] // 2] = True
    want = (pred & truth).sum() / (pred | truth).sum()
    assert res.items[0].scores.iou == pytest.approx(want)
    assert len(res.worst) == 2 and res.worst[0].item.scores.iou <= res.worst[1].item.scores.iou
    assert min(i.scores.iou for i in res.items) == res.worst[0].item.scores.iou
    assert res.summary.n == 3 and res.predict_ms >= 0 and res.total_ms >= res.predict_ms
    json.dumps(res.as_dict())  # strict JSON


def test_cli_mask_files_is_perfect(hands_wild: Path) -> None:
    result = CliRunner().invoke(_app(), [
        "eval-seg", "--images", str(hands_wild / "images"), "--masks", str(hands_wild / "masks"),
        "--backend", "mask-files", "--option", f"masks={hands_wild / 'masks'}", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing else on stdout
    assert data["n"] == 30 and data["failed"] == 0 and data["backend"] == "mask-files"
    assert data["summary"]["iou"] == 1.0 and data["summary"]["pooled_iou"] == 1.0
    assert data["summary"]["f1"] == 1.0 and data["summary"]["iou_std"] == 0.0
    assert data["unmatched_images"] == [] and data["unmatched_masks"] == []
    assert len(data["per_image"]) == 30


def test_cli_grabcut_table_and_sheet(hands_wild: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "worst.png"
    result = CliRunner().invoke(_app(), [
        "eval-seg", "--images", str(hands_wild / "images"), "--masks", str(hands_wild / "masks"),
        "--backend", "grabcut", "--option", "max_side=256", "--limit", "3",
        "--sheet", str(sheet), "--sheet-rows", "2"])
    assert result.exit_code == 0, result.output
    assert "IoU (mean per image)" in result.stdout and "ms / image (predict)" in result.stdout
    assert "grabcut" in result.stdout and "(3 images)" in result.stdout
    img = read_image(sheet)
    assert img.shape[0] > 2 * 200 and img.shape[1] >= 3 * 200  # two rows of image | truth | prediction


def test_cli_grabcut_json(hands_wild: Path) -> None:
    result = CliRunner().invoke(_app(), [
        "eval-seg", "--images", str(hands_wild / "images"), "--masks", str(hands_wild / "masks"),
        "--backend", "grabcut", "-O", "max_side=256", "--limit", "3", "--json"])  # -O: short for --option
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 3 and data["options"] == {"max_side": "256"}
    assert 0.0 <= data["summary"]["iou"] <= 1.0 and data["predict_ms"] > 0
    assert [Path(r["image"]).name for r in data["per_image"]] == ["01.jpg", "02.jpg", "03.jpg"]


def test_cli_bad_files_exit_1_and_unmatched(hands_wild: Path, tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for s in ("21", "22"):
        shutil.copy(hands_wild / "images" / f"{s}.jpg", images)
        shutil.copy(hands_wild / "masks" / f"{s}.png", masks)
    (images / "23.jpg").write_bytes(b"")  # empty file
    shutil.copy(hands_wild / "masks" / "23.png", masks)
    shutil.copy(hands_wild / "masks" / "24.png", masks)  # no image
    result = CliRunner().invoke(_app(), [
        "eval-seg", "--images", str(images), "--masks", str(masks),
        "--backend", "mask-files", "--option", f"masks={masks}", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["n"] == 2 and data["failed"] == 1 and data["failures"][0]["image"].endswith("23.jpg")
    assert [Path(p).name for p in data["unmatched_masks"]] == ["24.png"]
    assert "1 of 3 pair(s) failed" in result.stderr


def test_backends_command_lists_all() -> None:
    result = CliRunner().invoke(_app(), ["backends", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"unet", "grabcut", "mask-files", "mask-box", "full", "rembg"} <= set(rows)
    assert rows["grabcut"]["available"] is True and rows["full"]["kind"] == "locator"
    assert rows["unet-effnet"]["default"] is True and rows["unet"]["default"] is False
    if not rows["rembg"]["available"]:
        assert "bglab[rembg]" in rows["rembg"]["reason"]
    table = CliRunner().invoke(_app(), ["backends"])
    assert table.exit_code == 0 and "mask-files" in table.stdout


def test_cli_unknown_option_is_a_clear_error(hands_wild: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt backend option names the accepted ones (not an 'unexpected error: TypeError'), exit 2."""
    from bglab.cli.app import main

    code = main(["eval-seg", "--images", str(hands_wild / "images"), "--masks", str(hands_wild / "masks"),
                 "--backend", "unet", "-O", "sise=256", "--limit", "1"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "bad options for backend 'unet'" in err and "takes: model, size" in err and "TypeError" not in err
