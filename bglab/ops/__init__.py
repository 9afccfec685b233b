"""Pure image operations (numpy + OpenCV): masks, background edits, geometry, distortions."""

from __future__ import annotations

from bglab.ops.background import (
    FIT_MODES,
    blur_background,
    composite,
    cutout,
    fill_background,
    fill_box,
    largest_background_rect,
    only_foreground,
    remove_foreground,
    replace_background,
)
from bglab.ops.distort import gaussian_noise, pixel_dropout
from bglab.ops.geometry import (
    INTERPOLATIONS,
    PadTransform,
    box_to_pixels,
    crop_to_box,
    expand_box_for_region,
    pad_transform,
    resize,
    resize_mask_pad,
    resize_pad,
    to_grey,
)
from bglab.ops.pose import align_landmarks, draw_pose
from bglab.ops.mask import (
    ParameterError,
    as_soft,
    binarize,
    component_count,
    coverage,
    feather,
    fill_holes,
    keep_components,
    keep_largest_component,
    refine,
)

__all__ = [
    "align_landmarks",
    "draw_pose",
    "FIT_MODES",
    "INTERPOLATIONS",
    "PadTransform",
    "ParameterError",
    "as_soft",
    "binarize",
    "blur_background",
    "box_to_pixels",
    "component_count",
    "composite",
    "coverage",
    "crop_to_box",
    "cutout",
    "expand_box_for_region",
    "feather",
    "fill_background",
    "fill_box",
    "fill_holes",
    "gaussian_noise",
    "keep_components",
    "keep_largest_component",
    "largest_background_rect",
    "only_foreground",
    "pad_transform",
    "pixel_dropout",
    "refine",
    "remove_foreground",
    "replace_background",
    "resize",
    "resize_mask_pad",
    "resize_pad",
    "to_grey",
]
