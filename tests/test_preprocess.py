"""``bglab preprocess`` over data sets: layout, manifest, summary, bad files, resume, SIGKILL, determinism."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bglab.batch.engine import Journal
from bglab.errors import ConfigError, DatasetError
from bglab.io.files import read_image, write_image
from bglab.pipeline import Pipeline
from bglab.pipeline.preprocess import preprocess, read_output_manifest
from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[1]
CHROMA_CFG = {"steps": [{"locate": {"backend": "mask-box"}}, {"segment": {"backend": "chroma"}},
                        {"background": {"mode": "remove"}}, {"crop": {"square": True}},
                        {"resize": {"size": 48}}, "grey"]}


def webcam_subset(dst: Path, per_class: int, *, size: tuple[int, int] | None = None) -> Path:
    """Copy the first ``per_class`` webcam images of each class into an ImageFolder tree (optionally shrunk)."""
    src = shared_path("rps", "webcam")
    for cls in ("paper", "rock", "scissors"):
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / cls).glob("*.png"))[:per_class]:
            if size is None:
                shutil.copy(f, dst / cls / f.name)
            else:
                import cv2

                write_image(dst / cls / f.name, cv2.resize(read_image(f), size, interpolation=cv2.INTER_AREA))
    return dst


def journal_counts(dst: Path) -> Counter:
    return Counter(r["key"] for r in Journal(dst).records())


def output_files(dst: Path) -> set[str]:
    return {p.relative_to(dst).as_posix() for p in dst.rglob("*.png") if ".journal" not in p.parts}


def test_layout_manifest_summary_and_a_bad_file(tmp_path):
    src = webcam_subset(tmp_path / "webcam", 3)
    (src / "rock" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    dst = tmp_path / "out"
    rep = preprocess([src], dst, CHROMA_CFG)
    assert rep.exit_code == 1 and rep.count("failed") == 1 and rep.count("done") == 9
    assert "broken.png" in rep.failed[0]["error"]
    assert output_files(dst) == {r["output"] for r in rep.records if r["output"]}
    for cls in ("paper", "rock", "scissors"):
        outs = sorted((dst / "webcam" / cls).glob("*.png"))
        assert len(outs) == 3
        assert read_image(outs[0]).shape == (48, 48, 3)  # grey PNG, read back as RGB
    df = read_output_manifest(dst)
    assert len(df) == 10 and set(df["status"]) == {"done", "failed"}
    for col in ("input", "output", "origin", "label", "status", "found", "box_x0", "coverage", "t_read",
                "t_locate", "t_segment", "t_grey", "t_write", "error"):
        assert col in df.columns
    ok = df[df["status"] == "done"]
    assert ok["found"].all() and (ok["coverage"] > 0.05).all() and (ok["box_x1"] == 300).all()
    assert (df[df["status"] == "failed"]["output"] == "").all()
    summary = (dst / "summary.csv").read_text().splitlines()
    assert summary[0] == "origin,label,images,found,not_found,suspect,skipped,failed,found_pct"
    assert "webcam,rock,4,3,0,0,0,1,100.0" in summary and summary[-1] == "all,all,10,9,0,0,0,1,100.0"
    assert Pipeline.from_config(dst / "pipeline.yaml").to_config() == Pipeline.from_config(CHROMA_CFG).to_config()


def test_several_sources_keep_their_origin_and_csv_manifests(tmp_path):
    a = webcam_subset(tmp_path / "a" / "webcam", 1, size=(60, 40))
    b = tmp_path / "studio"
    for cls in ("rock", "paper"):
        (b / cls).mkdir(parents=True)
        img = np.zeros((40, 60, 3), np.uint8)
        img[:] = (30, 190, 70)
        img[10:30, 20:40] = (200, 150, 120)
        write_image(b / cls / "x.png", img)
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,label,origin\n{b / 'rock' / 'x.png'},rock,phone\n")
    rep = preprocess([a, b, f"lab={b}", manifest], tmp_path / "out", CHROMA_CFG)
    assert rep.exit_code == 0
    assert {r["origin"] for r in rep.records} == {"webcam", "studio"}  # the same files listed again are merged
    assert (tmp_path / "out" / "studio" / "rock" / "x.png").is_file()
    rep2 = preprocess([manifest], tmp_path / "out2", CHROMA_CFG)
    assert [r["output"] for r in rep2.records] == ["phone/rock/x.png"]
    with pytest.raises(DatasetError, match="origin name"):
        preprocess([a, f"webcam={b}"], tmp_path / "out3", CHROMA_CFG)


def test_skip_policy_and_exit_code(tmp_path, monkeypatch):
    from tests.test_pipeline import make_none_locator  # noqa: F401 - registered below
    from bglab.foreground import registry

    monkeypatch.setitem(registry._BACKENDS, "test-none", registry.BackendInfo(
        "test-none", "locator", "tests.test_pipeline", "make_none_locator", "finds nothing"))
    src = webcam_subset(tmp_path / "webcam", 1, size=(60, 40))
    cfg = {"steps": [{"locate": {"backend": "test-none", "on_missing": "skip"}}, {"resize": {"size": 16}}]}
    rep = preprocess([src], tmp_path / "out", cfg)
    assert rep.exit_code == 0 and rep.count("skipped") == 3 and not output_files(tmp_path / "out")
    assert rep.summary[-1] == {"origin": "all", "label": "all", "images": 3, "found": 0, "not_found": 3,
                               "suspect": 0, "skipped": 3, "failed": 0, "found_pct": 0.0}
    again = preprocess([src], tmp_path / "out", cfg)  # skipped samples are finished: nothing redone
    assert again.processed == 0 and again.resumed == 3


def test_resume_skips_finished_samples_and_refuses_another_config(tmp_path):
    src = webcam_subset(tmp_path / "webcam", 2, size=(90, 60))
    dst = tmp_path / "out"
    first = preprocess([src], dst, CHROMA_CFG)
    assert first.processed == 6 and first.resumed == 0
    victim = dst / first.records[0]["output"]
    victim.unlink()  # an output lost after its journal line: redone
    (dst / "webcam" / "rock" / ".x.png.bglab-4999999-abc.tmp").write_bytes(b"partial")  # a dead writer
    second = preprocess([src], dst, CHROMA_CFG)
    assert second.processed == 1 and second.resumed == 5 and victim.is_file()
    assert not list(dst.rglob("*.tmp"))
    assert max(journal_counts(dst).values()) == 2 and sum(journal_counts(dst).values()) == 7
    assert len(read_output_manifest(dst)) == 6
    other = {"steps": [{"resize": {"size": 8}}]}
    with pytest.raises(ConfigError, match="different pipeline"):
        preprocess([src], dst, other)
    third = preprocess([src], dst, other, overwrite=True)
    assert third.processed == 6 and read_image(victim).shape == (8, 8, 3)
    from bglab.pipeline.preprocess import _lock, _unlock

    held = _lock(dst)  # another run writing to the same folder
    try:
        with pytest.raises(ConfigError, match="another bglab preprocess"):
            preprocess([src], dst, other)
    finally:
        _unlock(held)
    assert preprocess([src], dst, other).resumed == 6


def test_one_and_two_workers_give_identical_bytes(tmp_path):
    src = webcam_subset(tmp_path / "webcam", 7, size=(150, 100))
    cfg = {"seed": 11, "steps": [*CHROMA_CFG["steps"], {"distort": {"noise": 6, "dropout": 0.02}}]}
    one = preprocess([src], tmp_path / "one", cfg, workers=1, chunk=3)
    two = preprocess([src], tmp_path / "two", cfg, workers=2, chunk=2)
    assert one.exit_code == two.exit_code == 0
    files = sorted(output_files(tmp_path / "one"))
    assert len(files) == 21 and files == sorted(output_files(tmp_path / "two"))
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    # and equal to the pipeline run in memory
    rec = one.records[0]
    mem = Pipeline.from_config(cfg)(read_image(rec["input"]), source=rec["input"], key=rec["key"])
    assert np.array_equal(read_image(tmp_path / "one" / rec["output"])[..., 0], mem.image)


def test_sigkill_mid_run_then_resume(tmp_path):
    src = webcam_subset(tmp_path / "webcam", 20, size=(150, 100))  # 60 images
    dst = tmp_path / "out"
    cmd = [sys.executable, "-m", "bglab.cli.app", "preprocess", str(src), str(dst), "--workers", "2", "--chunk", "2",
           "--backend", "chroma", "--locator", "mask-box", "--background", "blur", "--crop", "--size", "64"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        n = sum(journal_counts(dst).values()) if (dst / ".journal").is_dir() else 0
        if n >= 8:
            os.killpg(proc.pid, signal.SIGKILL)  # the main process and its workers, at once
            killed_at = n
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert killed_at is not None and killed_at < 60, "the run finished before it could be killed"
    assert not (dst / "manifest.parquet").exists()  # killed before the end
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done" in rerun.stdout
    counts = journal_counts(dst)
    assert len(counts) == 60 and set(counts.values()) == {1}  # nothing journalled twice
    assert not [p for p in dst.rglob("*") if p.name.endswith(".tmp")]
    outs = output_files(dst)
    df = read_output_manifest(dst)
    assert len(df) == 60 and set(df["status"]) == {"done"}
    assert set(df["output"]) == outs
    for f in outs:
        assert read_image(dst / f).shape == (64, 64, 3)


def test_cli_end_to_end(tmp_path, capsys):
    from bglab.cli.app import main

    src = webcam_subset(tmp_path / "webcam", 2, size=(90, 60))
    cfg = tmp_path / "p.yaml"
    cfg.write_text("steps:\n  - segment: {backend: chroma}\n  - background: {mode: colour, color: white}\n")
    rc = main(["preprocess", str(src), str(tmp_path / "out"), "--config", str(cfg), "--crop", "--size", "32",
               "--grey", "--noise", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "found" in out and "6 processed" in out
    resolved = Pipeline.from_config(tmp_path / "out" / "pipeline.yaml")
    assert [s.name for s in resolved.steps] == ["segment", "background", "crop", "resize", "grey", "distort"]
    assert len(output_files(tmp_path / "out")) == 6
    assert main(["preprocess", str(src), str(tmp_path / "o2"), "--locator", "nope"]) == 2
    assert "unknown locator 'nope'" in capsys.readouterr().err
    assert main(["preprocess", str(tmp_path / "missing"), str(tmp_path / "o3"), "--size", "8"]) == 2
    assert main(["preprocess", "x", "y", "--show-config", "--size", "8", "--grey"]) == 0
    assert "resize" in capsys.readouterr().out


def test_journal_ignores_a_torn_last_line(tmp_path):
    j = Journal(tmp_path)
    j.open()
    j.append([{"key": "a", "status": "done"}])
    j.close()
    f = j.files()[0]
    with open(f, "a") as fh:
        fh.write('{"key": "b", "sta')
    assert [r["key"] for r in j.records()] == ["a"]
    assert json.loads(f.read_text().splitlines()[0])["key"] == "a"


@pytest.mark.slow
def test_ray_engine_matches_local(tmp_path):
    pytest.importorskip("ray")
    src = webcam_subset(tmp_path / "webcam", 3, size=(90, 60))
    cfg = {"seed": 2, "steps": [*CHROMA_CFG["steps"], {"distort": {"noise": 5}}]}
    local = preprocess([src], tmp_path / "local", cfg, workers=1)
    ray_rep = preprocess([src], tmp_path / "ray", cfg, workers=2, chunk=2, engine="ray")
    assert local.exit_code == ray_rep.exit_code == 0 and ray_rep.processed == 9
    files = sorted(output_files(tmp_path / "local"))
    assert files == sorted(output_files(tmp_path / "ray")) and len(files) == 9
    for f in files:
        assert (tmp_path / "local" / f).read_bytes() == (tmp_path / "ray" / f).read_bytes()
    assert len(read_output_manifest(tmp_path / "ray")) == 9


def test_ray_engine_without_ray_says_how_to_get_it(tmp_path, monkeypatch):
    import builtins

    from bglab.errors import BackendError

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    src = webcam_subset(tmp_path / "webcam", 1, size=(60, 40))
    with pytest.raises(BackendError, match=r"bglab\[ray\]"):
        preprocess([src], tmp_path / "out", CHROMA_CFG, engine="ray")


@pytest.mark.slow
def test_unet_outputs_identical_for_one_and_two_workers(tmp_path):
    from bglab.errors import BackendError
    from bglab.foreground import create

    try:
        create("unet", kind="segmenter")
    except BackendError as exc:
        pytest.skip(f"U-Net not available: {exc}")
    cfg = {"seed": 4, "steps": [{"locate": {"backend": "mask-box"}}, {"segment": {"backend": "unet"}},
                                {"background": {"mode": "remove"}}, {"crop": {}}, {"resize": {"size": 64}}, "grey",
                                {"distort": {"noise": 3}}]}
    src = shared_path("rps", "webcam")
    one = preprocess([src], tmp_path / "one", cfg, workers=1, limit=20)
    two = preprocess([src], tmp_path / "two", cfg, workers=2, limit=20, chunk=4)
    assert one.exit_code == two.exit_code == 0
    files = sorted(output_files(tmp_path / "one"))
    assert len(files) == 20
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_pets3_with_ground_truth_masks(tmp_path):
    import csv

    root = shared_path("pets3")
    truth = {r["stem"]: float(r["fg_frac"]) for r in csv.DictReader(open(root / "manifest.csv"))}
    cfg = {"steps": [{"segment": {"backend": "mask-files", "options": {"masks": str(root)}, "refine": False}},
                     {"background": {"mode": "colour", "color": "white"}}, {"crop": {"to": "mask"}},
                     {"resize": {"size": 40}}]}
    rep = preprocess([root], tmp_path / "out", cfg, limit=6)
    assert rep.exit_code == 0 and len(rep.records) == 6
    assert {r["label"] for r in rep.records} == {"Abyssinian", "Bengal", "american_bulldog"}
    for r in rep.records:
        assert r["origin"] == "pets3" and r["output"].startswith(f"pets3/{r['label']}/")
        assert r["coverage"] == pytest.approx(truth[Path(r["input"]).stem], abs=1e-3)
        assert read_image(tmp_path / "out" / r["output"]).shape == (40, 40, 3)
