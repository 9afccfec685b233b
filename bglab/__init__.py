"""bglab: background lab for image classification.

The small public API: read and write images safely, segment them with any backend, change the background.

>>> import bglab
>>> img = bglab.read_image("hand.jpg")
>>> cut = bglab.remove_background(img, mode="cutout")          # RGBA, default U-Net backend
>>> seg = bglab.create_backend("chroma")                       # any registered backend by name
>>> mask = seg.predict(img)                                    # float32 (H, W) in [0, 1]
"""

from bglab.background.remove import RemoveOptions, apply_mode, remove_background
from bglab.errors import BackendError, BglabError, BoxError, ImageReadError, ImageWriteError, MaskError
from bglab.foreground import backends as list_backends
from bglab.foreground import create as create_backend
from bglab.io.files import read_image, read_mask, write_image, write_mask
from bglab.ops.box import Box

__version__ = "0.1.0"

__all__ = [
    "BackendError", "BglabError", "Box", "BoxError", "ImageReadError", "ImageWriteError", "MaskError",
    "RemoveOptions", "apply_mode", "create_backend", "list_backends", "read_image", "read_mask",
    "remove_background", "write_image", "write_mask",
]
