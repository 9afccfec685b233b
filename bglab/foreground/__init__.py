"""Segmenter and locator backends behind one protocol, chosen by name (``--backend NAME``).

Each ``register`` line below is the whole record of a backend (see :class:`BackendInfo`): adding one is a new
module with a factory plus one line here.
"""

from __future__ import annotations

from bglab.foreground.base import Locator, Segmenter, SegmenterBase
from bglab.foreground.registry import (DEFAULT_SEGMENTER, BackendInfo, Runtime, backends, choices_help, create,
                                       is_available, path_options, register, resolve)

register(BackendInfo("unet", "segmenter", "bglab.foreground.unet", "create",
                     "bglab's small hand U-Net v3 (ONNX Runtime, shipped; the fastest; green screens, studio photos)",
                     path_options=("model",)))
register(BackendInfo("unet-effnet", "segmenter", "bglab.foreground.unet", "create_effnet",
                     "hand U-Net v4.1: pretrained EfficientNet-Lite0 encoder + U-Net decoder, also taught on real "
                     "scenes (ONNX Runtime, shipped); the default",
                     path_options=("model",)))
register(BackendInfo("chroma", "segmenter", "bglab.foreground.chroma", "create",
                     "chroma key for green / blue screens (key colour estimated from the border)", screen=True))
register(BackendInfo("grabcut", "segmenter", "bglab.foreground.grabcut", "create",
                     "OpenCV GrabCut seeded by a box (a locator's, or the image minus a border)"))
register(BackendInfo("mask-files", "segmenter", "bglab.foreground.maskfiles", "create_segmenter",
                     "ground-truth masks read from a folder, matched by file stem",
                     reads_files=True, path_options=("masks",)))
register(BackendInfo("mask-box", "locator", "bglab.foreground.maskfiles", "create_locator",
                     "box of a mask (from mask files, or from any segmenter)"))
register(BackendInfo("full", "locator", "bglab.foreground.maskfiles", "create_full_locator",
                     "the whole image as one box (no localisation)"))
register(BackendInfo("box-model", "locator", "bglab.foreground.detector_locator", "create_box_model",
                     "one box from a trained box + label model (bglab train-det; safetensors or ONNX)",
                     path_options=("model",)))
register(BackendInfo("box-csv", "locator", "bglab.foreground.detector_locator", "create_box_csv",
                     "boxes listed for the image's file name in an annotation file (CSV / VOC XML / COCO JSON)",
                     reads_files=True, path_options=("boxes",)))
register(BackendInfo("mediapipe-hands", "locator", "bglab.foreground.mediapipe", "create_hands",
                     "MediaPipe Hands landmarks' extent plus a margin (offline; extra 'hands')",
                     extra="hands", requires=("mediapipe",)))
register(BackendInfo("hand-grabcut", "segmenter", "bglab.foreground.handcut", "create",
                     "hands in real scenes: MediaPipe hand landmarks seed GrabCut (no trained model; extra 'hands')",
                     extra="hands", requires=("mediapipe",)))
register(BackendInfo("mediapipe-selfie", "segmenter", "bglab.foreground.mediapipe", "create_selfie",
                     "MediaPipe selfie (person) segmentation (offline model file; extra 'hands')",
                     extra="hands", requires=("mediapipe",)))
register(BackendInfo("rembg", "segmenter", "bglab.foreground.rembg_backend", "create",
                     "any rembg session whose file is in U2NET_HOME (extra 'rembg'), or any U^2-Net ONNX file "
                     "given as model_path= (no rembg needed)",
                     extra="rembg", requires=("rembg",), requires_unless=("model_path",), path_options=("model_path",)))
register(BackendInfo("u2netp", "segmenter", "bglab.foreground.general", "create",
                     "general objects (pets, products, people...): U^2-Net-p salient-object model, 4.6 MB ONNX, "
                     "installed at set-up (python -m bglab.foreground.fetch_models), sha256-checked; "
                     "box= prompts via locator=",
                     path_options=("model_path",)))
register(BackendInfo("auto", "segmenter", "bglab.foreground.auto", "create",
                     "picks for you: a hand data set (MediaPipe finds hands in most images; extra 'hands') -> "
                     "unet-effnet on the hands' boxes where a hand is found, else u2netp; anything else -> u2netp",
                     path_options=("model_path",)))

__all__ = [
    "DEFAULT_SEGMENTER", "BackendInfo", "Locator", "Runtime", "Segmenter", "SegmenterBase",
    "backends", "choices_help", "create", "is_available", "path_options", "register", "resolve",
]
