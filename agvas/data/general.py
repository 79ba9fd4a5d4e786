"""General (non-anomaly) training sources: procedural referring segmentation, procedural VQA, LISA folders.

The paper keeps LISA's general segmentation data (ADE20K, COCO, ...) and LLaVA-150K VQA in the mix so
that [SEG] stays tied to "the thing the text refers to" and the LMM keeps talking. Those sets cannot be
downloaded here, so scenes of coloured shapes stand in for them: each is drawn from a seed, the
referred object's mask is exact, and questions about colours and counts have checkable answers. Real
presets can point `LisaFolderSource` at a folder in LISA's ReasonSeg format instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from agvas.anchors import ANCHOR_TOKENS, IMAGE_PLACEHOLDER, anchor_string
from agvas.io import DataError, read_image_rgb, read_json

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "orange": (245, 140, 30), "purple": (140, 60, 190), "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ellipse", "diamond", "hexagon")

REFER_QUESTIONS: tuple[str, ...] = (
    "Please segment the {ref}.",
    "Can you segment the {ref} in this image?",
    "What is the {ref} in this image? Please respond with a segmentation mask.",
    "Where is the {ref}? Please output the segmentation mask.",
    "Segment the {ref}.",
    "Please output the segmentation mask of the {ref}.",
    "Find the {ref} and segment it.",
)
SEG_ANSWERS: tuple[str, ...] = (
    "Sure, it is {anchors}.",
    "Sure, {anchors}.",
    "It is {anchors}.",
    "Sure, the segmentation result is {anchors}.",
    "{anchors}.",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    mask: np.ndarray  # bool HxW
    center: tuple[float, float]  # x, y


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "star":
        radii = [r if i % 2 == 0 else 0.45 * r for i in range(10)]
        thetas = [angle + i * np.pi / 5 for i in range(10)]
    else:
        n = {"square": 4, "triangle": 3, "diamond": 4, "hexagon": 6}[kind]
        base = angle + (np.pi / 4 if kind == "square" else 0.0)
        thetas = [base + 2 * np.pi * i / n for i in range(n)]
        radii = [r * (1.0 if kind != "diamond" or i % 2 == 0 else 0.6) for i in range(n)]
    return [(cx + rr * np.cos(t), cy + rr * np.sin(t)) for rr, t in zip(radii, thetas, strict=True)]


def _draw_shape(kind: str, size: int, cx: float, cy: float, r: float, rng: np.random.Generator) -> np.ndarray:
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif kind == "ellipse":
        a, b = r, r * float(rng.uniform(0.45, 0.7))
        if rng.random() < 0.5:
            a, b = b, a
        draw.ellipse([cx - a, cy - b, cx + a, cy + b], fill=1)
    else:
        angle = float(rng.uniform(-0.3, 0.3)) - np.pi / 2  # point up, give or take
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=1)
    return np.asarray(layer, dtype=bool)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A muted grey-ish gradient with noise: distinct from every named colour, not a flat fill."""
    base = rng.uniform(95, 165) + rng.uniform(-12, 12, size=3)
    ramp = np.linspace(-1, 1, size)
    gx, gy = rng.uniform(-15, 15, size=2)
    img = base[None, None, :] + (gx * ramp[None, :, None] + gy * ramp[:, None, None])
    img = img + rng.normal(0, 6, size=(size, size, 3))
    return img


def shapes_scene(rng: np.random.Generator, size: int = 256, n_shapes: tuple[int, int] = (2, 5)
                 ) -> tuple[np.ndarray, list[Shape]]:
    """An image of 2-5 non-overlapping shapes, every (colour, kind) pair unique so references resolve."""
    n = int(rng.integers(n_shapes[0], n_shapes[1] + 1))
    pairs = [(c, k) for c in COLOURS for k in SHAPES]
    chosen = rng.choice(len(pairs), size=n, replace=False)
    img = _background(size, rng)
    occupied = np.zeros((size, size), dtype=bool)
    shapes: list[Shape] = []
    for idx in chosen:
        colour, kind = pairs[int(idx)]
        for _ in range(40):  # rejection sampling; a shape that never fits is left out
            r = float(rng.uniform(0.08, 0.18)) * size
            cx, cy = rng.uniform(r, size - r, size=2)
            m = _draw_shape(kind, size, float(cx), float(cy), r, rng)
            if m.sum() > 20 and not (m & occupied).any():
                break
        else:
            continue
        occupied |= m
        rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-15, 16, size=3), 0, 255)
        img[m] = rgb
        shapes.append(Shape(colour, kind, m, (float(cx), float(cy))))
    return np.clip(img, 0, 255).astype(np.uint8), shapes


def _reference(target: Shape, shapes: list[Shape], rng: np.random.Generator) -> str:
    """The shortest unambiguous names for the target, one picked at random, else "colour kind"."""
    options = [f"{target.colour} {target.kind}"]
    if sum(s.colour == target.colour for s in shapes) == 1:
        options += [f"{target.colour} shape", f"{target.colour} object"]
    if sum(s.kind == target.kind for s in shapes) == 1:
        options.append(target.kind)
    return _pick(rng, tuple(options))


def seg_turns(question: str, anchors: tuple[str, ...], rng: np.random.Generator) -> list[dict[str, str]]:
    answer = _pick(rng, SEG_ANSWERS).format(anchors=anchor_string(anchors))
    return [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question}"},
            {"role": "assistant", "content": answer}]


def seg_sample(image: np.ndarray, mask: np.ndarray, question: str, anchors: tuple[str, ...],
               rng: np.random.Generator) -> dict[str, Any]:
    """A general-segmentation sample: the question, an answer with the anchors, the referred mask."""
    return {"image": image, "mask": mask, "conversation": seg_turns(question, anchors, rng),
            "has_mask": True, "source": "general", "anomalous": False}


class ShapeReferringSource:
    """Referring segmentation on procedural shapes; the GT of [SEG]/[ANO] is the referred shape."""

    def __init__(self, image_size: int = 256, anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        self.image_size = image_size
        self.anchors = tuple(anchors)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        image, shapes = shapes_scene(rng, self.image_size)
        while not shapes:  # cannot happen with the default sizes, but never return an empty target
            image, shapes = shapes_scene(rng, self.image_size)
        target = shapes[int(rng.integers(len(shapes)))]
        question = _pick(rng, REFER_QUESTIONS).format(ref=_reference(target, shapes, rng))
        return seg_sample(image, target.mask.astype(np.uint8), question, self.anchors, rng)


def _count_answer(n: int, what: str) -> str:
    if n == 0:
        return f"There are no {what}s."
    if n == 1:
        return f"There is one {what}."
    return f"There are {n} {what}s."


def _vqa_pair(shapes: list[Shape], rng: np.random.Generator) -> tuple[str, str]:
    kind = int(rng.integers(4))
    if kind == 0:
        return (_pick(rng, ("How many shapes are in this image?", "How many objects can you see?",
                            "Count the shapes in the picture.")), _count_answer(len(shapes), "shape"))
    if kind == 1:
        colour = _pick(rng, tuple(COLOURS))
        n = sum(s.colour == colour for s in shapes)
        return f"How many {colour} shapes are there?", _count_answer(n, f"{colour} shape")
    if kind == 2:
        unique = [s for s in shapes if sum(t.kind == s.kind for t in shapes) == 1]
        if unique:
            s = unique[int(rng.integers(len(unique)))]
            return (_pick(rng, (f"What colour is the {s.kind}?", f"Which colour does the {s.kind} have?")),
                    f"The {s.kind} is {s.colour}.")
    if shapes and rng.random() < 0.5:  # ask about a shape that is there as often as one that is not
        s = shapes[int(rng.integers(len(shapes)))]
        colour, kind_name = s.colour, s.kind
    else:
        colour, kind_name = _pick(rng, tuple(COLOURS)), _pick(rng, SHAPES)
    present = any(s.colour == colour and s.kind == kind_name for s in shapes)
    art = "an" if colour[0] in "aeiou" else "a"
    answer = f"Yes, there is {art} {colour} {kind_name}." if present else f"No, there is no {colour} {kind_name}."
    return f"Is there {art} {colour} {kind_name} in the image?", answer


class ShapeVQASource:
    """Questions about colours and counts of procedural shapes: text answers, no anchors, no mask."""

    def __init__(self, image_size: int = 256, max_turns: int = 3) -> None:
        self.image_size = image_size
        self.max_turns = max_turns

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        image, shapes = shapes_scene(rng, self.image_size)
        conversation: list[dict[str, str]] = []
        for i in range(int(rng.integers(1, self.max_turns + 1))):
            q, a = _vqa_pair(shapes, rng)
            conversation.append({"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{q}" if i == 0 else q})
            conversation.append({"role": "assistant", "content": a})
        return {"image": image, "mask": np.zeros(image.shape[:2], dtype=np.uint8),
                "conversation": conversation, "has_mask": False, "source": "vqa", "anomalous": False}


# ----------------------------------------------------------------------------------------------
# LISA's ReasonSeg folder format

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
REASON_SUFFIXES: tuple[str, ...] = (
    "Please output the segmentation mask.",
    "Please respond with a segmentation mask.",
    "Output the segmentation mask.",
)
PHRASE_QUESTIONS: tuple[str, ...] = (
    "What is {text} in this image? Please output the segmentation mask.",
    "Please segment {text} in this image.",
    "Can you segment {text}?",
)


@dataclass(frozen=True)
class LisaItem:
    image: np.ndarray
    mask: np.ndarray
    texts: list[str]
    is_sentence: bool


def _is_ignore(label: str) -> bool:
    return "ignore" in label.lower()


def load_lisa_item(json_path: str | os.PathLike) -> LisaItem:
    """One ReasonSeg annotation: {"text": [...], "is_sentence": bool, "shapes": [{"label", "points"}]}.

    Every polygon is a target except those labelled "...ignore..." (LISA's ambiguous regions), which
    are cleared after the targets are drawn: a {0,1} mask has no "don't care" value, and calling an
    ambiguous region background is the smaller error. The image is the file with the same stem.
    """
    json_path = Path(json_path)
    doc = read_json(json_path)
    image_path = next((json_path.with_suffix(e) for e in _IMAGE_EXTS if json_path.with_suffix(e).is_file()), None)
    if image_path is None:
        raise DataError(f"{json_path}: no image with the same name ({', '.join(_IMAGE_EXTS)})")
    image = read_image_rgb(image_path)
    texts = doc.get("text", [])
    texts = [texts] if isinstance(texts, str) else [str(t) for t in texts if str(t).strip()]
    if not texts:
        raise DataError(f"{json_path}: no 'text' query")
    h, w = image.shape[:2]
    target, ignore = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
    for i, shape in enumerate(doc.get("shapes", [])):
        try:
            label = str(shape.get("label", ""))
            points = [(float(x), float(y)) for x, y in shape["points"]]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{json_path}: shapes[{i}] needs 'label' and 'points' [[x, y], ...]") from None
        if len(points) < 3 or label.lower() == "flag":
            continue
        ImageDraw.Draw(ignore if _is_ignore(label) else target).polygon(points, fill=1)
    mask = (np.asarray(target) > 0) & ~(np.asarray(ignore) > 0)
    return LisaItem(image, mask.astype(np.uint8), texts, bool(doc.get("is_sentence", False)))


class LisaFolderSource:
    """Referring/reasoning segmentation from a folder of images + LISA ReasonSeg JSON files."""

    def __init__(self, root: str | os.PathLike, anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        self.root = Path(root)
        self.files = sorted(self.root.glob("*.json"))
        if not self.files:
            raise DataError(f"{self.root}: no *.json annotations (LISA ReasonSeg format) found")
        self.anchors = tuple(anchors)

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return lisa_sample(load_lisa_item(self.files[int(rng.integers(len(self.files)))]), self.anchors, rng)


def lisa_sample(item: LisaItem, anchors: tuple[str, ...], rng: np.random.Generator) -> dict[str, Any]:
    """One of the item's queries as LISA asks it: a reasoning sentence plus a request for the mask, or a
    phrase inside a segmentation question."""
    text = _pick(rng, tuple(item.texts)).strip()
    if item.is_sentence:
        question = f"{text} {_pick(rng, REASON_SUFFIXES)}"
    else:
        question = _pick(rng, PHRASE_QUESTIONS).format(text=text.rstrip("."))
    return seg_sample(item.image, item.mask, question, anchors, rng)
