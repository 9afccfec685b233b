"""Seeds: every random stream in bglab is derived here, so a result is the same on every machine and worker.

:func:`sample_seed` seeds one sample's draw in a pipeline step (global seed, sample key, salt);
:func:`derive_seed` seeds one stream of an experiment (initial weights, epoch order, augmentation);
:func:`seed_everything` seeds Python's, NumPy's and torch's global generators for a trainer.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed", "sample_seed", "seed_everything"]


def sample_seed(seed: int, key: str, salt: str = "") -> int:
    """A 64-bit seed from (global seed, sample key, salt): the same on every machine, engine and worker."""
    digest = hashlib.sha256(f"bglab|{int(seed)}|{salt}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across machines and Python versions)."""
    h = hashlib.sha256("|".join(str(p) for p in ("bglab.experiment", *parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA) with ``seed``."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
