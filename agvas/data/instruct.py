"""Anomaly-Instruct records: the five-field schema, and a rule-based writer that fills it without an LMM.

The paper has a large multimodal model write each record (see `agvas.data.annotate`); the rule
writer exists so that synthetic data (whose generator knows exactly what it painted) and real sets
(where only the mask is known) get records too, offline and for free. Its phrasing is varied so that
the model cannot learn one sentence by heart, but deterministic for a seed so runs are repeatable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

FIELD_NAMES: tuple[str, ...] = ("Expectation", "Observation", "Diagnosis", "Summary", "Explanation")
"""The paper's field names, in its order; records are serialised with these keys."""


class RecordError(ValueError):
    """A record that does not follow the five-field schema; the message names the field at fault."""


@dataclass(frozen=True)
class InstructRecord:
    """One Anomaly-Instruct annotation (paper Sec. 3.3).

    expectation: the object's normal appearance. observation: the concrete deviations (location,
    shape, size, texture). diagnosis: why they break normal consistency. summary: a concise,
    grounded description of what to segment. explanation: one paragraph tying it all together.
    """

    expectation: str
    observation: str
    diagnosis: str
    summary: str
    explanation: str

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            name = f.name.capitalize()
            if not isinstance(value, str):
                raise RecordError(f"field {name!r} must be a string, got {type(value).__name__}")
            if not value.strip():
                raise RecordError(f"field {name!r} is empty")

    @classmethod
    def from_dict(cls, raw: object) -> InstructRecord:
        """Validate a parsed JSON object; keys match the field names case-insensitively.

        Case is forgiven because LMMs write "expectation" as often as "Expectation"; extra keys are
        ignored because some models add a note, and rejecting those would only cost a retry.
        """
        if not isinstance(raw, Mapping):
            raise RecordError(
                f"expected a JSON object with {', '.join(FIELD_NAMES)}, got {type(raw).__name__}"
            )
        by_lower = {str(k).strip().lower(): v for k, v in raw.items()}
        missing = [n for n in FIELD_NAMES if n.lower() not in by_lower]
        if missing:
            raise RecordError(f"missing field(s) {', '.join(missing)}")
        values = {n.lower(): by_lower[n.lower()] for n in FIELD_NAMES}
        return cls(**{k: v.strip() if isinstance(v, str) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, str]:
        return {n: getattr(self, n.lower()) for n in FIELD_NAMES}


def read_records(path: str | os.PathLike,
                 on_bad: Callable[[int, str], None] | None = None) -> dict[str, InstructRecord]:
    """img_path -> record from an annotation JSONL file (as `agvas data annotate` writes it).

    A trailing partial line (a writer killed mid-line) is ignored; any other bad line is an error,
    because it means the file was edited or corrupted and silently dropping it would hide that —
    unless `on_bad(line_number, message)` is given, for readers that count bad lines and go on.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] != b"":
        lines = lines[:-1]  # no final newline: the last line was never finished
    out: dict[str, InstructRecord] = {}
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            out[str(obj["img_path"])] = InstructRecord.from_dict(obj["record"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecordError) as err:
            message = f"{path}:{i}: not a valid annotation line ({err})"
            if on_bad is None:
                raise RecordError(message) from None
            on_bad(i, message)
    return out


# ----------------------------------------------------------------------------------------------
# Geometry of a mask, in words


_GRID = (
    ("top-left", "top", "top-right"),
    ("left", "center", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)
_SIZE_WORDS = (
    (0.005, "tiny"), (0.02, "small"), (0.08, "medium-sized"), (0.2, "large"), (float("inf"), "very large"),
)


@dataclass(frozen=True)
class MaskGeometry:
    """What a mask says about its anomaly: where (3x3 grid word), how big, what shape, how many parts."""

    location: str
    area_fraction: float
    size: str
    elongation: float
    shape: str
    orientation: str | None
    regions: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def grid_location(cy: float, cx: float, height: int, width: int) -> str:
    """The cell of a 3x3 grid that holds the point, in words ("top-left", "center", ...)."""
    row = min(2, max(0, int(3 * cy / max(height, 1))))
    col = min(2, max(0, int(3 * cx / max(width, 1))))
    return _GRID[row][col]


def size_word(area_fraction: float) -> str:
    return next(word for limit, word in _SIZE_WORDS if area_fraction < limit)


def _moments(ys: np.ndarray, xs: np.ndarray) -> tuple[float, str | None]:
    """Elongation (major/minor axis ratio) and orientation from the second central moments."""
    if ys.size < 2:
        return 1.0, None
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0  # a pixel has width 1
    evals, evecs = np.linalg.eigh(cov)
    elongation = float(np.sqrt(evals[1] / evals[0]))
    vx, vy = evecs[:, 1]
    angle = abs(np.degrees(np.arctan2(vy, vx))) % 180
    angle = min(angle, 180 - angle)  # 0 = horizontal, 90 = vertical
    orientation = "horizontal" if angle < 22.5 else "vertical" if angle > 67.5 else "diagonal"
    return elongation, orientation


def _shape_word(elongation: float, fill: float) -> str:
    if elongation >= 4.0:
        return "thin, line-like"
    if elongation >= 2.0:
        return "elongated"
    return "roughly round" if fill >= 0.6 else "irregular"


def mask_geometry(mask: np.ndarray) -> MaskGeometry:
    """Describe a non-empty {0,1} mask: location of its centroid, size, shape of its largest part."""
    m = np.asarray(mask) > 0
    if m.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {m.shape}")
    if not m.any():
        raise ValueError("mask is empty: a normal image has no anomaly geometry")
    h, w = m.shape
    labels, n = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
    ys, xs = np.nonzero(m)
    area = float(ys.size) / (h * w)
    sizes = np.bincount(labels.ravel())[1:]
    # Several regions: name each distinct grid cell, largest region first (the centroid of the
    # union can fall where there is no anomaly at all).
    cells: list[str] = []
    for lab in np.argsort(-sizes, kind="stable")[:3] + 1:
        ry, rx = np.nonzero(labels == lab)
        cell = grid_location(float(ry.mean()), float(rx.mean()), h, w)
        if cell not in cells:
            cells.append(cell)
    location = cells[0] if len(cells) == 1 else ", ".join(cells[:-1]) + " and " + cells[-1]
    largest = labels == (int(np.argmax(sizes)) + 1)
    ly, lx = np.nonzero(largest)
    elongation, orientation = _moments(ly, lx)
    fill = ly.size / ((ly.max() - ly.min() + 1) * (lx.max() - lx.min() + 1))
    shape = _shape_word(elongation, fill)
    return MaskGeometry(
        location=location,
        area_fraction=area,
        size=size_word(area),
        elongation=elongation,
        shape=shape,
        orientation=orientation if elongation >= 2.0 else None,
        regions=int(n),
        bbox=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
    )


def region_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1, exclusive) of the mask's 8-connected regions."""
    labels, _ = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), dtype=bool))
    return [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels) if s]


# ----------------------------------------------------------------------------------------------
# The rule writer


@dataclass(frozen=True)
class Facts:
    """Everything the writer knows about one anomaly; each source of knowledge is turned into this."""

    object: str
    texture: bool = False
    kind: str | None = None
    location: str | None = None
    size: str | None = None
    area_fraction: float | None = None
    shape: str | None = None
    colour: str | None = None
    regions: int = 1
    orientation: str | None = None


def object_name(cls_name: str | None) -> str:
    """A class name as words: "metal_nut" -> "metal nut", "pcb1" -> "pcb"; None -> "object"."""
    if not cls_name:
        return "object"
    name = cls_name.replace("_", " ").replace("-", " ").strip().rstrip("0123456789").strip()
    return name or "object"


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _plural(word: str) -> str:
    last = word.split()[-1] if word.split() else word
    if last.endswith(("s", "sh", "ch", "x", "z")):
        return word + "es"
    if last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def _first(meta: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        if n in meta and meta[n] not in (None, ""):
            return meta[n]
    return None


def _where(location: str | None, surface: str) -> str:
    if not location:
        return f"on the {surface}"
    loc = str(location).strip()
    if loc in ("center", "centre", "middle"):
        return f"near the center of the {surface}"
    if loc.startswith(("in ", "on ", "at ", "near ", "along ", "across ")):
        return loc
    parts = "parts" if " and " in loc else "part"
    return f"in the {loc} {parts} of the {surface}"


def _pct(area: float | None) -> str | None:
    if area is None:
        return None
    pct = 100.0 * area
    return f"{pct:.1f}%" if pct < 10 else f"{pct:.0f}%"


_KIND_REASONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("crack", "scratch", "cut", "line", "fissure", "tear"),
     "a break like this interrupts the continuity of a surface that should run unbroken"),
    (("hole", "missing", "pit", "dent", "gap", "chip", "broken"),
     "material that belongs there is missing, so the structure is no longer intact"),
    (("stain", "spot", "colour", "color", "discolor", "contamination", "dirt", "ink", "oil", "liquid"),
     "this colour never occurs on the normal material"),
    (("bump", "bulge", "deform", "bent", "fold", "swelling", "wrinkle"),
     "the regular geometry that a normal sample keeps is deformed there"),
    (("thread", "hair", "fibre", "fiber", "foreign", "particle"),
     "foreign material lies on top of an otherwise clean surface"),
    (("polyp", "lesion", "tumor", "tumour", "growth"),
     "this tissue rises out of, or differs from, the smooth healthy surface around it"),
)

_GENERIC_REASON = "the colour and texture there differ from the surrounding normal pattern"


def _reason(kind: str | None) -> str:
    k = (kind or "").lower()
    for keys, reason in _KIND_REASONS:
        if any(key in k for key in keys):
            return reason
    return _GENERIC_REASON


_TEXTURE_FAMILIES = frozenset({"weave", "wood", "metal", "grid", "marble", "carpet", "leather", "tile", "fabric"})
_KIND_NOUNS = {"missing": "missing region", "contamination": "contamination spot", "good": "defect"}


def class_noun(family: str) -> tuple[str, bool]:
    """A class or family name as (noun, is_texture), so templates and records read as English.

    "dtd_bubbly" -> ("bubbly texture", True), "round_parts" -> ("round part", False),
    "wood" -> ("wood surface", True), "metal_nut" -> ("metal nut", False).
    """
    fam = family.strip().lower()
    if fam.startswith("dtd_"):
        return f"{object_name(fam[4:])} texture", True
    if fam.endswith("parts"):
        return object_name(fam[:-1]), False
    if fam in _TEXTURE_FAMILIES or "texture" in fam or "surface" in fam:
        return f"{object_name(fam)} surface" if fam in _TEXTURE_FAMILIES else object_name(fam), True
    return object_name(fam), False


def _count(value: Any) -> int | None:
    if isinstance(value, list | tuple):
        return len(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def facts_from_metadata(meta: Mapping[str, Any], cls_name: str | None = None) -> Facts:
    """Read a synthetic generator's per-sample metadata (a plain dict) into Facts.

    The object is named by the metadata's `object`, else `cls_name`, else its `family`; whether it
    is a texture (which changes the Expectation) follows the family.

    Several spellings of each key are accepted so that the writer does not have to move in step with
    the generator: kind/defect/defect_kind, colour/color, n_regions/num_regions/regions (a count or a
    list of regions), area_fraction/area; an explicit `object` wins over the `family` name.
    """
    family = _first(meta, "family", "domain")
    named = cls_name or family  # the caller's class name beats the generator's family name
    obj, texture = class_noun(str(named)) if named else ("", False)
    if family:
        texture = class_noun(str(family))[1]
    explicit = _first(meta, "object", "texture_name")
    if explicit:
        obj = object_name(str(explicit))
    area = _first(meta, "area_fraction", "area", "area_frac")
    regions = next((c for c in (_count(meta.get(k)) for k in ("n_regions", "num_regions", "regions", "count"))
                    if c is not None), None)
    size = _first(meta, "size", "size_word", "relative_size")
    kind = _first(meta, "kind", "defect_kind", "defect", "defect_type", "type")
    return Facts(
        object=obj or ("surface" if texture else "object"),
        texture=texture,
        kind=_KIND_NOUNS.get(str(kind), str(kind)) if kind else None,
        location=_first(meta, "location", "where", "position"),
        size=str(size) if size else (size_word(float(area)) if area is not None else None),
        area_fraction=float(area) if area is not None else None,
        shape=_first(meta, "shape", "shape_word"),
        colour=_first(meta, "colour", "color", "colour_word"),
        regions=max(1, regions) if regions is not None else 1,
        orientation=_first(meta, "orientation"),
    )


def _contrast_word(image: np.ndarray, mask: np.ndarray) -> str | None:
    """"darker"/"brighter" when the anomaly's mean luminance stands out from a ring around it."""
    m = np.asarray(mask) > 0
    if image is None or not m.any() or m.all():
        return None
    lum = np.asarray(image, dtype=np.float64)
    lum = lum.mean(axis=2) if lum.ndim == 3 else lum
    ring = ndimage.binary_dilation(m, iterations=max(2, int(0.03 * max(m.shape)))) & ~m
    if not ring.any():
        return None
    diff = float(lum[m].mean() - lum[ring].mean())
    if abs(diff) < 12:
        return None
    return "darker" if diff < 0 else "brighter"


def facts_from_mask(mask: np.ndarray, cls_name: str | None, image: np.ndarray | None = None,
                    defect: str | None = None, texture: bool | None = None) -> Facts:
    """Facts for a real sample, where only the mask (and optionally the pixels) is known.

    `texture` None: guessed from the class name (wood, carpet, dtd_* ... are textures).
    """
    g = mask_geometry(mask)
    contrast = _contrast_word(image, mask) if image is not None else None
    noun, is_texture = class_noun(cls_name) if cls_name else ("object", False)
    return Facts(
        object=noun, texture=is_texture if texture is None else texture, kind=defect, location=g.location,
        size=g.size, area_fraction=g.area_fraction, shape=g.shape, colour=contrast, regions=g.regions,
        orientation=g.orientation,
    )


_EXPECT_OBJECT = (
    "A normal {obj} has an intact, regular shape and a clean, evenly coloured surface, with no holes, "
    "cracks, stains or missing parts.",
    "In its normal state the {obj} looks complete and uniform: its outline is regular and its surface "
    "shows no marks, breaks or foreign material.",
    "A defect-free {obj} should appear whole, with consistent colour and texture and a smooth, "
    "undamaged surface.",
)
_EXPECT_TEXTURE = (
    "A normal {obj} shows a uniform, continuous texture whose colour and pattern stay consistent "
    "across the whole image.",
    "In its normal state the {obj} repeats the same pattern everywhere, with even colour and no "
    "breaks, marks or foreign material.",
    "A defect-free {obj} has a homogeneous appearance: the same texture, tone and structure from one "
    "side of the image to the other.",
)


def _comparative(word: str) -> bool:
    return word.startswith("more ") or (word.endswith("er") and word not in ("silver", "amber"))


def _colour_clause(colour: str, plural: bool) -> tuple[str | None, str | None]:
    """A colour as an adjective ("dark") or, when it is relative ("darker and reddish"), a clause."""
    c = colour.strip()
    if not c:
        return None, None
    be, look, its = ("are", "look", "their") if plural else ("is", "looks", "its")
    if " than " in c or c.startswith(("similar", "different")):
        return None, f"which {be} {c}"
    parts = [p.strip() for p in c.split(" and ")]
    if len(parts) == 1 and " " not in c and not _comparative(c):
        return c, None
    if all(_comparative(p) for p in parts):
        return None, f"which {look} {c} than {its} surroundings"
    return None, f"which {look} {c} compared with {its} surroundings"


def _noun_phrase(f: Facts, plural: bool = False) -> tuple[str, str | None]:
    """("small dark elongated scratch", optional relative clause) from whatever facts are known."""
    kind = f.kind or "defect"
    adjective, clause = _colour_clause(str(f.colour), plural) if f.colour else (None, None)
    words = [str(w) for w in (f.size, adjective) if w]
    if f.shape and str(f.shape) not in kind:
        words.append(str(f.shape))
    words.append(_plural(kind) if plural else kind)
    return " ".join(words), clause


def _placed(noun: tuple[str, str | None], where: str) -> str:
    """Noun, place, then the colour clause: "a scratch near the center, which looks darker ..."."""
    phrase, clause = noun
    return f"{phrase} {where}" + (f", {clause}" if clause else "")


def _count_phrase(f: Facts, where: str) -> str:
    if f.regions <= 1:
        phrase, clause = _noun_phrase(f)
        return _placed((f"{_article(phrase)} {phrase}", clause), where)
    phrase, clause = _noun_phrase(f, plural=True)
    return _placed((f"{f.regions} {phrase}", clause), where)


def write_record(facts: Facts, seed: int | np.random.Generator = 0) -> InstructRecord:
    """Fill the five fields from Facts, choosing among phrasings with the seed."""
    rng = _rng(seed)
    if not facts.kind:  # chosen once, so that every field names the anomaly the same way
        facts = replace(facts, kind=_pick(rng, ("defect", "anomaly", "abnormal region")))
    obj = facts.object
    surface = obj
    expectation = _pick(rng, _EXPECT_TEXTURE if facts.texture else _EXPECT_OBJECT).format(obj=obj)
    where = _where(facts.location, surface)
    thing = _count_phrase(facts, where)  # "a small scratch in the top-left part of the wood, which ..."
    many = facts.regions > 1
    pct = _pct(facts.area_fraction)
    extent = f" {'Together they cover' if many else 'It covers'} about {pct} of the image." if pct else ""
    orient = f" It runs in a {facts.orientation} direction." if facts.orientation and not many else ""
    be = "are" if many else "is"
    observation = _pick(rng, (
        f"There {be} {thing}.{extent}{orient}",
        f"I can see {thing}.{extent}{orient}",
        f"The image shows {thing}.{extent}{orient}",
    ))
    reason = _reason(facts.kind)
    it = "they" if many else "it"
    diagnosis = _pick(rng, (
        f"This is abnormal because {reason}; a normal {obj} shows nothing like it.",
        f"The {facts.kind} does not belong to a normal {obj}: {reason}.",
        f"Compared with the expected appearance, {it} {be} a clear deviation, since {reason}.",
    ))
    target = _placed(_noun_phrase(facts, plural=many), where)
    summary = _pick(rng, (
        f"The anomaly to segment is the {target}.",
        f"Segment the {target}.",
        f"The target region is the {target}.",
    ))
    explanation = _pick(rng, (
        f"{expectation} Here, however, there {be} {thing}. Because {reason}, {it} {be} "
        f"anomalous, and the segmentation covers exactly {'these regions' if many else 'this region'}.",
        f"The {obj} should look regular and uniform. The segmented {'regions are' if many else 'region is'} "
        f"{thing}.{extent} {reason[0].upper() + reason[1:]}, which is why {it} {be} marked as anomalous.",
        f"Against the expected appearance of a normal {obj}, the mask highlights {thing}. "
        f"{'They are anomalies' if many else 'It is an anomaly'} because {reason}.",
    ))
    return InstructRecord(expectation, observation, diagnosis, summary, explanation)


def record_from_metadata(meta: Mapping[str, Any], cls_name: str | None = None,
                         seed: int | np.random.Generator = 0) -> InstructRecord:
    """A record for a synthetic anomaly, from the generator's metadata dict."""
    return write_record(facts_from_metadata(meta, cls_name), seed)


def record_from_mask(mask: np.ndarray, cls_name: str | None, image: np.ndarray | None = None,
                     defect: str | None = None, texture: bool | None = None,
                     seed: int | np.random.Generator = 0) -> InstructRecord:
    """A record for a real anomalous sample from its mask geometry (and pixels, for contrast)."""
    return write_record(facts_from_mask(mask, cls_name, image, defect, texture), seed)


def normal_record(cls_name: str | None = None, texture: bool | None = None,
                  seed: int | np.random.Generator = 0) -> InstructRecord:
    """A record-shaped description of a normal image: every field says that there is no anomaly.

    Normal images are trained with the same prompts as anomalous ones, so they need the same fields.
    """
    rng = _rng(seed)
    obj, is_texture = class_noun(cls_name) if cls_name else ("surface" if texture else "object", False)
    texture = is_texture if texture is None else texture
    expectation = _pick(rng, _EXPECT_TEXTURE if texture else _EXPECT_OBJECT).format(obj=obj)
    observation = _pick(rng, (
        f"The {obj} looks normal: its colour, texture and shape are consistent everywhere, and no "
        "anomaly is visible.",
        f"I see no anomaly on this {obj}; every part of it matches its expected appearance.",
        f"Nothing in the image deviates from a normal {obj}; there is no defect.",
    ))
    diagnosis = _pick(rng, (
        f"Since nothing breaks the material or structural consistency of the {obj}, it is normal.",
        f"There is no deviation to explain: the {obj} keeps its normal structure and appearance.",
    ))
    summary = _pick(rng, (
        "There is no anomaly to segment; the mask is empty.",
        f"No region of this {obj} is anomalous, so nothing should be segmented.",
    ))
    explanation = _pick(rng, (
        f"{expectation} This image matches that description everywhere, so there is no anomaly and "
        "the segmentation is empty.",
        f"The {obj} shows its expected appearance without any defect; therefore no region is marked "
        "as anomalous.",
    ))
    return InstructRecord(expectation, observation, diagnosis, summary, explanation)
