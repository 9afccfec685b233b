"""Axis-aligned boxes: the type lives in :mod:`bglab.ops.box` (pure geometry, beside the masks it is cut from);
this module keeps the short import path ``from bglab.boxes import Box`` that most of the package uses."""

from __future__ import annotations

from bglab.ops.box import Box, box_iou_matrix, iou

__all__ = ["Box", "box_iou_matrix", "iou"]
