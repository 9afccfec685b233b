"""Shipped configs inside the package, found by name, and ``bglab init``'s starting configs (issue 21): every
written config is read back with the real loaders."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import numpy as np
import pytest

from bglab.background.variants import load_variants_config
from bglab.cli.app import main
from bglab.errors import ConfigError
from bglab.experiment.config import load_experiment_config
from bglab.experiment.templates import config_kind, configs_dir, find_config, init_config, shipped_configs
from bglab.io.files import write_image
from bglab.pipeline import Pipeline, load_config

REPO = Path(__file__).resolve().parents[1]


def test_configs_are_package_data_and_kept_once():
    root = configs_dir()
    assert root == REPO / "bglab" / "configs" and not (REPO / "configs").exists()
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bglab"]
    files = [p.relative_to(REPO / "bglab").as_posix() for p in root.rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), files
    names = shipped_configs()
    assert {"rps-reference", "pets3-matrix", "preprocess-reference", "looks/rgb"} <= set(names)


def test_find_config_by_name_or_path(tmp_path):
    assert find_config("rps-reference") == configs_dir() / "rps-reference.yaml"
    assert find_config("rps-reference.yaml") == configs_dir() / "rps-reference.yaml"
    assert find_config("configs/looks/rgb.yaml") == configs_dir() / "looks" / "rgb.yaml"
    own = tmp_path / "rps-reference"
    own.write_text("name: mine\n")
    assert find_config(own) == own  # an existing file wins over a shipped name
    with pytest.raises(ConfigError, match="rps-reference") as exc:
        find_config("no-such-study")
    assert "bglab init" in str(exc.value)


def test_experiment_command_names_the_shipped_configs(capsys):
    assert main(["experiment", "no-such-study"]) == 2
    err = capsys.readouterr().err
    assert "no-such-study" in err and "rps-reference" in err


def test_init_experiment_runs_on_the_sample_data_as_is(tmp_path):
    out = tmp_path / "exp.yaml"
    assert main(["init", "experiment", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("#") and "bglab experiment" in text
    for quick in (False, True):
        cfg = load_experiment_config(out, quick=quick)
        assert set(cfg.arms) == {"original", "remove"}
        assert all(s.path.is_dir() for s in cfg.sources.values())  # the embedded sample data
    assert len(load_experiment_config(out, quick=True).runs()) == 2
    assert main(["init", "experiment", "--out", str(out)]) == 2  # never replaced without --force
    assert main(["init", "experiment", "--out", str(out), "--force"]) == 0


def test_init_experiment_on_the_users_folder(tmp_path):
    data = tmp_path / "photos"
    for c in ("cat", "dog"):
        (data / c).mkdir(parents=True)
        for i in range(3):
            write_image(data / c / f"{c}{i}.png", np.full((16, 16, 3), 40 * i, np.uint8))
    out = tmp_path / "exp.yaml"
    assert main(["init", "experiment", "--data", str(data), "--out", str(out)]) == 0
    cfg = load_experiment_config(out)
    assert [s.path for s in cfg.sources.values()] == [data.resolve()]
    assert main(["init", "experiment", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x.yaml")]) == 2


@pytest.mark.parametrize("name", ["rps-reference", "pets3-matrix", "looks/rgb", "rps-swap",
                                  "rps-recipe-cosine", "rps-ensemble-lite2"])  # variants that extend one by name
def test_init_from_a_shipped_experiment_resolves_like_the_original(tmp_path, name):
    out = tmp_path / "sub" / "copy.yaml"
    out.parent.mkdir()
    assert main(["init", "experiment", "--from", name, "--out", str(out)]) == 0
    copy, orig = load_experiment_config(out), load_experiment_config(find_config(name))
    assert copy.sources == orig.sources
    assert {n: a.pipeline for n, a in copy.arms.items()} == {n: a.pipeline for n, a in orig.arms.items()}
    assert {n: a.source_dir for n, a in copy.arms.items()} == {n: a.source_dir for n, a in orig.arms.items()}
    assert [k.id for k in copy.runs()] == [k.id for k in orig.runs()]
    assert copy.variants == orig.variants


def test_init_preprocess_and_from_reference(tmp_path):
    out = tmp_path / "pre.yaml"
    assert main(["init", "preprocess", "--out", str(out)]) == 0
    pipe = Pipeline.from_config(load_config(out))
    assert [s.name for s in pipe.steps][:2] == ["segment", "background"]
    ref = tmp_path / "ref.yaml"
    assert main(["init", "preprocess", "--from", "preprocess-reference", "--out", str(ref)]) == 0
    shipped = Pipeline.from_config(find_config("preprocess-reference"))
    assert Pipeline.from_config(ref).to_config() == shipped.to_config()


def test_init_refuses_a_config_of_another_kind(capsys, tmp_path):
    assert main(["init", "preprocess", "--from", "rps-reference", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "bglab init experiment --from rps-reference" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown config kind"):
        init_config("training")


def test_init_list(capsys):
    assert main(["init", "preprocess", "--list"]) == 0
    assert capsys.readouterr().out.split() == ["preprocess-reference"]
    assert config_kind(find_config("rps-reference")) == "experiment"


def test_init_variants_runs_and_flags_win(tmp_path):
    out = tmp_path / "variants.yaml"
    assert main(["init", "variants", "--out", str(out)]) == 0
    cfg = load_variants_config(out)
    assert cfg["backend"] == "unet-effnet" and "only-fg" in cfg["kinds"]
    # a green-screen set keyed by chroma: the config gives the kinds, the flag changes the backend
    src = tmp_path / "src" / "hand"
    src.mkdir(parents=True)
    for i in range(2):
        img = np.zeros((40, 40, 3), np.uint8)
        img[:] = (20, 200, 40)
        img[10:30, 10 + i:30 + i] = (150, 90, 60)
        write_image(src / f"h{i}.png", img)
    dst = tmp_path / "dst"
    assert main(["variants", str(tmp_path / "src"), str(dst), "--config", str(out), "--backend", "chroma"]) == 0
    assert sorted(p.name for p in dst.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) == sorted(
        ["original", "only-fg", "no-fg", "mixed-rand", "bg-color"])
    dst2 = tmp_path / "dst2"
    assert main(["variants", str(tmp_path / "src"), str(dst2), "--config", str(out), "--backend", "chroma",
                 "--kinds", "only-fg"]) == 0
    assert sorted(p.name for p in dst2.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) == ["only-fg"]


def test_variants_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "v.yaml"
    bad.write_text("kinds: [only-fg, nonsense]\n")
    with pytest.raises(ConfigError, match="nonsense") as exc:
        load_variants_config(bad)
    assert str(bad) in str(exc.value)
    bad.write_text("kinds: all\nworkerz: 2\n")
    with pytest.raises(ConfigError, match="workerz"):
        load_variants_config(bad)


@pytest.mark.slow
def test_init_experiment_quick_run_end_to_end(tmp_path):
    """The template runs as is: `bglab experiment FILE --quick` finishes and writes its report."""
    out = tmp_path / "exp.yaml"
    assert main(["init", "experiment", "--out", str(out)]) == 0
    assert main(["experiment", str(out), "--quick", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report.html").is_file()


def test_run_dir_identity_compares_arms_resolved(tmp_path):
    """Moving a config (configs/ -> bglab/configs) rewrote its relative paths: the run directories made with
    the old file still resume, because arms are compared in their resolved (absolute) form."""
    from bglab.experiment.runner import _check_run_dir

    steps = {"x": {"steps": [{"segment": {"backend": "mask-files", "options": {"masks": "/data/m"}}}]}}
    old = {"name": "s", "threads": 1, "arms": {"x": [{"segment": {"options": {"masks": "../m"}}}]},
           "resolved": {"arms": steps}}
    _check_run_dir(tmp_path, old, ["x"])
    moved = {**old, "threads": 2, "arms": {"x": [{"segment": {"options": {"masks": "../../m"}}}]}}
    _check_run_dir(tmp_path, moved, ["x"])  # same experiment
    changed = {**old, "resolved": {"arms": {"x": {"steps": []}}}}
    with pytest.raises(ConfigError, match="different experiment"):
        _check_run_dir(tmp_path, changed, ["x"])
