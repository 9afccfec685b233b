"""Preprocessing pipelines: an ordered list of named steps applied to one image (or a batch) in memory.

One :class:`Pipeline` object serves the CLI (``bglab preprocess``), the Python API and
:class:`bglab.pipeline.torchdata.PipelineDataset`. It is pure of file I/O except for the backend sessions it opens
(and a ``swap`` background image, read once). Steps, in any order the data allow:

``locate``      a box from any locator backend (``mediapipe-hands``, ``mask-box``, ``full``, ...), optional
                ``fallback`` locators tried in turn, ``margin`` (fraction per side) and ``on_missing``:
                ``keep`` (go on without a box), ``skip`` (stop: no output) or ``mask-box`` (use the box of
                the pipeline's ``segment`` mask). ``backend: mask-box`` without options means the box of
                the pipeline's own segment mask (computed once and reused by the segment step).
``segment``     a soft mask from any segmenter backend, refined (largest region, holes filled) as in
                ``bglab remove``; ``input: auto|current|original`` (``auto`` = ``original`` for
                ``mask-files``, whose masks match the file, else the current, possibly cropped, image).
                A mask already made for a ``mask-box`` box is reused (cropped / resized along).
                Every mask goes through QC (:mod:`bglab.ops.qc`; ``qc:`` rule overrides, ``qc: false`` off):
                no foreground gives status ``not-found``, a broken rule ``suspect`` and then
                ``on_suspect``: ``keep`` (default; output made), ``skip`` (no output) or ``fail``.
``background``  ``remove`` (colour fill, or RGBA cut-out with ``alpha: true``), ``colour``, ``blur``,
                ``swap`` (``image:`` a file or a folder, picked per sample by seed) or ``keep``; the
                compositing is :func:`bglab.background.remove.apply_mode`, the same code as ``bglab remove``.
                ``on_empty: keep`` leaves the image unchanged when the mask found nothing (a segmenter
                that missed the object would otherwise blank the whole image); default ``apply``.
``crop``        ``to: auto|box|mask`` (auto: the located box, else the mask's box), ``margin``, ``square``;
                with nothing to crop to, the image is kept whole.
``pose``        replaces the image by a drawing of the hand's pose (:func:`bglab.ops.draw_pose`: the bones
                between a landmarker's 21 points, white on black, ``size`` pixels square), ``align``-ed
                (wrist to middle knuckle up, mirror fixed) by default: background, appearance and in-plane
                viewpoint removed, only the shape of the pose kept. ``backend`` is a locator with landmarks
                (``mediapipe-hands``); ``on_missing``: ``blank`` (a black image, default), ``keep`` or ``skip``.
                ``with_photo: true`` gives both views in one RGB image: the grey photo (letterboxed), the
                drawing (black without a hand) and an empty channel (use 3 input channels, no grey step).
                Only ``resize``, ``grey`` and ``distort`` may follow it.
``resize``      ``size`` (int or [w, h]) keeping the aspect ratio, padded with ``pad_color``.
``grey``        luma; ``keep_channels: true`` keeps three channels.
``distort``     ``dropout`` probability and / or Gaussian ``noise`` sigma, with a per-sample seed derived
                from (pipeline ``seed``, sample ``key``, step index): identical on every engine and worker.

Masks and boxes follow the image through ``crop`` and ``resize``; the box reported in results is always in
the input image's pixels.
"""

from bglab.io.seeds import sample_seed
from bglab.pipeline.chain import FORMATS, Pipeline
from bglab.pipeline.config import CONFIG_VERSION, STEP_NAMES, load_config, step_entries
from bglab.pipeline.state import STATUSES, SampleState, StepResult
from bglab.pipeline.steps import (BACKGROUND_MODES, ON_MISSING, BackgroundStep, CropStep, DistortStep, GreyStep,
                                  LocateStep, PoseStep, ResizeStep, SegmentStep, Step)

__all__ = [
    "BACKGROUND_MODES", "CONFIG_VERSION", "FORMATS", "ON_MISSING", "STATUSES", "STEP_NAMES", "BackgroundStep",
    "CropStep", "DistortStep", "GreyStep", "LocateStep", "Pipeline", "PoseStep", "ResizeStep", "SampleState",
    "SegmentStep", "Step", "StepResult", "load_config", "sample_seed", "step_entries",
]
