"""The configs shipped inside the package (``bglab/configs``) and ``bglab init``'s starting configs.

A shipped config is named by its path under ``bglab/configs`` without ``.yaml`` (``rps-reference``,
``looks/rgb``); :func:`find_config` accepts such a name wherever a config path is accepted. Its relative paths
are relative to the shipped file (the lab's data beside a checkout); :func:`init_config` writes a copy with them
made absolute, or, without ``--from``, a small commented config that runs as is on the embedded sample data.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from bglab.errors import ConfigError

__all__ = ["KINDS", "config_kind", "find_config", "init_config", "shipped_configs"]

KINDS = ("experiment", "preprocess", "variants")

# keys whose value is a file or folder, relative to the config file (experiment sources, arm steps, extends)
_PATH_KEYS = ("path", "from", "image", "masks", "model", "model_path", "boxes", "extends")
_PATH_VALUE = re.compile(r"(?P<key>\b(?:" + "|".join(_PATH_KEYS) + r"):\s*)(?P<value>[^\s,{}\[\]#'\"]+)")


def configs_dir() -> Path:
    """Where the shipped configs are installed (inside the package, so a wheel has them)."""
    return Path(str(resources.files("bglab") / "configs"))


def shipped_configs() -> dict[str, Path]:
    """Every shipped config by name (``rps-reference``, ``looks/rgb``), sorted."""
    root = configs_dir()
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def find_config(name_or_path: str | Path) -> Path:
    """An existing file as it is, else the shipped config of that name (``.yaml`` optional); a ConfigError
    naming the shipped configs otherwise."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    shipped = shipped_configs()
    name = str(name_or_path).removesuffix(".yaml").removeprefix("configs/").removeprefix("bglab/configs/")
    if name in shipped:
        return shipped[name]
    raise ConfigError("no such config file, and no shipped config of that name", path=p,
                      hint=f"give a config file, or one of: {', '.join(shipped)} (bglab init writes a new one)")


def config_kind(path: Path) -> str:
    """``preprocess`` for a pipeline config (a ``steps`` list), ``variants`` for a variants config (``kinds``),
    else ``experiment``."""
    from bglab.io.configfile import read_config_file

    raw = read_config_file(path)
    return "preprocess" if "steps" in raw else "variants" if "kinds" in raw else "experiment"


def _absolute_paths(text: str, base: Path) -> str:
    """The config text with every relative file / folder value made absolute against ``base`` (comments kept)."""

    def fix(m: re.Match[str]) -> str:
        value = m.group("value")
        if value in ("true", "false", "null", "~") or Path(value).is_absolute() or "/" not in value \
                and not value.endswith((".yaml", ".yml", ".onnx", ".safetensors", ".csv", ".json", ".xml")):
            return m.group(0)
        return m.group("key") + str((base / value).resolve())

    return "\n".join(line if line.lstrip().startswith("#") else _PATH_VALUE.sub(fix, line)
                     for line in text.split("\n"))


def init_config(kind: str, *, source: str | None = None, data: Path | None = None) -> str:
    """The text of a starting config of ``kind`` (experiment | preprocess | variants).

    ``source``: a shipped config name (or a config file) to start from, copied with its comments and its
    relative paths made absolute. Otherwise a small commented template: an experiment on ``data`` (an
    ImageFolder: one sub-folder per class), by default the embedded sample hands, so it runs as is.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}", hint=f"choose one of: {', '.join(KINDS)}")
    if source is not None:
        path = find_config(source)
        found = config_kind(path)
        if found != kind:
            raise ConfigError(f"{source!r} is a {found} config, not a {kind} config", path=path,
                              hint=f"bglab init {found} --from {source}")
        header = (f"# Started from {path.name} (bglab init {kind} --from {source}); relative paths were made "
                  "absolute.\n")
        return header + _absolute_paths(path.read_text(encoding="utf-8"), path.resolve().parent)
    if kind == "experiment":
        return _experiment_template(data)
    if kind == "preprocess":
        return _PREPROCESS_TEMPLATE
    return _VARIANTS_TEMPLATE


def _experiment_template(data: Path | None) -> str:
    if data is None:
        from bglab.experiment.demo import demo_data_dir

        demo = demo_data_dir()
        sources = (f"  photos: {{path: {demo / 'train'}}}        # the embedded sample hands (40 per class)\n"
                   f"  held-out: {{path: {demo / 'test'}}}       # 20 more per class, never trained on\n")
        protocol = ("    split: {photos: [0.85, 0.15, 0.0]}     # train / validation / test fractions\n"
                    "    test_sets: {held-out: held-out}\n")
    else:
        sources = f"  photos: {{path: {Path(data).resolve()}}}   # an ImageFolder: one sub-folder per class\n"
        protocol = ("    split: {photos: [0.7, 0.15, 0.15]}     # train / validation / test fractions\n"
                    "    test_sets: {photos: photos/test}\n")
    return _EXPERIMENT_TEMPLATE.format(sources=sources, protocol=protocol)


_EXPERIMENT_TEMPLATE = """\
# A bglab experiment: does changing the background in preprocessing change what a classifier learns?
# Run it:      bglab experiment THIS.yaml --quick     (minutes: the quick: profile at the end)
#              bglab experiment THIS.yaml             (the full run: 3 seeds)
# Read it:     work/experiments/<name>/report.html    (the report: accuracy per arm and test set, verdicts)
# Every key is described in docs/ (experiments) and in bglab/configs/rps-reference.yaml, a complete study.
name: my-experiment
seeds: [0, 1, 2]          # each arm is trained once per seed; intervals are over seeds
threads: 1                # torch threads per training run
input: {{size: 32, channels: 1}}   # every image is resized (padded) to size x size; channels 1 = grey, 3 = RGB

sources:                  # ImageFolder folders (one sub-folder per class) or CSV manifests; paths relative
{sources}                          # frames of one video? add group: '^(.+)_frame' (a regex on file names) so
                          # that no split puts frames of one video on both sides (docs: "Splits")

protocols:                # how sources are split and which test sets are scored
  main:
{protocol}
arms:                     # the preprocessing compared: bglab pipeline steps (see bglab init preprocess)
  original: []            # the photo as it is (only resized)
  remove:                 # the background removed (bglab's hand U-Net; use u2netp for pets / objects)
    - {{segment: {{backend: unet-effnet}}}}
    - {{background: {{mode: remove, color: black}}}}

model: {{name: cnn, widths: [16, 32], hidden: 64, dropout: 0.5, batchnorm: false}}
train: {{epochs: 20, batch_size: 16, lr: 0.001, optimizer: adam, eval_every: 5}}
evaluate: {{distortions: {{}}}}
studies:
  background: {{protocols: [main], arms: [original, remove], variants: [base]}}

quick:                    # --quick: deep-merged over the above (a smoke run)
  seeds: [0]
  train: {{epochs: 2, eval_every: 1}}
"""

_PREPROCESS_TEMPLATE = """\
# A bglab preprocessing pipeline: steps run in order on every image.
# Run it:      bglab preprocess photos/ out/ --config THIS.yaml
# Check it:    bglab preprocess photos/ out/ --config THIS.yaml --show-config   (every default written out)
# The shipped reference pipeline: bglab init preprocess --from preprocess-reference
version: 1
seed: 0                    # seeds the random steps (dropout, noise) per sample
steps:
  - segment: {backend: unet-effnet, threshold: 0.5, refine: true}   # `bglab backends` (u2netp: pets / objects)
  - background: {mode: color, color: white}                  # remove | color | blur | swap | keep
  - resize: {size: 128, pad_color: white}                    # keeps the aspect ratio, pads to size x size
output: {format: png}
"""

_VARIANTS_TEMPLATE = """\
# Background variants of a data set (docs/variants.md): every image's foreground and background recombined.
# Run it:      bglab variants photos/ out/variants --config THIS.yaml
# Flags given on the command line win over these values.
kinds: [original, only-fg, no-fg, mixed-rand, bg-color]   # or all; bg-region=1.5 for a region around the box
backend: unet-effnet      # the segmenter for the masks; null = the source's own <class>/masks files
options: {}               # backend options (-O key=value)
locator: null             # a locator for the foreground box; null = the mask's box
seed: 0                   # Mixed-* partners and bg-color colours
size: null                # resize-pad every output to size x size; null = keep
color: null               # bg-color colour (#rrggbb, r,g,b, name); null = a seeded random one per image
blur: 15.0                # bg-blur strength (Gaussian sigma, px)
on_suspect: keep          # a backend mask that fails QC: keep | skip | fail
workers: 1                # processes
"""
