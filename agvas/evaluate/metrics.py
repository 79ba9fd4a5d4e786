"""Pixel metrics of the evaluation protocol (Bayes-PFL / AG-VAS), exact and memory-bounded.

Protocol (DESIGN.md, "Evaluation protocol"; paper section 4.1):

* pixel AP, F1-max, AUROC and AUPRO are computed on *all pixels of a category pooled*;
* IoU_ano is the IoU of the binary mask with the ground truth per anomalous image, averaged;
  IoU_nor is 1 per normal image whose binary mask is empty (else 0), averaged;
* the same two IoUs at the *oracle* threshold (``iou_ano_oracle``, ``iou_nor_oracle``), for the
  papers that report IoU there: masks ``map >= oracle_threshold`` on the map the pixel metrics
  rank, where ``oracle_threshold`` is the highest score at which the pooled pixel F1 reaches
  F1-max. It is chosen with the ground truth of the evaluated data itself, so it is optimistic
  (though not a bound: maximising pooled F1 does not maximise a mean of per-image IoUs) and no
  operating point a deployed model could use; the fixed-threshold IoUs stay the protocol's figures;
* image-level figures, as CLIP-based zero-shot papers report them: the image score is the maximum of
  the map the pixel metrics rank; image AUROC, AP and F1-max rank those scores against "has an
  anomalous GT pixel"; the false-alarm rate is the share of normal images whose binary mask is not
  empty, the miss rate the share of anomalous images whose mask is empty;
* the dataset figure is the mean over categories (:func:`mean_over_categories`);
* text-mask agreement (generating modes only): the share of images whose answer's verdict
  (:func:`agvas.evaluate.verdict.text_verdict`; undecidable answers counted apart, not scored)
  equals the mask's (anomalous iff the binary mask is not empty). Per category, and in the dataset
  figure **pooled over all images** rather than averaged over categories: it is a rate of a rule's
  outcomes, not a protocol metric, and small categories would otherwise weigh as much as large ones.

Why it is built this way
------------------------
A category of MVTec size at 518x518 is ~30 M pixels; keeping every pixel's score *and* label and
``argsort``-ing them (int64 indices) costs 15+ bytes per pixel plus sklearn's own copies. Instead,
:class:`CategoryAccumulator` splits pixels by their ground truth as they arrive and keeps only
float32 scores: the normal pixels' scores, and the anomalous pixels' scores grouped by their GT
connected region (for AUPRO), plus one int32 size per region. That is 4 bytes per pixel and no
label array, and nothing is quantised, so every metric is exact. The normal scores are kept
image by image (each chunk sorted once), never merged: per-image counts at a threshold only
known once the whole category is in (the oracle IoUs) are then one binary search per image.

* every threshold at which recall changes is a distinct *anomalous* score value ``u``; at each
  of them the true positives come from the sorted anomalous scores and the false positives from
  counting each image's sorted normal scores into the intervals between those values. AP
  (sklearn's ``sum (R_n - R_{n-1}) P_n``, ties grouped at one threshold as sklearn does) only
  gets non-zero terms at those thresholds, and
  F1 = 2TP / (TP + FP + P) is, for a fixed TP, largest at the highest threshold that reaches it,
  which is again one of them; so both equal sklearn's on the full curve, and the first maximum
  in descending order is the oracle threshold.
* AUROC is the Mann-Whitney statistic with ties counted one half, which is exactly the area
  under sklearn's trapezoidal ROC curve.
* AUPRO follows the MVTec AD evaluation code (Bergmann et al., IJCV 2021), which anomalib's
  metric approximates: GT regions are the connected components of each GT mask with
  **8-connectivity** (``scipy.ndimage.label`` with a 3x3 structure of ones), the FPR is over all
  GT-normal pixels of the category, the PRO at a threshold is the mean over all regions of the
  fraction of the region at or above it. The curve is the exact one over *all* distinct
  thresholds (no quantile grid), tied scores joined by straight segments; it is integrated with
  the trapezoid rule up to FPR 0.3, the point at 0.3 interpolated, and divided by 0.3.

Scores are stored as float32: two inputs that only differ below float32 precision tie. Results
are in percent (0..100), as the paper reports them. A metric that is undefined for a category
is NaN, never silently 0: AP, F1-max, AUROC and AUPRO need at least one anomalous pixel, AUROC
and AUPRO also at least one normal pixel; IoU_ano needs an anomalous image and IoU_nor a
normal one; the oracle threshold and both oracle IoUs need an anomalous pixel, the oracle
IoU_nor also a normal image; image AP, F1-max and the miss rate need an anomalous image, the false-alarm rate a
normal one, image AUROC both. :func:`mean_over_categories` skips NaN and says which categories it
skipped. The image-level figures keep one score and two flags per image, not the maps; the
ranking metrics are then computed exactly (sklearn's definitions, ties grouped) from those scores.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from agvas.verdict import text_verdict

__all__ = [
    "IMAGE_METRIC_KEYS",
    "METRIC_KEYS",
    "ORACLE_METRIC_KEYS",
    "PIXEL_METRIC_KEYS",
    "TEXT_KEYS",
    "CategoryAccumulator",
    "evaluate_category",
    "image_ranking_metrics",
    "mean_over_categories",
    "smooth",
]

PIXEL_METRIC_KEYS = ("ap", "f1_max", "auroc", "aupro", "iou_ano", "iou_nor")
ORACLE_METRIC_KEYS = ("iou_ano_oracle", "iou_nor_oracle")
IMAGE_METRIC_KEYS = ("image_auroc", "image_ap", "image_f1_max", "false_alarm_rate", "miss_rate")
METRIC_KEYS = PIXEL_METRIC_KEYS + ORACLE_METRIC_KEYS + IMAGE_METRIC_KEYS
COUNT_KEYS = ("n_images", "n_anomalous", "n_normal")
TEXT_KEYS = ("text_mask_agreement", "n_text", "n_text_undecidable", "n_text_agreeing")

# 8-connectivity, as the MVTec AD evaluation code labels its ground-truth regions.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
FALSE_ALARM_GRID = 32
"""Cells per side of the false-alarm map: coarse enough for any image size, fine enough to show a spot."""


def cell_fractions(mask: np.ndarray, grid: int = FALSE_ALARM_GRID) -> np.ndarray:
    """The share of foreground pixels in each of grid×grid cells (image-relative, so sizes pool)."""
    m = np.asarray(mask, dtype=np.float64)
    if m.shape[0] < grid or m.shape[1] < grid:  # tiny maps: repeat pixels until every cell has one
        m = np.repeat(np.repeat(m, -(-grid // m.shape[0]), axis=0), -(-grid // m.shape[1]), axis=1)
    ys = np.linspace(0, m.shape[0], grid + 1).round().astype(int)
    xs = np.linspace(0, m.shape[1], grid + 1).round().astype(int)
    sums = np.add.reduceat(np.add.reduceat(m, ys[:-1], axis=0), xs[:-1], axis=1)
    return sums / np.outer(np.diff(ys), np.diff(xs))


def smooth(anomaly_map: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-blur an anomaly map, the usual post-processing of zero-shot AS methods.

    Off (identity) for ``sigma <= 0`` so that callers can pass a config value straight through.
    Borders are reflected so that blurring does not pull edge scores towards zero.
    """
    arr = np.asarray(anomaly_map, dtype=np.float32)
    if sigma <= 0:
        return arr
    return ndimage.gaussian_filter(arr, sigma=float(sigma), mode="reflect")


def _counts_at_or_above(chunks: list[np.ndarray], u_asc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many scores of the sorted ``chunks`` are >= and > each ``u_asc`` value (ascending, distinct).

    Why per chunk: merging the chunks into one sorted array would lose which image each score came
    from. Each chunk is binned into the intervals between the ``u`` (a run-length count, as the bin
    indices of a sorted chunk are sorted), so the only arrays as long as ``u_asc`` are the results.
    """
    total = sum(int(c.size) for c in chunks)
    binned = []
    for side in ("right", "left"):  # bin j of "right": j values of u are <= the score; of "left": < it
        hist = np.zeros(u_asc.size + 1, dtype=np.int64)
        for c in chunks:
            idx = np.searchsorted(u_asc, c, side=side)
            if idx.size:
                starts = np.flatnonzero(np.diff(idx, prepend=-1))
                hist[idx[starts]] += np.diff(starts, append=idx.size)
        binned.append(total - np.cumsum(hist[:-1]))  # scores in bins above k: >= (resp. >) u_k
    return binned[0], binned[1]


def _trapezoid_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Area under the polyline (x, y) from x[0] to ``limit``, the crossing point interpolated.

    ``x`` must be non-decreasing; vertical segments (equal x) add nothing, whatever their order.
    """
    n = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    area = 0.5 * float(np.dot(np.diff(x[:n]), y[1:n] + y[: n - 1])) if n > 1 else 0.0
    if 0 < n < x.size:  # x[n-1] <= limit < x[n]: add the part of that segment left of the limit
        x0, x1, y0, y1 = float(x[n - 1]), float(x[n]), float(y[n - 1]), float(y[n])
        y_cut = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += 0.5 * (limit - x0) * (y0 + y_cut)
    return area


def image_ranking_metrics(scores: Any, labels: Any) -> dict[str, float]:
    """Image AUROC, AP and F1-max (fractions, NaN where undefined) of one score per image.

    There are only as many scores as images, so this simply sorts them: tied scores form one
    threshold, as in sklearn's ``precision_recall_curve`` and ``roc_curve``, which makes AP
    (``sum (R_n - R_{n-1}) P_n``), F1-max and the trapezoidal AUROC equal to sklearn's.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    nan = float("nan")
    out = {"auroc": nan, "ap": nan, "f1_max": nan}
    n_pos = int(y.sum())
    n_neg = int(y.size) - n_pos
    if n_pos == 0:
        return out
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.append(s[1:] != s[:-1], True)  # the last image of each tie group is one threshold
    tp = np.cumsum(y, dtype=np.float64)[last]
    fp = np.cumsum(~y, dtype=np.float64)[last]
    recall = tp / n_pos
    out["ap"] = float(np.sum(np.diff(recall, prepend=0.0) * tp / (tp + fp)))
    out["f1_max"] = float(np.max(2.0 * tp / (tp + fp + n_pos)))
    if n_neg:
        fpr = np.concatenate(([0.0], fp / n_neg))
        tpr = np.concatenate(([0.0], recall))
        out["auroc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return out


def _percent_share(flags: list[bool]) -> float:
    """Share of True in percent; NaN for no images (undefined, not 0)."""
    return 100.0 * sum(flags) / len(flags) if flags else float("nan")


class CategoryAccumulator:
    """Streams one category's images in and gives back the protocol's metrics.

    Feed images one at a time with :meth:`add`; call :meth:`summarise` whenever (it can be
    called again after more images are added). Stored data is 4 bytes per pixel (float32 scores)
    plus 4 bytes per GT region; :attr:`nbytes` reports it. :meth:`add` sorts each image's normal
    scores; ``summarise`` transiently needs a sorted copy of the anomalous scores plus ~50 bytes
    per *distinct anomalous score value* and index arrays for one image.
    Measured on 30 M pixels (112 images of 518x518): peak RSS of the whole process 0.18 GB with
    MVTec-like masks, 0.85 GB in the worst case of 50 % anomalous speckle with ~10 M distinct
    anomalous scores (``summarise`` 1.4 s and 10.6 s on one core).

    Args:
        threshold: the binary mask used for the IoUs when :meth:`add` gets none is
            ``score > threshold`` on the map as given (unsmoothed), like the model's ``> 0.5``.
        sigma: if > 0, the score map is Gaussian-smoothed (:func:`smooth`) before the
            threshold-free metrics (AP, F1-max, AUROC, AUPRO) see it; the binary mask is not.
        aupro_limit: the FPR up to which the PRO curve is integrated (0.3 in the literature).
    """

    def __init__(self, *, threshold: float = 0.5, sigma: float = 0.0, aupro_limit: float = 0.3) -> None:
        if not 0.0 < aupro_limit <= 1.0:
            raise ValueError(f"aupro_limit must be in (0, 1], got {aupro_limit}")
        self.threshold = float(threshold)
        self.sigma = float(sigma)
        self.aupro_limit = float(aupro_limit)
        self._neg: list[np.ndarray] = []  # float32 scores of GT-normal pixels, one sorted chunk per image
        self._pos: list[np.ndarray] = []  # float32 scores of GT-anomalous pixels, region by region
        self._region_sizes: list[np.ndarray] = []  # int32, one array per image with anomalies
        self._iou_ano: list[float] = []
        self._iou_nor: list[float] = []
        # Image level, one entry per image in arrival order: max of the ranked map, GT, mask non-empty.
        self._image_scores: list[float] = []
        self._image_labels: list[bool] = []
        self._mask_flags: list[bool] = []
        # (text verdict, mask non-empty) per image that came with a generated answer.
        self._text: list[tuple[str | None, bool]] = []
        # Where masks fire on normal images: summed cell shares (`cell_fractions`), None before any.
        self._false_alarm_sum: np.ndarray | None = None
        self.n_images = 0

    # ------------------------------------------------------------------ intake
    def add(self, score: Any, gt: Any, mask: Any | None = None, text: str | None = None) -> None:
        """Add one image: ``score`` float HxW (any range), ``gt`` HxW ({0,1}, bool or 0/255),
        ``mask`` the binary prediction HxW (anything > 0 is foreground) or None, ``text`` the
        generated answer (None when the method writes none; only its verdict is kept).

        The image score is the maximum of the map the threshold-free metrics see (smoothed when
        ``sigma`` > 0); false alarms and misses use the binary mask, as the IoUs do.

        An image is anomalous iff its GT has a foreground pixel (a normal image of a benchmark
        has an all-zero mask). NaN scores are refused: they have no place in a ranking, and
        sklearn would refuse them too.
        """
        raw = np.asarray(score)
        g = np.asarray(gt)
        if raw.ndim != 2:
            raise ValueError(f"score map must be HxW, got shape {raw.shape}")
        if g.shape != raw.shape:
            raise ValueError(f"gt shape {g.shape} differs from score shape {raw.shape}")
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"score map must be real-valued, got dtype {raw.dtype}")
        if raw.size == 0:
            raise ValueError("score map is empty")
        s = smooth(raw, self.sigma) if self.sigma > 0 else raw.astype(np.float32, copy=False)
        if np.isnan(s).any():
            raise ValueError("score map contains NaN")
        g = g > 0
        if mask is None:
            m = raw > self.threshold
        else:
            m = np.asarray(mask)
            if m.shape != raw.shape:
                raise ValueError(f"mask shape {m.shape} differs from score shape {raw.shape}")
            m = m > 0

        neg = np.ascontiguousarray(s[~g], dtype=np.float32)
        neg.sort()
        self._neg.append(neg)
        if g.any():
            labels, n_regions = ndimage.label(g, structure=_EIGHT_CONNECTED)
            lab = labels[g]
            order = np.argsort(lab, kind="stable")
            self._pos.append(np.ascontiguousarray(s[g][order], dtype=np.float32))
            self._region_sizes.append(np.bincount(lab, minlength=n_regions + 1)[1:].astype(np.int32))
            union = int(np.count_nonzero(m | g))
            inter = int(np.count_nonzero(m & g))
            # union >= |gt| > 0 here; the guard only keeps the formula total.
            self._iou_ano.append(inter / union if union else 1.0)
        else:
            self._iou_nor.append(0.0 if m.any() else 1.0)
            cells = cell_fractions(m)
            self._false_alarm_sum = cells if self._false_alarm_sum is None else self._false_alarm_sum + cells
        flagged = bool(m.any())
        self._image_scores.append(float(s.max()))
        self._image_labels.append(bool(g.any()))
        self._mask_flags.append(flagged)
        if text is not None:
            self._text.append((text_verdict(text), flagged))
        self.n_images += 1

    @property
    def nbytes(self) -> int:
        """Bytes of the data kept between images (the per-pixel store)."""
        return sum(int(a.nbytes) for a in (*self._neg, *self._pos, *self._region_sizes))

    @property
    def n_anomalous(self) -> int:
        return len(self._iou_ano)

    @property
    def n_normal(self) -> int:
        return len(self._iou_nor)

    def false_alarm_map(self) -> np.ndarray | None:
        """Per cell of a FALSE_ALARM_GRID² grid, the mean share of its pixels the mask flags on the normal
        images (None without any). A spot that lights up on every good part is a systematic error (a
        highlight, a fixture, a border) rather than noise; the image-level rates cannot tell the two apart."""
        if self._false_alarm_sum is None:
            return None
        return self._false_alarm_sum / self.n_normal

    # ------------------------------------------------------------------ metrics
    def pixel_metrics(self) -> dict[str, float]:
        """AP, F1-max, AUROC, AUPRO as fractions (0..1) and ``oracle_threshold`` (in score units), NaN
        where undefined. The oracle threshold falls out of the F1-max sweep for free."""
        nan = float("nan")
        out = {"ap": nan, "f1_max": nan, "auroc": nan, "aupro": nan, "oracle_threshold": nan}
        n_neg = sum(int(c.size) for c in self._neg)

        n_pos = sum(int(c.size) for c in self._pos)
        if n_pos == 0:
            return out

        # Distinct anomalous values (ascending) and how many anomalous pixels have each.
        pos_sorted = np.concatenate(self._pos) if len(self._pos) > 1 else self._pos[0].copy()
        pos_sorted.sort()
        is_start = np.empty(n_pos, dtype=bool)
        is_start[0] = True
        np.not_equal(pos_sorted[1:], pos_sorted[:-1], out=is_start[1:])
        starts = np.flatnonzero(is_start)
        del is_start
        u_asc = pos_sorted[starts]
        del pos_sorted
        counts_asc = np.diff(starts, append=n_pos)
        del starts

        # From here on, index k runs over the thresholds u_k = u_asc[::-1][k], descending.
        counts = counts_asc[::-1]
        # Counts are integers < 2**53, so float64 holds them exactly; it saves int->float copies.
        tp = np.cumsum(counts, dtype=np.float64)  # anomalous pixels >= u_k
        fp_ge, fp_gt = _counts_at_or_above(self._neg, u_asc)  # normal pixels >= u_k, > u_k
        fp_ge, fp_gt = fp_ge[::-1], fp_gt[::-1]

        denom = tp + fp_ge
        out["ap"] = float(np.dot(counts, np.divide(tp, denom, out=denom)) / n_pos)
        denom = tp + fp_ge
        denom += n_pos
        half_f1 = np.divide(tp, denom, out=denom)
        best = int(np.argmax(half_f1))  # the first maximum: the highest threshold that reaches F1-max
        out["f1_max"] = float(2.0 * half_f1[best])
        out["oracle_threshold"] = float(u_asc[u_asc.size - 1 - best])
        del denom, half_f1, tp

        if n_neg == 0:
            return out

        # Mann-Whitney with ties counted 1/2: pairs (anomalous, normal) ranked right.
        below = (n_neg - fp_ge).astype(np.float64)
        tied = (fp_ge - fp_gt).astype(np.float64)
        out["auroc"] = float(np.dot(counts.astype(np.float64), below + 0.5 * tied) / (float(n_pos) * n_neg))
        del below, tied

        out["aupro"] = self._aupro(u_asc, fp_ge, fp_gt, n_neg)
        return out

    def _aupro(self, u_asc: np.ndarray, fp_ge: np.ndarray, fp_gt: np.ndarray, n_neg: int) -> float:
        """Exact MVTec-style AUPRO from the thresholds found in :meth:`pixel_metrics`."""
        n_regions = sum(int(r.size) for r in self._region_sizes)
        # Each anomalous pixel weighs 1/|its region|; sum the weight per distinct value, image by
        # image so that the index and weight arrays never exist for the whole category at once.
        mass_asc = np.zeros(u_asc.size, dtype=np.float64)
        for scores, sizes in zip(self._pos, self._region_sizes, strict=True):
            # Sorting the keys first makes the binary searches cache-friendly (~10x faster).
            order = np.argsort(scores)
            weights = np.repeat(1.0 / sizes.astype(np.float64), sizes)[order]
            idx = np.searchsorted(u_asc, scores[order])
            del order
            mass_asc += np.bincount(idx, weights=weights, minlength=u_asc.size)
        pro_ge = np.cumsum(mass_asc[::-1]) / n_regions  # PRO at threshold u_k (descending k)
        del mass_asc
        np.minimum(pro_ge, 1.0, out=pro_ge)

        # Curve points in threshold order: for each u_k, A_k just above it (PRO of the previous
        # threshold, FPR of the normals strictly above u_k) then B_k at it. Normal-only
        # thresholds in between lie on the horizontal segment B_{k-1} -> A_k; ties at u_k make
        # the segment A_k -> B_k diagonal, as in the reference code. Only the prefix with
        # FPR below the limit (plus one point) matters.
        x_a = fp_gt / float(n_neg)
        k_end = int(np.searchsorted(x_a, self.aupro_limit, side="left"))  # x_a is non-decreasing
        k_end = min(k_end + 1, u_asc.size)
        x_a = x_a[:k_end]
        x_b = fp_ge[:k_end] / float(n_neg)
        y_b = pro_ge[:k_end]
        y_a = np.concatenate(([0.0], y_b[:-1]))
        xs = np.empty(2 * k_end + 2)
        ys = np.empty(2 * k_end + 2)
        xs[0] = ys[0] = 0.0
        xs[1:-1:2], ys[1:-1:2] = x_a, y_a
        xs[2:-1:2], ys[2:-1:2] = x_b, y_b
        xs[-1] = 1.0
        # Below the last kept threshold the PRO only rises, so the true next vertex is
        # (FPR of the next A, PRO of last B) when we cut early, and (1, 1) otherwise.
        if k_end < u_asc.size:
            xs[-1] = fp_gt[k_end] / float(n_neg)
            ys[-1] = pro_ge[k_end - 1]
        else:
            ys[-1] = 1.0
        return _trapezoid_to(xs, ys, self.aupro_limit) / self.aupro_limit

    def summarise(self) -> dict[str, float | int | None]:
        """The protocol's figures for this category, metrics in percent (NaN where undefined)."""
        pix = self.pixel_metrics()
        oracle = pix.pop("oracle_threshold")
        res: dict[str, float | int | None] = {k: 100.0 * v for k, v in pix.items()}
        res["iou_ano"] = 100.0 * float(np.mean(self._iou_ano)) if self._iou_ano else float("nan")
        res["iou_nor"] = 100.0 * float(np.mean(self._iou_nor)) if self._iou_nor else float("nan")
        res["oracle_threshold"] = oracle
        at = self.ious_at(oracle)
        res["iou_ano_oracle"], res["iou_nor_oracle"] = at["iou_ano"], at["iou_nor"]
        res.update(self.image_metrics())
        res.update(self.text_agreement())
        res["n_images"] = self.n_images
        res["n_anomalous"] = self.n_anomalous
        res["n_normal"] = self.n_normal
        return res

    def ious_at(self, threshold: float) -> dict[str, float]:
        """IoU_ano and IoU_nor (percent, NaN where undefined) of the masks ``map >= threshold``.

        Why ``>=``: that is the mask at which the pooled F1 is computed (sklearn's convention), so at
        the oracle threshold these IoUs belong to exactly the F1-max point. The map is the one the
        pixel metrics rank (smoothed when ``sigma`` > 0), not the fixed binary mask; definitions as for
        IoU_ano / IoU_nor. Each image's stored scores give its counts, so nothing extra is kept.
        """
        nan = float("nan")
        if math.isnan(threshold):
            return {"iou_ano": nan, "iou_nor": nan}
        t = np.float32(threshold)  # the stored scores are float32
        pos = iter(self._pos)
        iou_ano, iou_nor = [], []
        for neg, anomalous in zip(self._neg, self._image_labels, strict=True):
            false_pos = int(neg.size - np.searchsorted(neg, t, side="left"))
            if anomalous:  # union = its GT pixels + the normal pixels flagged
                gt_scores = next(pos)
                iou_ano.append(int(np.count_nonzero(gt_scores >= t)) / (gt_scores.size + false_pos))
            else:
                iou_nor.append(float(false_pos == 0))
        return {"iou_ano": 100.0 * float(np.mean(iou_ano)) if iou_ano else nan,
                "iou_nor": 100.0 * float(np.mean(iou_nor)) if iou_nor else nan}

    def image_metrics(self) -> dict[str, float]:
        """Image AUROC, AP, F1-max, false-alarm and miss rate in percent, NaN where undefined."""
        ranking = image_ranking_metrics(self._image_scores, self._image_labels)
        pairs = list(zip(self._image_labels, self._mask_flags, strict=True))
        return {
            **{f"image_{k}": 100.0 * v for k, v in ranking.items()},
            "false_alarm_rate": _percent_share([flagged for anomalous, flagged in pairs if not anomalous]),
            "miss_rate": _percent_share([not flagged for anomalous, flagged in pairs if anomalous]),
        }

    def text_agreement(self) -> dict[str, float | int | None]:
        """Agreement of the answers' verdicts with the masks (percent of decidable answers) and the
        counts behind it; agreement and undecidable count are NaN / None without generated answers."""
        decided = [verdict == ("anomalous" if flagged else "normal") for verdict, flagged in self._text
                   if verdict is not None]
        n_text = len(self._text)
        return {"text_mask_agreement": _percent_share(decided), "n_text": n_text,
                "n_text_undecidable": n_text - len(decided) if n_text else None,
                "n_text_agreeing": sum(decided)}

    # ------------------------------------------------------------------ sharding and curves
    def merge(self, other: CategoryAccumulator) -> None:
        """Append ``other``'s images after this one's, as if they had been :meth:`add`-ed here.

        Why: evaluation shards images over processes; merging per-image accumulators back in the
        images' original order rebuilds exactly the state of a single-process run (same chunks,
        same order), so every metric is bit-identical, not just close. ``other`` is left empty.
        """
        if (other.threshold, other.sigma, other.aupro_limit) != (self.threshold, self.sigma, self.aupro_limit):
            raise ValueError("cannot merge accumulators with different threshold, sigma or aupro_limit")
        self._neg.extend(other._neg)
        self._pos.extend(other._pos)
        self._region_sizes.extend(other._region_sizes)
        self._iou_ano.extend(other._iou_ano)
        self._iou_nor.extend(other._iou_nor)
        self._image_scores.extend(other._image_scores)
        self._image_labels.extend(other._image_labels)
        self._mask_flags.extend(other._mask_flags)
        self._text.extend(other._text)
        if other._false_alarm_sum is not None:
            self._false_alarm_sum = (other._false_alarm_sum if self._false_alarm_sum is None
                                     else self._false_alarm_sum + other._false_alarm_sum)
        other._false_alarm_sum = None
        self.n_images += other.n_images
        other._neg, other._pos, other._region_sizes, other._iou_ano, other._iou_nor = [], [], [], [], []
        other._image_scores, other._image_labels, other._mask_flags, other._text = [], [], [], []
        other.n_images = 0

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision, recall, thresholds) of the pooled pixels, thresholds descending.

        One point per distinct anomalous score (the only thresholds where recall moves, see the
        module notes), so ``sum(diff(recall, prepend=0) * precision)`` is the AP of
        :meth:`pixel_metrics` (to rounding) and ``max 2PR/(P+R)`` its F1-max. Empty arrays without anomalous
        pixels. Memory as :meth:`pixel_metrics`; the curve can hold millions of points, so a
        plot should thin it.
        """
        if not self._pos:
            empty = np.empty(0, dtype=np.float64)
            return empty, empty, empty.astype(np.float32)
        u_asc, counts_asc = np.unique(np.concatenate(self._pos), return_counts=True)
        tp = np.cumsum(counts_asc[::-1], dtype=np.float64)
        fp = _counts_at_or_above(self._neg, u_asc)[0][::-1].astype(np.float64)
        return tp / (tp + fp), tp / tp[-1], u_asc[::-1].copy()


def evaluate_category(
    samples: Iterable[tuple[Any, Any] | tuple[Any, Any, Any] | tuple[Any, Any, Any, str | None]],
    *,
    threshold: float = 0.5,
    sigma: float = 0.0,
    aupro_limit: float = 0.3,
) -> dict[str, float | int | None]:
    """Metrics of one category from an iterable of ``(score, gt)``, ``(score, gt, mask)`` or
    ``(score, gt, mask, text)``.

    A generator keeps memory at one image plus the accumulator's 4 bytes per pixel.
    """
    acc = CategoryAccumulator(threshold=threshold, sigma=sigma, aupro_limit=aupro_limit)
    for sample in samples:
        acc.add(*sample)
    return acc.summarise()


def mean_over_categories(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Dataset figure = unweighted mean over categories (the Bayes-PFL protocol).

    A category whose metric is NaN (undefined, e.g. AP of a category without anomalous pixels,
    IoU_nor of a set without normal images) is left out of that metric's mean rather than
    poisoning it; which categories were left out is returned under ``"skipped"``
    (``{metric: [category, ...]}``, only metrics with skips) and warned about, so a reader of
    the table can tell. A metric undefined everywhere stays NaN; a metric that no category has at
    all (results from an older version) is left out, not reported as skipped. Counts are summed
    and ``n_categories`` is added. Text-mask agreement is pooled over images (see the module notes).
    """
    out: dict[str, Any] = {}
    skipped: dict[str, list[str]] = {}
    for key in METRIC_KEYS:
        if results and not any(key in res for res in results.values()):
            continue
        vals = []
        for name, res in results.items():
            v = res.get(key, float("nan"))
            if v is None or math.isnan(float(v)):
                skipped.setdefault(key, []).append(name)
            else:
                vals.append(float(v))
        out[key] = float(np.mean(vals)) if vals else float("nan")
    for key in COUNT_KEYS:
        out[key] = int(sum(int(res.get(key, 0)) for res in results.values()))
    out.update(_pooled_text_agreement(results))
    out["n_categories"] = len(results)
    out["skipped"] = skipped
    if skipped:
        note = "; ".join(f"{k}: {', '.join(v)}" for k, v in skipped.items())
        warnings.warn(f"metrics undefined (NaN) left out of the category mean: {note}", stacklevel=2)
    return out


def _pooled_text_agreement(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Text-mask agreement over all images of all categories, from the per-category counts."""
    n_text = sum(int(res.get("n_text") or 0) for res in results.values())
    undecidable = sum(int(res.get("n_text_undecidable") or 0) for res in results.values())
    agreeing = sum(int(res.get("n_text_agreeing") or 0) for res in results.values())
    decided = n_text - undecidable
    return {"text_mask_agreement": 100.0 * agreeing / decided if decided else float("nan"), "n_text": n_text,
            "n_text_undecidable": undecidable if n_text else None, "n_text_agreeing": agreeing}
