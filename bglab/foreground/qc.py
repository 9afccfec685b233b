"""Mask QC in the commands: ``--on-suspect`` policy, ``--qc`` rule options and the one hint naming a better backend.

The rules themselves are pure and live in :mod:`bglab.ops.qc`; this module holds what the commands share
around them (remove, preprocess, variants, key, the server, experiments). Statuses every command uses:
``done`` (passed QC), ``suspect`` (a QC rule broken; the reasons are in the report), ``not-found`` (the
segmenter or locator found nothing: no foreground pixel, no box, no hand), ``skipped``, ``failed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bglab.errors import BackendError, ConfigError
from bglab.foreground.registry import DEFAULT_SEGMENTER, resolve
from bglab.ops.qc import FLAGS, MaskCheck, QCRules, check_batch, check_mask, median_outliers

__all__ = ["FLAGS", "ON_SUSPECT", "MaskCheck", "QCRules", "backend_hint", "check_batch", "check_mask",
           "check_on_suspect", "flags_of", "median_outliers", "rules_from", "set_segment_qc",
           "uses_screen"]

ON_SUSPECT: tuple[str, ...] = ("keep", "skip", "fail")


def check_on_suspect(value: str) -> str:
    """Validate an ``--on-suspect`` value: keep (write it, status suspect), skip (no output) or fail."""
    v = str(value).strip().lower()
    if v not in ON_SUSPECT:
        raise ConfigError(f"unknown --on-suspect {value!r}",
                          hint="keep (write it, marked suspect), skip (write nothing) or fail (count it as failed)")
    return v


def rules_from(options: Mapping[str, Any] | None = None) -> QCRules:
    """QC rules from ``--qc key=value`` options (field names of :class:`bglab.ops.qc.QCRules`)."""
    return QCRules.from_options(options)


def uses_screen(backend: str | None) -> bool:
    """Whether the backend keys a screen colour, so the ``no-screen`` rule applies."""
    try:
        return resolve(str(backend or "")).screen
    except BackendError:  # not a registered name (a test double, a custom segmenter object)
        return False


def flags_of(reason: str) -> set[str]:
    """The rule names in a QC reason text (``"empty: ...; outlier: ..."`` -> {"empty", "outlier"})."""
    return {part.split(":", 1)[0].strip() for part in str(reason or "").split("; ")} & set(FLAGS)


def set_segment_qc(config: dict[str, Any], *, on_suspect: str | None = None,
                   rules: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A pipeline config with ``on_suspect`` / ``qc`` rule overrides set on its segment step (CLI flags)."""
    if on_suspect is None and not rules:
        return config
    steps = []
    found = False
    for item in config.get("steps") or []:
        if isinstance(item, Mapping) and len(item) == 1 and "segment" in item:
            seg = dict(item["segment"] or {})
            if on_suspect is not None:
                seg["on_suspect"] = check_on_suspect(on_suspect)
            if rules:
                old = seg.get("qc")
                seg["qc"] = {**(dict(old) if isinstance(old, Mapping) else {}), **dict(rules)}
            steps.append({"segment": seg})
            found = True
        else:
            steps.append(item)
    if not found:
        raise ConfigError("--on-suspect and --qc apply to the masks of a segment step, and there is none",
                          hint="add --backend NAME or --background remove (or a segment step in the config)")
    return {**config, "steps": steps}


def backend_hint(backend: str | None, flags: Iterable[str], not_found: int = 0) -> str:
    """One line naming a better backend for the flags seen (``flags``: every flag of the batch)."""
    fl = set(flags)
    name = str(backend or DEFAULT_SEGMENTER)
    if name == "chroma" and (fl & {"full", "no-screen", "border"} or not_found):
        return ("hint: these photos do not look like a green / blue screen; for hands use --backend unet-effnet "
                "(the default), for other objects --backend u2netp or rembg (extra 'rembg'), or --backend auto")
    if name == "hand-grabcut" and not_found:
        return (f"hint: MediaPipe found no hand in {not_found} photo(s) (status not-found); if they hold other "
                "objects use --backend rembg (extra 'rembg') or grabcut; if they are green-screen shots, chroma")
    if name in ("unet", "unet-effnet") and (fl or not_found):
        return (f"hint: {name} is a hand segmenter; for hands it misses in real scenes try --backend auto (extra "
                "'hands': MediaPipe finds them first), for green-screen shots --backend chroma, for other "
                "objects --backend u2netp or rembg (extra 'rembg')")
    if fl or not_found:
        return (f"hint: check the suspect masks (--mode mask shows them) or try another backend than {name} "
                "(`bglab backends` lists them); the QC rules are in docs/trust.md")
    return ""
