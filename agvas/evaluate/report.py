"""What an evaluation leaves behind: metrics.json, metrics.md, pr_curves.png, gallery.png, and comparisons.

Why these shapes:

* metrics.json is the record other tools read (comparisons, the lead's tables). Undefined metrics are
  JSON ``null`` (strict JSON has no NaN) and come back as NaN from :func:`read_metrics`. Everything that
  varies between two runs of the same evaluation (time, process count, command) sits under ``"run"``,
  so two documents can be compared with that one key left out.
* metrics.md uses the paper's layout: per-category AP, F1-max, IoU_ano, IoU_nor in percent with one
  decimal and the unweighted mean over categories (Table 1/2), and runs side by side (Tables 3/4). A
  second table holds the image-level figures (and, for generating modes, the text-mask agreement).
* The IoUs at the oracle threshold (per category, where pixel F1 is largest) sit in a table of their
  own, headed as chosen on the evaluated data: some papers report IoU there, but no deployed model can
  pick its threshold that way, so they must never be read as the fixed-threshold figures.
* Runs written before a metric existed stay readable: a missing metric is shown as "–", like an
  undefined one.
* The plots are drawn with PIL, which the project already needs, rather than adding matplotlib.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from agvas.data.overlay import overlay_mask
from agvas.evaluate.runner import EvalResult, EvalSettings, load_item
from agvas.io import DataError, atomic_write_bytes, read_json

__all__ = [
    "COMPARISON_JSON",
    "COMPARISON_MD",
    "GALLERY_PNG",
    "METRICS_JSON",
    "METRICS_MD",
    "PR_CURVES_PNG",
    "IMAGE_TABLE_METRICS",
    "ORACLE_TABLE_METRICS",
    "PIXEL_EXTRA_METRICS",
    "TABLE_METRICS",
    "GalleryRow",
    "comparison_document",
    "comparison_markdown",
    "format_value",
    "gallery_rows",
    "metrics_document",
    "metrics_markdown",
    "read_metrics",
    "render_false_alarms",
    "render_gallery",
    "render_pr_curves",
    "thin_curve",
    "write_json",
    "write_run_report",
]

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
PR_CURVES_PNG = "pr_curves.png"
GALLERY_PNG = "gallery.png"
FALSE_ALARMS_PNG = "false_alarms.png"
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
FORMAT_VERSION = 1

TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("ap", "AP"), ("f1_max", "F1-max"), ("iou_ano", "IoU_ano"), ("iou_nor", "IoU_nor"))
"""The paper's figures, in the column order of the tables we write."""
PIXEL_EXTRA_METRICS: tuple[tuple[str, str], ...] = (("auroc", "P-AUROC"), ("aupro", "AUPRO"))
"""Pixel figures the paper does not print but the field reports; metrics.md shows them after the paper's."""
ORACLE_TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("iou_ano_oracle", "Oracle IoU_ano"), ("iou_nor_oracle", "Oracle IoU_nor"))
"""IoUs of the masks map >= each category's F1-max threshold, which is chosen on the evaluated data itself."""
IMAGE_TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("image_auroc", "I-AUROC"), ("image_ap", "I-AP"), ("image_f1_max", "I-F1-max"),
    ("false_alarm_rate", "False alarm"), ("miss_rate", "Miss"))
"""Image-level figures (image score = max of the anomaly map; false alarm / miss from the binary mask)."""
_TEXT_COLUMN = ("text_mask_agreement", "Text–mask")
_COMPARE_METRICS = (*TABLE_METRICS, *ORACLE_TABLE_METRICS, *IMAGE_TABLE_METRICS, _TEXT_COLUMN)
_METRIC_FIELDS = frozenset({"ap", "f1_max", "auroc", "aupro", "iou_ano", "iou_nor", "text_mask_agreement",
                            "oracle_threshold", *(k for k, _ in (*ORACLE_TABLE_METRICS, *IMAGE_TABLE_METRICS))})
# Settings that make two runs' numbers comparable only when equal.
_PROTOCOL_FIELDS = ("split", "image_size", "sigma", "threshold", "limit")

# A qualitative palette with enough distinct hues for MVTec's 15 categories.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
           (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141)]


# ---------------------------------------------------------------------------------------- JSON
def _to_json(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively."""
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, doc: dict[str, Any]) -> None:
    """Strict JSON (no NaN), written atomically so a reader never sees half a file."""
    text = json.dumps(_to_json(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def _metrics_from_json(obj: Any) -> Any:
    """null metric fields back to NaN so arithmetic and formatting need no special case."""
    if isinstance(obj, dict):
        return {k: (float("nan") if k in _METRIC_FIELDS and v is None else _metrics_from_json(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_metrics_from_json(v) for v in obj]
    return obj


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A metrics.json, given the file or the run folder holding it; undefined metrics as NaN."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_JSON
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no {METRICS_JSON} here (is it the --out folder of an `agvas eval` run?)")
    doc = read_json(p)
    if not isinstance(doc, dict) or "mean" not in doc:
        raise ValueError(f"{p}: not a metrics.json of `agvas eval` (no 'mean')")
    return _metrics_from_json(doc)


# ---------------------------------------------------------------------------------------- markdown
def format_value(value: Any) -> str:
    """Percent with one decimal as the paper prints them; an undefined metric as an en dash."""
    if value is None:
        return "–"
    v = float(value)
    return "–" if math.isnan(v) else f"{v:.1f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _method_line(method: dict[str, Any]) -> str:
    parts = [f"`{method.get('name')}`"]
    if method.get("checkpoint"):
        parts.append(f"checkpoint `{method['checkpoint']}`")
    if method.get("mode"):
        parts.append(f"mode `{method['mode']}`")
    if method.get("expectation"):
        parts.append(f"expectation “{method['expectation']}”")
    return ", ".join(parts)


def metrics_markdown(doc: dict[str, Any]) -> str:
    """The run as the paper's Table 1/2: one row per category and the mean, percent, one decimal."""
    ds, proto, counts, mean = doc["dataset"], doc["protocol"], doc["counts"], doc["mean"]
    size = proto.get("image_size")
    pixel_columns = (*TABLE_METRICS, *PIXEL_EXTRA_METRICS)
    lines = [
        f"# Evaluation of {ds['name']} ({proto['split']} split)",
        "",
        f"- Method: {_method_line(doc['method'])}",
        f"- Images: {counts['evaluated']} evaluated ({counts['anomalous']} anomalous, {counts['normal']} normal)"
        f" of {counts['listed']} listed; {counts['failed']} failed",
        f"- Image size: {f'{size}×{size}' if size else 'native'}; sigma {proto['sigma']:g}; "
        f"threshold {proto['threshold']:g}" + (f"; at most {proto['limit']} images per category"
                                             if proto.get("limit") else ""),
        "",
        _row(["Category", *[label for _, label in pixel_columns], "Images (ano / nor)"]),
        _row(["---", *["---:"] * len(pixel_columns), "---:"]),
    ]
    for name, res in doc["categories"].items():
        lines.append(_row([name, *[format_value(res.get(k)) for k, _ in pixel_columns],
                           f"{res['n_anomalous']} / {res['n_normal']}"]))
    lines.append(_row([f"**Mean ({mean['n_categories']})**", *[f"**{format_value(mean.get(k))}**"
                                                                 for k, _ in pixel_columns],
                       f"{mean['n_anomalous']} / {mean['n_normal']}"]))
    ano, nor = float(mean["iou_ano"]), float(mean["iou_nor"])
    average = (ano + nor) / 2 if not (math.isnan(ano) or math.isnan(nor)) else float("nan")
    lines += [
        "",
        f"Table 1 form (AP, F1-Max, IoU_ano): ({format_value(mean['ap'])}, {format_value(mean['f1_max'])}, "
        f"{format_value(ano)}). Table 2 form: IoU_ano {format_value(ano)}, IoU_nor {format_value(nor)}, "
        f"average {format_value(average)}.",
        "",
        "AP and F1-max pool all pixels of a category; IoU_ano averages the IoU of each anomalous image, "
        "IoU_nor scores each normal image 1 when its mask is empty. The mean is unweighted over categories "
        "(Bayes-PFL protocol); – marks a metric undefined for that category (no anomalous pixels, or no "
        "normal images), left out of the mean. P-AUROC and AUPRO (the per-region overlap integrated up to a "
        "false-positive rate of 0.3) also pool the pixels of a category.",
    ]
    lines += ["", *_oracle_markdown(doc), "", *_image_level_markdown(doc)]
    skipped = mean.get("skipped") or {}
    shown = {k for k, _ in (*pixel_columns, *ORACLE_TABLE_METRICS, *IMAGE_TABLE_METRICS)}
    notes = [f"{k}: {', '.join(v)}" for k, v in skipped.items() if k in shown]
    if notes:
        lines += ["", "Left out of the mean: " + "; ".join(notes) + "."]
    if doc.get("failed"):
        lines += ["", f"## Failed images ({len(doc['failed'])})", ""]
        lines += [f"- `{f['path']}`: {f['error']}" for f in doc["failed"]]
    return "\n".join(lines) + "\n"


def _oracle_markdown(doc: dict[str, Any]) -> list[str]:
    """The oracle-threshold IoUs, apart from the protocol's table so that nobody quotes them as its figures."""
    mean = doc["mean"]

    def threshold(res: dict[str, Any]) -> str:
        value = res.get("oracle_threshold")
        return "–" if value is None or math.isnan(float(value)) else f"{float(value):.4g}"

    lines = ["## At the oracle threshold (chosen on this data: not an operating point)", "",
             _row(["Category", "Threshold", "IoU_ano", "IoU_nor"]), _row(["---", "---:", "---:", "---:"])]
    lines += [_row([name, threshold(res), *[format_value(res.get(k)) for k, _ in ORACLE_TABLE_METRICS]])
              for name, res in doc["categories"].items()]
    lines += [_row([f"**Mean ({mean['n_categories']})**", "–",
                    *[f"**{format_value(mean.get(k))}**" for k, _ in ORACLE_TABLE_METRICS]]), "",
              "Per category, the threshold is the highest score of the anomaly map (smoothed when sigma > 0) at "
              "which the pooled pixel F1 reaches F1-max; IoU_ano and IoU_nor are those of the masks map ≥ threshold, "
              "defined as above. It is chosen with the ground truth of the evaluated images themselves, so these "
              "IoUs are optimistic (though not an upper bound: the F1-best threshold need not maximise IoU) and "
              "not what a deployed model would reach; the protocol's IoUs are those of the fixed threshold "
              f"({_threshold_text(doc)}) above. The mean averages the IoUs, not the thresholds."]
    return lines


def _image_level_markdown(doc: dict[str, Any]) -> list[str]:
    """The image-level table; the text-mask columns only when the run's method generated text."""
    mean = doc["mean"]
    with_text = bool(mean.get("n_text"))
    columns = [*IMAGE_TABLE_METRICS, *([_TEXT_COLUMN] if with_text else [])]
    header = ["Category", *[label for _, label in columns], *(["Undecidable"] if with_text else [])]

    def cells(res: dict[str, Any], bold: bool = False) -> list[str]:
        out = [format_value(res.get(k)) for k, _ in columns]
        if with_text:
            n = res.get("n_text_undecidable")
            out.append("–" if n is None else f"{int(n)} / {int(res.get('n_text') or 0)}")
        return [f"**{c}**" for c in out] if bold else out

    lines = ["## Image level", "", _row(header), _row(["---", *["---:"] * (len(header) - 1)])]
    lines += [_row([name, *cells(res)]) for name, res in doc["categories"].items()]
    lines += [_row([f"**Mean ({mean['n_categories']})**", *cells(mean, bold=True)]), "",
              f"The image score is the maximum of the anomaly map (the map pixel AP ranks); I-AUROC, I-AP and "
              f"I-F1-max rank it per category. False alarm: share of normal images whose mask (map > "
              f"{_threshold_text(doc)}) is not empty; miss: share of anomalous images whose mask is empty."]
    if with_text:
        lines.append("")
        lines.append("Text–mask: share of answers whose verdict (rule-based, `agvas.evaluate.verdict`: a negated "
                     "defect or “normal” means normal, a described defect anomalous) equals the mask's (not empty "
                     "= anomalous), of the answers with a verdict; the Mean row pools all images. Undecidable: "
                     "answers without a verdict / answers.")
    return lines


def _threshold_text(doc: dict[str, Any]) -> str:
    value = doc.get("protocol", {}).get("threshold")
    return "threshold" if value is None else f"{float(value):g}"


# ---------------------------------------------------------------------------------------- comparison
def _run_label(path: str, taken: set[str]) -> str:
    p = Path(path)
    label = (p.parent.name if p.name == METRICS_JSON else p.name) or str(p)
    if label in taken:
        label = str(p)
    taken.add(label)
    return label


def comparison_document(runs: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Runs side by side (paper Tables 3/4): the category means, and notes where the runs' protocols
    differ, because numbers at different image sizes or on different data are not comparable."""
    taken: set[str] = set()
    rows = []
    for path, doc in runs:
        rows.append({"run": _run_label(path, taken), "path": str(path), "method": doc.get("method", {}),
                     "dataset": doc.get("dataset", {}).get("name"),
                     **{k: doc["mean"].get(k, float("nan")) for k, _ in _COMPARE_METRICS},
                     "n_categories": doc["mean"].get("n_categories"), "evaluated": doc.get("counts", {}).get(
                         "evaluated")})
    notes = []
    datasets = {r["dataset"] for r in rows}
    if len(datasets) > 1:
        notes.append(f"runs are on different datasets: {', '.join(sorted(map(str, datasets)))}")
    for key in _PROTOCOL_FIELDS:
        values = {json.dumps(doc.get("protocol", {}).get(key)) for _, doc in runs}
        if len(values) > 1:
            notes.append(f"runs differ in {key}: {', '.join(sorted(values))}")
    return {"format": FORMAT_VERSION, "columns": [k for k, _ in _COMPARE_METRICS], "runs": rows, "notes": notes}


def _method_cell(method: dict[str, Any]) -> str:
    """e.g. `agvas tiny/no-seg (direct)`: the variant is what tells ablation rows apart."""
    name = " ".join(str(method[k]) for k in ("name", "variant") if method.get(k)) or "?"
    return f"{name} ({method['mode']})" if method.get("mode") else name


def comparison_markdown(comp: dict[str, Any]) -> str:
    lines = ["# Comparison (mean over categories, %)", "",
             _row(["Run", "Method", "Dataset", *[label for _, label in _COMPARE_METRICS]]),
             _row(["---", "---", "---", *["---:"] * len(_COMPARE_METRICS)])]
    for r in comp["runs"]:
        lines.append(_row([r["run"], _method_cell(r["method"]), str(r["dataset"]),
                           *[format_value(r.get(k)) for k, _ in _COMPARE_METRICS]]))
    lines += ["", "Oracle IoU_*: at each category's own F1-max threshold, chosen on the evaluated data "
                  "(optimistic, not an operating point). I-: image level (image score = max of the map). Text–mask: "
                  "agreement of the generated answer's verdict with the mask, pooled over images (generating modes "
                  "only). – : undefined or not recorded by that run."]
    if comp["notes"]:
        lines += ["", "**Not like for like:** " + "; ".join(comp["notes"]) + "."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- drawing
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return int(box[2] - box[0])


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """Shorten from the left (paths are told apart by their ends) until the text fits."""
    if _text_width(draw, text, font) <= width:
        return text
    while len(text) > 1 and _text_width(draw, "…" + text, font) > width:
        text = text[1:]
    return "…" + text


def thin_curve(precision: np.ndarray, recall: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ~2·points vertices for drawing: per recall bin its first and last point, which keeps the
    curve's shape (a pooled category can have millions of distinct scores)."""
    n = int(recall.size)
    if n <= 2 * points:
        return precision, recall
    edges = np.searchsorted(recall, np.linspace(0.0, 1.0, points + 1), side="left")
    keep = np.unique(np.concatenate([edges.clip(0, n - 1), (edges - 1).clip(0, n - 1), [0, n - 1]]))
    return precision[keep], recall[keep]


def render_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], ap: dict[str, float],
                     title: str = "Pixel-level precision-recall") -> Image.Image:
    """One PR curve per category (recall on x, precision on y), AP in the legend."""
    width, height = 900, 600
    left, top, right, bottom = 70, 60, 620, height - 60
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    draw.text((left, 10), _fit(draw, title, font, width - left - 10), fill="black", font=font)

    def to_px(r: np.ndarray, p: np.ndarray) -> list[tuple[float, float]]:
        xs = left + np.asarray(r, dtype=np.float64) * (right - left)
        ys = bottom - np.asarray(p, dtype=np.float64) * (bottom - top)
        return list(zip(xs.tolist(), ys.tolist(), strict=True))

    for t in np.linspace(0.0, 1.0, 6):
        x = left + t * (right - left)
        y = bottom - t * (bottom - top)
        draw.line([(x, top), (x, bottom)], fill=(225, 225, 225))
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        label = f"{t:.1f}"
        draw.text((x - _text_width(draw, label, small) / 2, bottom + 6), label, fill="black", font=small)
        draw.text((left - 8 - _text_width(draw, label, small), y - 7), label, fill="black", font=small)
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2 - 20, bottom + 28), "recall", fill="black", font=font)
    draw.text((8, top - 24), "precision", fill="black", font=font)

    legend_x, legend_y = right + 20, top
    step = max(12, min(22, (bottom - top) // max(1, len(ap))))
    for k, name in enumerate(ap):
        colour = PALETTE[k % len(PALETTE)]
        if name in curves and curves[name][1].size:
            p, r = curves[name]
            p, r = thin_curve(p, r)
            # The curve starts at recall 0 at the precision of the highest threshold, as sklearn plots it.
            pts = to_px(np.concatenate([[0.0], r]), np.concatenate([[p[0]], p]))
            draw.line(pts, fill=colour, width=2, joint="curve")
            entry = f"{name} (AP {format_value(ap[name])})"
        else:
            entry = f"{name} (no anomalous pixels)"
        y = legend_y + k * step
        draw.rectangle([legend_x, y + 3, legend_x + 14, y + 11], fill=colour)
        draw.text((legend_x + 20, y), _fit(draw, entry, small, width - legend_x - 28), fill="black", font=small)
    return img


@dataclass
class GalleryRow:
    """One gallery line: a caption and the three pictures (image, GT, prediction) at the same size."""

    caption: str
    image: np.ndarray
    gt: np.ndarray
    mask: np.ndarray


def _tile(arr: np.ndarray, size: int) -> Image.Image:
    """Fit into a size×size square keeping the aspect ratio (native-size images need not be square)."""
    im = Image.fromarray(arr)
    scale = size / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), (245, 245, 245))
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return canvas


def render_gallery(rows: Sequence[GalleryRow], tile: int = 200, title: str = "") -> Image.Image:
    """image | ground truth (green) | prediction (red), one captioned row per image."""
    pad, caption_h, header_h = 8, 20, 46
    columns = ("image", "ground truth", "prediction")
    width = pad + len(columns) * (tile + pad)
    height = header_h + max(1, len(rows)) * (caption_h + tile + pad) + pad
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    draw.text((pad, 6), _fit(draw, title, font, width - 2 * pad), fill="black", font=font)
    for c, name in enumerate(columns):
        x = pad + c * (tile + pad)
        draw.text((x + (tile - _text_width(draw, name, small)) / 2, 28), name, fill="black", font=small)
    if not rows:
        draw.text((pad, header_h + 8), "no images were evaluated", fill="black", font=font)
    for k, row in enumerate(rows):
        y = header_h + k * (caption_h + tile + pad)
        draw.text((pad, y + 3), _fit(draw, row.caption, small, width - 2 * pad), fill="black", font=small)
        pictures = (row.image, overlay_mask(row.image, row.gt, (0, 200, 0), alpha=0.55),
                    overlay_mask(row.image, row.mask, (230, 0, 0), alpha=0.55))
        for c, arr in enumerate(pictures):
            img.paste(_tile(arr, tile), (pad + c * (tile + pad), y + caption_h))
    return img


def _heat(share: np.ndarray, size: int) -> Image.Image:
    """Cell shares (0..1) as white (never) to dark red (always), nearest-upscaled so cells stay cells."""
    t = np.clip(share, 0.0, 1.0)[..., None]
    rgb = (255 * (1 - t) + np.array([150.0, 0.0, 0.0]) * t).astype(np.uint8)
    return Image.fromarray(rgb).resize((size, size), Image.Resampling.NEAREST)


def render_false_alarms(maps: dict[str, tuple[np.ndarray, int, float]], tile: int = 160,
                        title: str = "") -> Image.Image:
    """One heat map per category, `maps[name] = (cell shares, good images, false-alarm rate %)`.

    Why: a false-alarm rate says how often good parts are flagged, not where. The same spot on every
    good image (a highlight, a fixture, the border) is a fixable systematic error; scattered specks are not.
    """
    pad, caption_h, header_h, per_row = 8, 48, 30, 5
    names = list(maps)
    cols = max(1, min(per_row, len(names)))
    rows = max(1, -(-len(names) // per_row))
    width = max(pad + cols * (tile + pad), 480)
    img = Image.new("RGB", (width, header_h + rows * (caption_h + tile + pad) + pad), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    draw.text((pad, 6), _fit(draw, title, font, width - 2 * pad), fill="black", font=font)
    if not names:
        draw.text((pad, header_h + 8), "no good images were evaluated", fill="black", font=font)
    for k, name in enumerate(names):
        share, n_good, rate = maps[name]
        x, y = pad + (k % per_row) * (tile + pad), header_h + (k // per_row) * (caption_h + tile + pad)
        lines = (name, f"{n_good} good, {rate:.0f} % flagged", f"hottest cell {100 * share.max():.0f} %")
        for i, line in enumerate(lines):
            draw.text((x, y + 15 * i), _fit(draw, line, small, tile), fill="black", font=small)
        img.paste(_heat(share, tile), (x, y + caption_h))
        draw.rectangle((x, y + caption_h, x + tile - 1, y + caption_h + tile - 1), outline=(180, 180, 180))
    return img


def save_png(path: str | os.PathLike, image: Image.Image) -> None:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------- one run
def metrics_document(result: EvalResult, method: dict[str, Any], settings: EvalSettings, root: str | os.PathLike,
                     run: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json's content. Only ``"run"`` may differ between two evaluations of the same thing."""
    root_path = Path(root).resolve()
    mean = result.mean
    seconds = float(result.seconds)
    return {
        "format": FORMAT_VERSION,
        "method": method,
        "dataset": {"name": root_path.name, "root": str(root_path), "split": settings.split},
        "protocol": {"split": settings.split, "image_size": settings.image_size, "sigma": settings.sigma,
                     "threshold": result.threshold, "min_area": settings.min_area, "limit": settings.limit,
                     "units": "percent", "mean": "unweighted over categories",
                     "text_mask_agreement": "pooled over images"},
        "counts": {"listed": len(result.entries), "evaluated": result.n_evaluated, "failed": len(result.failed),
                   "anomalous": int(mean["n_anomalous"]), "normal": int(mean["n_normal"]),
                   "categories": int(mean["n_categories"])},
        "mean": mean,
        "categories": result.categories,
        "failed": [f.as_dict() for f in result.failed],
        "run": {**(run or {}), "seconds": round(seconds, 3), "processes": result.processes,
                "images_per_second": round(result.n_evaluated / seconds, 3) if seconds > 0 else None},
    }


def gallery_rows(result: EvalResult, root: str | os.PathLike, settings: EvalSettings) -> list[GalleryRow]:
    """The picked images reloaded as evaluated (same resize), with their kept prediction masks."""
    rows = []
    selection = result.gallery.selection()
    metric = "IoU_ano" if any(result.entries[i].anomalous for _, i, _ in selection) else "IoU_nor"
    counters: dict[str, int] = {}
    for side, index, iou in selection:
        entry = result.entries[index]
        try:
            image, gt = load_item(root, entry, settings.image_size)
        except DataError:  # it was readable a moment ago; a gallery is not worth failing the run for
            continue
        counters[side] = counters.get(side, 0) + 1
        caption = f"{side} {counters[side]} · {entry.cls_name} · {metric} {100 * iou:.1f} · {entry.img_path}"
        rows.append(GalleryRow(caption, image, gt, result.gallery.masks[index]))
    return rows


def write_run_report(out_dir: str | os.PathLike, result: EvalResult, doc: dict[str, Any],
                     root: str | os.PathLike, settings: EvalSettings) -> dict[str, Path]:
    """metrics.json, metrics.md, pr_curves.png, gallery.png and false_alarms.png into out_dir; returns their
    paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (METRICS_JSON, METRICS_MD, PR_CURVES_PNG, GALLERY_PNG, FALSE_ALARMS_PNG)}
    write_json(paths[METRICS_JSON], doc)
    atomic_write_bytes(paths[METRICS_MD], metrics_markdown(doc).encode("utf-8"))
    curves = {}
    for name, acc in result.accumulators.items():
        precision, recall, _ = acc.pr_curve()
        curves[name] = thin_curve(precision, recall)
    ap = {name: float(res["ap"]) for name, res in result.categories.items()}
    title = f"Pixel-level PR curves: {doc['dataset']['name']} ({doc['method'].get('name')})"
    save_png(paths[PR_CURVES_PNG], render_pr_curves(curves, ap, title))
    rows = gallery_rows(result, root, settings)
    save_png(paths[GALLERY_PNG], render_gallery(rows, title=f"{doc['dataset']['name']}: best and worst by IoU "
                                                            f"({_method_cell(doc['method'])})"))
    maps = {name: (fa, int(result.categories[name]["n_normal"]), float(result.categories[name]["false_alarm_rate"]))
            for name, acc in result.accumulators.items() if (fa := acc.false_alarm_map()) is not None}
    save_png(paths[FALSE_ALARMS_PNG], render_false_alarms(
        maps, title=f"{doc['dataset']['name']}: where the mask fires on good images, share of pixels per cell"))
    return paths
