"""Training code (needs the ``train`` extra: torch, albumentations, onnx, safetensors).

- :mod:`bglab.train.unet`: the small hand U-Net (plain PyTorch).
- :mod:`bglab.train.composite`: the compositing data set (keyed webcam hands pasted onto real photos).
- :mod:`bglab.train.segtrain`: training loop, checkpoints, early stopping, ONNX export, ablation.

Nothing here is imported by ``bglab remove``: inference runs the exported ONNX file with ONNX Runtime.
"""
