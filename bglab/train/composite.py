"""Compositing data set: keyed webcam hands pasted onto real photos with no hand in them.

Sources
- Hands: chroma-keyed webcam photos (``<keyed>/<class>/<stem>.png`` masks, ``<images>/<class>/<stem>.png``
  photos), despilled with :func:`bglab.ops.color.despill` and cut out with their mask. Masks that the
  key's QC rejected (``key_report.csv``) are skipped.
- Backgrounds: real photos with no hand: ``backgrounds/*.jpg``; Oxford pets photos with the pet removed
  (the pet region is inpainted, so only the room / garden / sofa stays); optionally the face-mask photos
  (faces and people with no hand pasted: skin that is *not* hand).

One composite: a background crop, 0-3 hands each with its own skin-tone / colour jitter, random scale,
rotation, mirror and position (usually entering from an edge, arm first, as hands do), a soft drop shadow,
then albumentations on the whole image (brightness 0.5-1.5, zoom, rotation 30 deg, shift 0.1, shear,
horizontal flip, random resized crop, Gaussian noise, Gaussian blur, JPEG). Some samples are the plain
webcam photo with its keyed mask. Every sample is a pure function of ``(seed, epoch, index)``.

Scene kinds (``CompositeSpec.scenes``, v4; off by default, so the v3 recipe is unchanged): ``face`` (hands
pasted over the face-mask photos' faces), ``ego`` (one or two large forearms entering from the bottom / sides
of an indoor scene, sometimes with distractors), ``negative`` (no hand: faces, strongly coloured / striped /
skin-coloured objects and surfaces, shadow slabs), ``pale`` (pale hands on a light, washed background), and
``mixed`` (the v3 composite, with distractors behind the hands at ``p_distract``). ``p_photo`` adds camera
realism to any sample (:func:`photometric`: colour temperature, low light, motion blur, defocus, JPEG).
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSES = ("rock", "paper", "scissors")
_PHOTO_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class KeyedRecord:
    """One keyed webcam photo: class, stem, photo path, mask path."""

    cls: str
    stem: str
    image: Path
    mask: Path

    @property
    def key(self) -> str:
        return f"{self.cls}/{self.stem}"


def _qc_rejects(keyed_dir: Path) -> set[str]:
    """Keys (``class/stem``) that ``key_report.csv`` marks as failed; empty when there is no report."""
    report = keyed_dir / "key_report.csv"
    if not report.is_file():
        return set()
    bad: set[str] = set()
    with report.open(newline="") as fh:
        for row in csv.DictReader(fh):
            low = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            verdict = None
            for col in ("qc", "ok", "pass", "passed", "status", "qc_pass", "accepted", "keep"):
                if col in low:
                    verdict = low[col].lower()
                    break
            if verdict is None:
                continue
            if verdict in ("1", "true", "yes", "ok", "pass", "passed", "accepted", "keep", "good"):
                continue
            name = low.get("file") or low.get("path") or low.get("image") or low.get("stem") or ""
            cls = low.get("class") or low.get("cls") or low.get("label") or ""
            p = Path(name)
            stem = p.stem
            cls = cls or (p.parent.name if p.parent.name else "")
            bad.add(f"{cls}/{stem}")
    return bad


def list_keyed(keyed_dir: str | Path, images_dir: str | Path, *, classes: Sequence[str] | None = CLASSES,
               use_qc: bool = True) -> list[KeyedRecord]:
    """Keyed masks that have their photo (and passed QC when a report exists), sorted by class then stem.

    ``classes=None`` takes every sub-folder of ``keyed_dir`` (except ``_rejected``-style ones starting with
    ``_``; the RPS classes first, in their order): real-scene sets that are not sorted into the RPS classes,
    e.g. the face-mask photos."""
    from bglab.errors import DatasetError

    keyed_dir, images_dir = Path(keyed_dir), Path(images_dir)
    if not keyed_dir.is_dir():
        raise DatasetError("keyed mask folder not found", path=keyed_dir,
                           hint="run `bglab key` on the webcam photos first")
    bad = _qc_rejects(keyed_dir) if use_qc else set()
    out: list[KeyedRecord] = []
    if classes is None:
        found = {d.name for d in keyed_dir.iterdir() if d.is_dir() and not d.name.startswith("_")}
        classes = [c for c in CLASSES if c in found] + sorted(found - set(CLASSES))
    for cls in classes:
        photos = {p.stem: p for p in sorted((images_dir / cls).glob("*")) if p.suffix.lower() in _PHOTO_EXT}
        for m in sorted((keyed_dir / cls).glob("*.png")):
            img = photos.get(m.stem)  # masks are .png, photos any image type with the same stem
            if img is None or f"{cls}/{m.stem}" in bad:
                continue
            out.append(KeyedRecord(cls, m.stem, img, m))
    if not out:
        raise DatasetError("no keyed masks with a matching photo", path=keyed_dir,
                           hint=f"expected <keyed>/<class>/<stem>.png and {images_dir}/<class>/<stem>.png")
    return out


def split_records(records: Sequence[KeyedRecord], seed: int = 0, val: float = 0.15,
                  test: float = 0.15) -> dict[str, list[KeyedRecord]]:
    """Seeded split per class into train / val / test (test = held out for the final evaluation)."""
    out: dict[str, list[KeyedRecord]] = {"train": [], "val": [], "test": []}
    by_cls: dict[str, list[KeyedRecord]] = {}
    for r in records:
        by_cls.setdefault(r.cls, []).append(r)
    for cls in sorted(by_cls):
        recs = sorted(by_cls[cls], key=lambda r: r.stem)
        random.Random(f"{seed}-{cls}").shuffle(recs)
        n_test = round(len(recs) * test)
        n_val = round(len(recs) * val)
        out["test"] += recs[:n_test]
        out["val"] += recs[n_test:n_test + n_val]
        out["train"] += recs[n_test + n_val:]
    return out


def split_grouped(records: Sequence[KeyedRecord], fractions: Sequence[float], *, origin: str,
                  seed: int = 0) -> dict[str, list[KeyedRecord]]:
    """Split records the way ``bglab experiment`` splits a source named ``origin`` with these fractions and
    ``split_seed`` = ``seed`` (:func:`bglab.data.dataset.split`: stratified by class, Roboflow ``.rf.`` copies of one
    photo kept together), so a segmenter trained on the train part never saw that experiment's test images."""
    from bglab.data.dataset import Sample
    from bglab.data.dataset import split as split_samples

    by_path = {r.image: r for r in records}
    sp = split_samples([Sample(r.image, r.cls, origin) for r in records], fractions=fractions, seed=seed)
    return {part: [by_path[s.path] for s in getattr(sp, part)] for part in ("train", "val", "test")}


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        from bglab.errors import ImageReadError

        raise ImageReadError("cannot read image", path=path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        from bglab.errors import MaskError

        raise MaskError("cannot read mask", path=path)
    if m.ndim == 3:
        m = m[..., -1] if m.shape[2] == 4 else m[..., 0]
    if m.dtype == np.uint16:
        return m.astype(np.float32) / 65535.0
    if m.dtype == np.bool_:
        return m.astype(np.float32)
    mx = 255.0 if m.max() > 1 else 1.0
    return m.astype(np.float32) / mx


def despill_rgb(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Green-spill suppression on the hand (:func:`bglab.ops.color.despill`)."""
    from bglab.ops.color import despill

    return despill(image, mask)


# ----------------------------------------------------------------------------------------------- hands
@dataclass
class Hand:
    """A cut-out hand: RGB crop, alpha crop (float32), arm anchor and outward arm direction (crop coords)."""

    rgb: np.ndarray
    alpha: np.ndarray
    anchor: tuple[float, float]
    direction: tuple[float, float] | None  # unit vector pointing out along the arm; None = no border contact


def make_hand(image: np.ndarray, mask: np.ndarray, *, despill: bool = True, margin: int = 2) -> Hand | None:
    """Cut a hand out of a keyed photo; ``None`` when the mask is (nearly) empty."""
    alpha = mask.astype(np.float32)
    fg = alpha > 0.5
    if fg.sum() < 50:
        return None
    h, w = fg.shape
    # the side the arm leaves the frame by = the border with most foreground pixels
    sides = {"left": fg[:, 0], "right": fg[:, -1], "top": fg[0, :], "bottom": fg[-1, :]}
    side = max(sides, key=lambda k: int(sides[k].sum()))
    direction: tuple[float, float] | None = None
    if sides[side].sum() >= 3:
        idx = np.flatnonzero(sides[side]).mean()
        anchor_full = {"left": (0.0, idx), "right": (w - 1.0, idx), "top": (idx, 0.0),
                       "bottom": (idx, h - 1.0)}[side]
        direction = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}[side]
    else:
        ys, xs = np.nonzero(fg)
        anchor_full = (float(xs.mean()), float(ys.mean()))
    rgb = despill_rgb(image, alpha) if despill else image
    ys, xs = np.nonzero(alpha > 0.02)
    y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, h)
    x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, w)
    return Hand(np.ascontiguousarray(rgb[y0:y1, x0:x1]), np.ascontiguousarray(alpha[y0:y1, x0:x1]),
                (anchor_full[0] - x0, anchor_full[1] - y0), direction)


def jitter_hand_colour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Skin-tone / colour jitter on the hand only: hue shift, saturation and brightness gains, sometimes darker."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 180.0
    sat = rng.uniform(0.6, 1.5)
    val = rng.uniform(0.6, 1.3)
    if rng.random() < 0.35:  # darker skin tones: the webcam set has light skin only
        val *= rng.uniform(0.35, 0.75)
        sat *= rng.uniform(1.0, 1.5)
    hsv[..., 1] *= sat
    hsv[..., 2] *= val
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    if rng.random() < 0.3:  # gamma
        g = rng.uniform(0.7, 1.4)
        lut = np.clip(((np.arange(256) / 255.0) ** g) * 255.0, 0, 255).astype(np.uint8)
        out = lut[out]
    return out


def warp_shape(rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator,
               amount: float = 0.08, grid: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement of a hand crop (fingers bend, palm widens): the webcam set has three poses."""
    h, w = alpha.shape
    amp = amount * max(h, w)
    dx = cv2.resize(rng.uniform(-amp, amp, (grid, grid)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.uniform(-amp, amp, (grid, grid)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = xs + dx, ys + dy
    out_rgb = cv2.remap(np.ascontiguousarray(rgb), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out_a = cv2.remap(np.ascontiguousarray(alpha), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out_rgb, out_a


def add_occluders(canvas: np.ndarray, label: np.ndarray, background: np.ndarray, rng: np.random.Generator,
                  n: int = 1) -> None:
    """Objects in front of the hands (cards, cups, pieces of scene): a rotated patch, label cleared under it."""
    h, w = label.shape
    bh, bw = background.shape[:2]
    for _ in range(n):
        ph, pw = int(h * rng.uniform(0.08, 0.35)), int(w * rng.uniform(0.08, 0.35))
        if rng.random() < 0.4:  # flat, card-like
            patch = np.empty((ph, pw, 3), np.float32)
            patch[:] = rng.uniform(0, 255, 3)
            patch += rng.normal(0, 6, (ph, pw, 1))
        else:  # a piece of a scene
            y0, x0 = int(rng.integers(0, max(bh - ph, 1))), int(rng.integers(0, max(bw - pw, 1)))
            patch = cv2.resize(background[y0:y0 + ph, x0:x0 + pw], (pw, ph)).astype(np.float32)
        mask = np.zeros((ph, pw), np.float32)
        if rng.random() < 0.5:
            cv2.ellipse(mask, (pw // 2, ph // 2), (max(pw // 2 - 1, 1), max(ph // 2 - 1, 1)), 0, 0, 360, 1.0, -1)
        else:
            mask[:] = 1.0
        # place it where there is hand, most of the time
        ys, xs = np.nonzero(label > 0.5)
        if len(ys) and rng.random() < 0.8:
            k = int(rng.integers(len(ys)))
            cy, cx = float(ys[k]), float(xs[k])
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        theta = rng.uniform(0, 360)
        m = cv2.getRotationMatrix2D((pw / 2, ph / 2), theta, 1.0)
        m[:, 2] += (cx - pw / 2, cy - ph / 2)
        a = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR)
        img = cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        canvas *= (1.0 - a)[..., None]
        canvas += img * a[..., None]
        label *= 1.0 - a


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]], dtype=np.float64)


@dataclass(frozen=True)
class Placement:
    """Where and how large a pasted hand is (the default is the v1-v3 draw, unchanged).

    ``scale``: range of the hand's long side relative to the canvas' short side (log-uniform); ``p_edge``:
    probability that the arm enters through an edge (hands with border contact only); ``edges``: the edges
    it may enter by (0 left, 1 right, 2 top, 3 bottom) with probabilities ``edge_p`` (None: uniform);
    ``t``: where along the edge (fraction); ``centre``: for hands not entering by an edge, a point (x, y
    fractions) the arm end is placed near (``centre_sd`` spread) instead of anywhere.
    """

    scale: tuple[float, float] = (0.12, 1.3)
    p_edge: float = 0.75
    edges: tuple[int, ...] = (0, 1, 2, 3)
    edge_p: tuple[float, ...] | None = None
    t: tuple[float, float] = (0.1, 0.9)
    centre: tuple[float, float] | None = None
    centre_sd: float = 0.12


DEFAULT_PLACEMENT = Placement()
#: egocentric: one or two large forearms entering from the bottom (mostly) or the sides
EGO_PLACEMENT = Placement(scale=(0.45, 1.25), p_edge=1.0, edges=(3, 0, 1), edge_p=(0.6, 0.2, 0.2), t=(0.15, 0.85))
#: hand over a face: from the bottom / sides toward the face (face crops have the face near (0.5, 0.42))
FACE_PLACEMENT = Placement(scale=(0.3, 0.9), p_edge=0.7, edges=(3, 0, 1), edge_p=(0.6, 0.2, 0.2), t=(0.3, 0.7),
                           centre=(0.5, 0.45), centre_sd=0.12)


def paste_hand(canvas: np.ndarray, label: np.ndarray, hand: Hand, rng: np.random.Generator, *,
               colour: bool = True, shadow_p: float = 0.35, harmonize: bool = True,
               placement: Placement | None = None) -> None:
    """Paste one hand onto ``canvas`` (float32 RGB 0-255, in place) and add it to ``label`` (max).

    ``harmonize`` (on by default) hides the paste: small hands are shrunk with area averaging, the hand's
    colour is pulled part-way to the scene under it, it is sometimes slightly blurred, and its edge softened
    more often; off reproduces the first (v1) pipeline exactly. ``placement`` (default: anywhere, any
    size 0.12-1.3) steers position and size for the scene kinds (egocentric, hand over face).
    """
    pl = placement or DEFAULT_PLACEMENT
    size_h, size_w = canvas.shape[:2]
    side_len = float(min(size_h, size_w))
    rgb = jitter_hand_colour(hand.rgb, rng) if colour else hand.rgb
    alpha = hand.alpha
    anchor = np.array(hand.anchor, dtype=np.float64)
    direction = np.array(hand.direction if hand.direction is not None else (1.0, 0.0), dtype=np.float64)
    if rng.random() < 0.5:  # mirror across the arm axis: left hand <-> right hand
        if abs(direction[0]) >= abs(direction[1]):
            rgb, alpha = rgb[::-1], alpha[::-1]
            anchor[1] = rgb.shape[0] - 1 - anchor[1]
        else:
            rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
            anchor[0] = rgb.shape[1] - 1 - anchor[0]
    if harmonize and colour and rng.random() < 0.5:
        rgb, alpha = warp_shape(rgb, alpha, rng, amount=rng.uniform(0.03, 0.1))
    long_side = max(alpha.shape)
    target = side_len * math.exp(rng.uniform(math.log(pl.scale[0]), math.log(pl.scale[1])))
    scale = target / long_side
    if hand.direction is not None and rng.random() < pl.p_edge:
        # arm enters through a canvas edge: anchor just outside an edge, hand pointing inwards
        if pl.edges == (0, 1, 2, 3) and pl.edge_p is None:
            edge = int(rng.integers(4))
        else:
            edge = int(rng.choice(pl.edges, p=pl.edge_p))
        t = rng.uniform(*pl.t)
        push = rng.uniform(0.0, 0.2) * target
        normal, point = [((-1.0, 0.0), (-push, t * size_h)), ((1.0, 0.0), (size_w + push, t * size_h)),
                         ((0.0, -1.0), (t * size_w, -push)), ((0.0, 1.0), (t * size_w, size_h + push))][edge]
        want = math.atan2(normal[1], normal[0]) + math.radians(rng.uniform(-40, 40))
        theta = want - math.atan2(direction[1], direction[0])
        dst = np.array(point)
    elif pl.centre is not None:
        theta = rng.uniform(0, 2 * math.pi)
        dst = np.array([(pl.centre[0] + rng.normal(0, pl.centre_sd)) * size_w,
                        (pl.centre[1] + rng.normal(0, pl.centre_sd)) * size_h])
    else:
        theta = rng.uniform(0, 2 * math.pi)
        dst = np.array([rng.uniform(0, size_w), rng.uniform(0, size_h)])
    if harmonize and scale < 0.6:  # shrink with area averaging first (a warp alone aliases: a shortcut cue)
        fh, fw = max(int(round(rgb.shape[0] * scale)), 2), max(int(round(rgb.shape[1] * scale)), 2)
        sy, sx = fh / rgb.shape[0], fw / rgb.shape[1]
        rgb = cv2.resize(np.ascontiguousarray(rgb), (fw, fh), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(np.ascontiguousarray(alpha), (fw, fh), interpolation=cv2.INTER_AREA)
        anchor = anchor * np.array([sx, sy])
        scale = scale / ((sx + sy) / 2)
    a = _rot(theta) * scale
    m = np.hstack([a, (dst - a @ anchor)[:, None]]).astype(np.float32)
    warped_a = cv2.warpAffine(np.ascontiguousarray(alpha), m, (size_w, size_h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if warped_a.max() < 0.05:
        return
    warped = cv2.warpAffine(np.ascontiguousarray(rgb), m, (size_w, size_h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    if harmonize and colour and rng.random() < 0.7:
        # lighting / colour harmonisation: pull the hand's mean colour part-way to the scene under it
        sel = warped_a > 0.5
        if sel.sum() >= 4:
            hand_mean = warped[sel].mean(0) + 1.0
            bg_mean = canvas[sel].mean(0) + 1.0
            t = rng.uniform(0.1, 0.6)
            gain = (bg_mean / hand_mean) ** t
            gain = gain / max(gain.mean(), 1e-3) * (bg_mean.mean() / hand_mean.mean()) ** (t * 0.5)
            warped *= np.clip(gain, 0.4, 2.0)[None, None, :]
    if harmonize and colour and rng.random() < 0.25:  # the hand slightly out of focus / moving
        warped = cv2.GaussianBlur(warped, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < shadow_p:
        shift = np.float32([[1, 0, rng.uniform(-0.06, 0.06) * side_len],
                            [0, 1, rng.uniform(0.0, 0.08) * side_len]])
        sh = cv2.warpAffine(warped_a, shift, (size_w, size_h))
        sigma = max(rng.uniform(0.02, 0.07) * side_len, 0.5)
        sh = cv2.GaussianBlur(sh, (0, 0), sigma)
        canvas *= (1.0 - rng.uniform(0.2, 0.55) * sh)[..., None]
    blend = warped_a
    if rng.random() < (0.6 if harmonize else 0.5):  # soften the cut edge a little (label keeps the alpha)
        blend = cv2.GaussianBlur(warped_a, (3, 3), rng.uniform(0.3, 1.0 if harmonize else 0.8))
    canvas *= (1.0 - blend)[..., None]
    canvas += warped * blend[..., None]
    np.maximum(label, warped_a, out=label)


def composite(background: np.ndarray, hands: Sequence[Hand], rng: np.random.Generator,
              size: tuple[int, int], *, colour: bool = True, shadow_p: float = 0.35,
              harmonize: bool = True, placement: Placement | None = None, distractors: int = 0,
              pale: bool = False, crop: tuple[float, float] = (0.5, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``hands`` on a random crop of ``background`` resized to ``size`` (h, w); returns (RGB uint8, mask).

    Scene kinds (:func:`scene`) add: ``placement`` (where / how large the hands are), ``distractors`` hard
    negatives painted into the scene *behind* the hands (:func:`add_distractors`), ``pale`` (a light, washed
    background and pale hands), ``crop`` (range of the background crop's side, as a fraction).
    """
    h, w = size
    bh, bw = background.shape[:2]
    # random crop of the background with a random aspect, resized to the canvas
    frac = rng.uniform(*crop)
    ch = max(int(bh * frac), 8)
    cw = max(min(int(ch * w / h * rng.uniform(0.8, 1.25)), bw), 8)
    y0 = int(rng.integers(0, bh - ch + 1))
    x0 = int(rng.integers(0, bw - cw + 1))
    crop = background[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    canvas = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    label = np.zeros((h, w), np.float32)
    if pale:  # light scene: wash the background toward a light tint
        tint = rng.uniform(200, 255, 3).astype(np.float32)
        k = rng.uniform(0.3, 0.6)
        canvas = canvas * (1 - k) + tint * k
    if distractors:
        add_distractors(canvas, rng, n=distractors)
    for hand in hands:
        if pale:
            hand = Hand(pale_skin(hand.rgb, rng), hand.alpha, hand.anchor, hand.direction)
        paste_hand(canvas, label, hand, rng, colour=colour and not pale, shadow_p=shadow_p, harmonize=harmonize,
                   placement=placement)
    if harmonize and colour and hands and rng.random() < 0.3:
        add_occluders(canvas, label, background, rng, n=int(rng.integers(1, 3)))
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), label


# ----------------------------------------------------------------------------------------------- scene kinds
def pale_skin(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pale, low-contrast hand (over-exposed or very light skin): desaturate and lift toward white."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] *= rng.uniform(0.45, 0.85)
    hsv[..., 2] = hsv[..., 2] * rng.uniform(0.6, 0.85) + 255 * rng.uniform(0.12, 0.3)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


def _skin_colour(rng: np.random.Generator) -> np.ndarray:
    """A random skin-like RGB colour (hue 0-25 deg, moderate saturation, any brightness)."""
    hsv = np.array([[[rng.uniform(0, 13), rng.uniform(50, 160), rng.uniform(70, 245)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _strong_colour(rng: np.random.Generator) -> np.ndarray:
    """A strongly saturated colour, often orange / red / yellow (what v3 took for hands)."""
    hue = rng.uniform(0, 30) if rng.random() < 0.6 else rng.uniform(0, 180)
    hsv = np.array([[[hue, rng.uniform(150, 255), rng.uniform(120, 255)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _random_region(h: int, w: int, rng: np.random.Generator, big: bool = False) -> np.ndarray:
    """A soft-edged float32 region: a rotated rectangle, an ellipse, a polygon, or a band (tape)."""
    m = np.zeros((h, w), np.float32)
    lo, hi = (0.3, 1.0) if big else (0.1, 0.5)
    rh, rw = h * rng.uniform(lo, hi) / 2, w * rng.uniform(lo, hi) / 2
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    kind = int(rng.integers(4))
    if kind == 0:
        box = cv2.boxPoints(((cx, cy), (2 * rw, 2 * rh), rng.uniform(0, 180))).astype(np.int32)
        cv2.fillPoly(m, [box], 1.0)
    elif kind == 1:
        cv2.ellipse(m, (int(cx), int(cy)), (max(int(rw), 1), max(int(rh), 1)), rng.uniform(0, 180), 0, 360, 1.0, -1)
    elif kind == 2:
        n = int(rng.integers(4, 8))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = rng.uniform(0.5, 1.0, n)
        pts = np.stack([cx + np.cos(ang) * rad * rw, cy + np.sin(ang) * rad * rh], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 1.0)
    else:  # tape / a band across the image
        a = rng.uniform(0, math.pi)
        d = max(h, w)
        p0 = (int(cx - math.cos(a) * d), int(cy - math.sin(a) * d))
        p1 = (int(cx + math.cos(a) * d), int(cy + math.sin(a) * d))
        cv2.line(m, p0, p1, 1.0, max(int(min(h, w) * rng.uniform(0.02, 0.12)), 1))
    return cv2.GaussianBlur(m, (0, 0), rng.uniform(0.5, 1.5))


def add_distractors(canvas: np.ndarray, rng: np.random.Generator, n: int = 1) -> list[str]:
    """Hard negatives painted into the scene (in place; no label): stripes, strongly coloured objects,
    skin-coloured surfaces (a table, a wall, a sleeve), and shadow slabs. Returns the kinds drawn."""
    h, w = canvas.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kinds = []
    for _ in range(n):
        kind = ("stripes", "colour", "skin", "shadow")[int(rng.choice(4, p=[0.25, 0.3, 0.3, 0.15]))]
        kinds.append(kind)
        region = _random_region(h, w, rng, big=kind == "skin" and rng.random() < 0.6)
        if kind == "shadow":
            canvas *= (1.0 - rng.uniform(0.25, 0.6) * cv2.GaussianBlur(region, (0, 0), rng.uniform(1, 6)))[..., None]
            continue
        shade = 1.0 + rng.uniform(-0.25, 0.25) * ((xx / w - 0.5) * math.cos(rng.uniform(0, 6.3))
                                                  + (yy / h - 0.5) * math.sin(rng.uniform(0, 6.3)))
        if kind == "stripes":
            period = rng.uniform(3, max(min(h, w) / 6, 4))
            a = rng.uniform(0, math.pi)
            phase = ((xx * math.cos(a) + yy * math.sin(a)) / period) % 1.0
            c1, c2 = _strong_colour(rng), (_strong_colour(rng) if rng.random() < 0.6 else rng.uniform(0, 255, 3))
            fill = np.where((phase < 0.5)[..., None], c1, c2).astype(np.float32)
        else:
            col = _strong_colour(rng) if kind == "colour" else _skin_colour(rng)
            fill = np.empty((h, w, 3), np.float32)
            fill[:] = col
            tex = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), rng.uniform(1, 4))
            fill += (tex * rng.uniform(3, 12))[..., None]
        fill *= shade[..., None]
        a = region * rng.uniform(0.75, 1.0)
        canvas *= (1.0 - a)[..., None]
        canvas += fill * a[..., None]
    return kinds


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera realism on a whole RGB uint8 image: colour temperature, low light (+ sensor noise), motion blur,
    defocus, JPEG; each with its own probability (a pure function of ``rng``)."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:  # colour temperature: warm (tungsten) or cool (daylight / LED)
        k = rng.uniform(-0.25, 0.25)
        img *= np.array([1 + k, 1 + k * 0.2, 1 - k], np.float32)
    if rng.random() < 0.25:  # low light: darker, flatter, noisier
        img = 255.0 * (img / 255.0).clip(0, 1) ** rng.uniform(1.0, 1.8) * rng.uniform(0.25, 0.65)
        img += rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:  # motion blur: a line kernel
        k = int(rng.integers(3, 10))
        ker = np.zeros((k, k), np.float32)
        ker[k // 2, :] = 1.0
        ker = cv2.warpAffine(ker, cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1.0),
                             (k, k))
        img = cv2.filter2D(img, -1, ker / max(float(ker.sum()), 1e-6))
    elif rng.random() < 0.12:  # defocus: a disk kernel
        r = int(rng.integers(1, 4))
        ker = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
        cv2.circle(ker, (r, r), r, 1.0, -1)
        img = cv2.filter2D(img, -1, ker / ker.sum())
    if rng.random() < 0.2:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 80))])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(img)


SCENES = ("mixed", "face", "ego", "negative", "pale")
#: scene mix used by ``--scenes`` (v4); "mixed" is the v1-v3 composite
V4_SCENES = {"mixed": 0.35, "face": 0.2, "ego": 0.25, "negative": 0.1, "pale": 0.1}


# ----------------------------------------------------------------------------------------------- backgrounds
def remove_object(image: np.ndarray, mask: np.ndarray, *, work_side: int = 128) -> np.ndarray:
    """Fill a (pet) region from its own surroundings: inpaint at low resolution, add back a little texture."""
    h, w = image.shape[:2]
    f = min(1.0, work_side / max(h, w))
    small = cv2.resize(image, (max(int(w * f), 1), max(int(h * f), 1)), interpolation=cv2.INTER_AREA)
    msmall = cv2.resize((mask > 0).astype(np.uint8) * 255, small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    msmall = cv2.dilate(msmall, np.ones((5, 5), np.uint8))
    filled = cv2.inpaint(small, msmall, 5, cv2.INPAINT_TELEA)
    big = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    region = cv2.dilate((mask > 0).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    out = image.copy()
    out[region] = big[region]
    return out


def _fit_long(image: np.ndarray, long_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    f = long_side / max(h, w)
    if f >= 1.0:
        return image
    return cv2.resize(image, (max(int(w * f), 1), max(int(h * f), 1)), interpolation=cv2.INTER_AREA)


def load_backgrounds(data_root: str | Path, *, pets: bool = True, faces: bool = True, long_side: int = 320,
                     max_pet_fraction: float = 0.6, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Background photos with no hand: (name, RGB uint8) pairs, long side <= ``long_side``."""
    root = Path(data_root)
    out: list[tuple[str, np.ndarray]] = []
    for p in sorted((root / "backgrounds").glob("*.jpg")):
        out.append((f"backgrounds/{p.name}", _fit_long(_read_rgb(p), long_side)))
    if pets and (root / "pets3").is_dir():
        frac: dict[str, float] = {}
        man = root / "pets3" / "manifest.csv"
        if man.is_file():
            with man.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    frac[row["stem"]] = float(row.get("fg_frac") or 0)
        for p in sorted((root / "pets3").glob("*/images/*.jpg")):
            if frac.get(p.stem, 0.0) > max_pet_fraction:
                continue
            mpath = p.parent.parent / "masks" / f"{p.stem}.png"
            if not mpath.is_file():
                continue
            img = _fit_long(_read_rgb(p), long_side)
            m = cv2.resize(cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE), img.shape[1::-1],
                           interpolation=cv2.INTER_NEAREST)
            out.append((f"pets3/{p.parent.parent.name}/{p.name}", remove_object(img, m)))
            if limit and len(out) >= limit:
                break
    if faces and (root / "facemask" / "annotations.csv").is_file():
        out += _face_crops(root / "facemask", long_side=long_side, limit=limit)
    return out


def _face_crops(folder: Path, *, long_side: int, limit: int | None, min_face: int = 28,
                expand: float = 3.0) -> list[tuple[str, np.ndarray]]:
    """Crops around the larger faces of the face-mask photos (skin that is not hand).

    The crops are centred on a face and ``expand`` times its box: mostly face, hair, clothes and a little
    scene. Whole photos are not used because people in them sometimes show (unlabelled) hands.
    """
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    with (folder / "annotations.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            x0, y0, x1, y1 = (int(float(row[k])) for k in ("xmin", "ymin", "xmax", "ymax"))
            if min(x1 - x0, y1 - y0) >= min_face:
                boxes.setdefault(row["file"], []).append((x0, y0, x1, y1))
    out: list[tuple[str, np.ndarray]] = []
    for name in sorted(boxes):
        path = folder / "images" / name
        if not path.is_file():
            continue
        img = _read_rgb(path)
        h, w = img.shape[:2]
        for k, (x0, y0, x1, y1) in enumerate(sorted(boxes[name], key=lambda b: -(b[2] - b[0]))[:2]):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            half = max(x1 - x0, y1 - y0) * expand / 2
            a0, a1 = int(max(cx - half, 0)), int(min(cx + half, w))
            b0, b1 = int(max(cy - half * 0.8, 0)), int(min(cy + half * 1.2, h))
            if a1 - a0 < 48 or b1 - b0 < 48:
                continue
            out.append((f"facemask/{name}#{k}", _fit_long(np.ascontiguousarray(img[b0:b1, a0:a1]), long_side)))
        if limit and len(out) >= limit:
            break
    return out


def source_weights(names: Sequence[str], shares: dict[str, float] | None = None) -> list[float]:
    """Per-image sampling weights so each background source (folder prefix) gets its share of draws."""
    shares = shares or {"backgrounds": 0.3, "pets3": 0.4, "facemask": 0.3}
    src = [n.split("/", 1)[0] for n in names]
    counts = {k: src.count(k) for k in set(src)}
    return [shares.get(s, 0.1) / counts[s] for s in src]


def split_backgrounds(bgs: Sequence[tuple[str, np.ndarray]], seed: int = 0,
                      val: float = 0.15) -> tuple[list, list]:
    idx = list(range(len(bgs)))
    random.Random(f"{seed}-bg").shuffle(idx)
    n_val = max(1, round(len(idx) * val)) if len(idx) > 1 else 0
    val_idx = set(idx[:n_val])
    return [b for i, b in enumerate(bgs) if i not in val_idx], [b for i, b in enumerate(bgs) if i in val_idx]


# ----------------------------------------------------------------------------------------------- data set
def build_augment(size: int):  # noqa: ANN201 - albumentations Compose
    """Albumentations on the whole composite (2.0.8 names)."""
    import albumentations as A

    return A.Compose([
        A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-30, 30), shear=(-6, 6),
                 border_mode=cv2.BORDER_REFLECT_101, mask_interpolation=cv2.INTER_LINEAR, p=0.7),
        A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), ratio=(0.75, 1.333),
                            mask_interpolation=cv2.INTER_LINEAR, p=1.0),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=(0.5, 1.5), contrast=(0.7, 1.3), saturation=(0.6, 1.4), hue=(-0.03, 0.03),
                      p=0.8),
        A.ToGray(p=0.05),
        A.GaussNoise(std_range=(0.01, 0.06), p=0.3),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        A.ImageCompression(quality_range=(40, 95), p=0.3),
    ])


@dataclass
class Sample:
    image: np.ndarray  # RGB uint8 (S, S, 3)
    mask: np.ndarray  # float32 (S, S) in [0, 1]
    kind: str  # "composite", "plain", "real", "empty", or "scene:<kind>" / "negative" with spec.scenes


@dataclass
class CompositeSpec:
    """Probabilities of each sample kind and of the number of hands."""

    p_plain: float = 0.12
    p_empty: float = 0.07
    p_real: float = 0.0  # real photos with their (pseudo-)labelled masks, augmented like the rest
    n_hands_p: tuple[float, float, float] = (0.7, 0.2, 0.1)
    canvas_scale: float = 1.25  # composite canvas side relative to the crop size (RandomResizedCrop zooms)
    harmonize: bool = True  # hide the paste (see paste_hand); False = the v1 pipeline
    scenes: dict[str, float] = field(default_factory=dict)  # scene kind -> weight among composites ({}: v3 mix)
    p_distract: float = 0.0  # composites with hands that also get hard-negative distractors behind the hands
    p_photo: float = 0.0  # any sample: camera realism (photometric) before albumentations
    extra: dict = field(default_factory=dict)


class CompositeDataset:
    """Map-style data set of ``length`` samples; sample ``i`` of epoch ``e`` is a pure function of (seed, e, i).

    With ``augment=False`` every sample is a plain webcam photo resized to ``size`` (the ablation's base).
    Returns ``(x, y)``: float32 CHW normalised (ImageNet mean / std) and float32 (1, S, S) mask.
    """

    def __init__(self, hands: Sequence[Hand], plain: Sequence[tuple[np.ndarray, np.ndarray]],
                 backgrounds: Sequence[np.ndarray], *, size: int = 160, length: int = 2000, seed: int = 0,
                 augment: bool = True, spec: CompositeSpec | None = None,
                 bg_weights: Sequence[float] | None = None,
                 real: Sequence[tuple[np.ndarray, np.ndarray]] = (), bg_names: Sequence[str] | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if augment and (not hands or not backgrounds):
            raise ValueError("compositing needs at least one hand and one background")
        if not plain and (not augment or (spec or CompositeSpec()).p_plain > 0):
            raise ValueError("plain samples requested but no plain webcam images given")
        self.hands, self.plain, self.backgrounds = list(hands), list(plain), list(backgrounds)
        self.real = list(real)
        if (spec or CompositeSpec()).p_real > 0 and not self.real:
            raise ValueError("real samples requested (p_real > 0) but no real photos given")
        if bg_weights is not None:
            w = np.asarray(bg_weights, np.float64)
            if w.shape != (len(self.backgrounds),) or w.min() < 0 or w.sum() <= 0:
                raise ValueError("bg_weights must be one non-negative weight per background")
            self.bg_p: np.ndarray | None = w / w.sum()
        else:
            self.bg_p = None
        self.size, self.length, self.seed, self.augment = size, length, seed, augment
        self.spec = spec or CompositeSpec()
        self.mean, self.std = tuple(mean), tuple(std)
        unknown = set(self.spec.scenes) - set(SCENES)
        if unknown:
            raise ValueError(f"unknown scene kinds {sorted(unknown)}; choose from {SCENES}")
        names = list(bg_names) if bg_names is not None else []
        if names and len(names) != len(self.backgrounds):
            raise ValueError("bg_names must name every background")
        # backgrounds by role: face photos (hand-over-face scenes) and the rest (egocentric / pale scenes)
        self.bg_names = names or None
        self.face_idx = [i for i, n in enumerate(names) if n.startswith("facemask/")]
        self.scene_idx = [i for i in range(len(self.backgrounds)) if i not in set(self.face_idx)] \
            or list(range(len(self.backgrounds)))
        self.epoch = 0
        self._aug = None

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def sample(self, index: int) -> Sample:
        rng = self.rng(index)
        s = self.size
        if not self.augment:
            img, m = self.plain[int(rng.integers(len(self.plain)))]
            return Sample(cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA),
                          cv2.resize(m, (s, s), interpolation=cv2.INTER_LINEAR), "plain")
        if self._aug is None:
            self._aug = build_augment(s)
        u = rng.random()
        p_real = self.spec.p_real if self.real else 0.0
        if self.plain and u < self.spec.p_plain:
            img, m = self.plain[int(rng.integers(len(self.plain)))]
            kind = "plain"
        elif u < self.spec.p_plain + p_real:
            img, m = self.real[int(rng.integers(len(self.real)))]
            kind = "real"
        else:
            c = int(round(s * self.spec.canvas_scale))
            if u < self.spec.p_plain + p_real + self.spec.p_empty:
                n, kind = 0, "empty"
            else:
                n = int(rng.choice(3, p=list(self.spec.n_hands_p))) + 1
                kind = "composite"
            if self.spec.scenes and kind == "composite":
                img, m, kind = self._scene(rng, c, n)
            else:
                hands = [self.hands[int(rng.integers(len(self.hands)))] for _ in range(n)]
                k = int(rng.choice(len(self.backgrounds), p=self.bg_p)) if self.bg_p is not None \
                    else int(rng.integers(len(self.backgrounds)))
                bg = self.backgrounds[k]
                img, m = composite(bg, hands, rng, (c, c), harmonize=self.spec.harmonize)
        if self.spec.p_photo > 0 and rng.random() < self.spec.p_photo:
            img = photometric(img, rng)
        self._aug.set_random_seed(int(rng.integers(2**31 - 1)))
        out = self._aug(image=img, mask=m)
        return Sample(np.ascontiguousarray(out["image"]), np.clip(out["mask"], 0, 1).astype(np.float32), kind)

    def _scene(self, rng: np.random.Generator, c: int, n: int) -> tuple[np.ndarray, np.ndarray, str]:
        """One composite of a scene kind drawn from ``spec.scenes``; returns (image, mask, kind)."""
        names = sorted(self.spec.scenes)
        w = np.array([self.spec.scenes[k] for k in names], np.float64)
        scene = names[int(rng.choice(len(names), p=w / w.sum()))]
        if scene == "face" and not self.face_idx:
            scene = "mixed"
        harm = self.spec.harmonize

        def pick(idx: list[int]) -> np.ndarray:
            return self.backgrounds[idx[int(rng.integers(len(idx)))]]

        def hands(k: int) -> list[Hand]:
            return [self.hands[int(rng.integers(len(self.hands)))] for _ in range(k)]

        if scene == "face" and self.face_idx:
            img, m = composite(pick(self.face_idx), hands(1 + int(rng.random() < 0.3)), rng, (c, c), harmonize=harm,
                               placement=FACE_PLACEMENT, crop=(0.75, 1.0))
        elif scene == "ego":
            img, m = composite(pick(self.scene_idx), hands(1 + int(rng.random() < 0.45)), rng, (c, c),
                               harmonize=harm, placement=EGO_PLACEMENT,
                               distractors=int(rng.integers(1, 3)) if rng.random() < 0.5 else 0)
        elif scene == "negative":  # no hand: faces, skin-coloured / strongly coloured / striped things, shadows
            bg = pick(self.face_idx) if self.face_idx and rng.random() < 0.35 else pick(list(range(len(
                self.backgrounds))))
            img, m = composite(bg, [], rng, (c, c), harmonize=harm, distractors=int(rng.integers(1, 4)))
            return img, m, "negative"
        elif scene == "pale":
            img, m = composite(pick(self.scene_idx), hands(n), rng, (c, c), harmonize=harm, pale=True)
        else:
            k = int(rng.choice(len(self.backgrounds), p=self.bg_p)) if self.bg_p is not None \
                else int(rng.integers(len(self.backgrounds)))
            d = int(rng.integers(1, 3)) if rng.random() < self.spec.p_distract else 0
            img, m = composite(self.backgrounds[k], hands(n), rng, (c, c), harmonize=harm, distractors=d)
        return img, m, f"scene:{scene}"

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        smp = self.sample(index)
        return to_input(smp.image, self.mean, self.std), smp.mask[None].astype(np.float32)


def to_input(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
             std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) normalised: (x / 255 - mean) / std."""
    x = image.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def fixed_set(dataset: CompositeDataset, n: int, *, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of ``dataset`` at a fixed epoch, stacked: a validation set that is the same every time."""
    old = dataset.epoch
    dataset.epoch = epoch
    try:
        xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    finally:
        dataset.epoch = old
    return np.stack(xs), np.stack(ys)


def load_hands(records: Sequence[KeyedRecord], *, despill: bool = True, long_side: int | None = None,
               cut: bool = True) -> tuple[list[Hand], list[tuple[np.ndarray, np.ndarray]]]:
    """Read keyed records: cut-out hands (for compositing) and (photo, mask) pairs (plain samples).

    ``despill`` removes green-screen spill (keyed photos only); ``long_side`` caps the photo size (memory);
    ``cut=False`` skips the cut-outs (photos that are only scored, e.g. a validation set)."""
    hands: list[Hand] = []
    plain: list[tuple[np.ndarray, np.ndarray]] = []
    for r in records:
        img = _read_rgb(r.image)
        m = _read_mask(r.mask)
        if m.shape != img.shape[:2]:
            m = cv2.resize(m, img.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        if long_side and max(img.shape[:2]) > long_side:
            img = _fit_long(img, long_side)
            m = cv2.resize(m, img.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        plain.append((img, m))
        hand = make_hand(img, m, despill=despill) if cut else None
        if hand is not None:
            hands.append(hand)
    return hands, plain
