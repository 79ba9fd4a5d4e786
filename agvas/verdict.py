"""What a generated answer says about the image: anomalous, normal, or undecidable.

Why a rule and not a model: the point is to check whether the text the model writes agrees with the
mask it predicts (a user saw "no region is marked as anomalous" next to a non-empty mask). A second
model would add its own errors; the answers the model is trained to write come from a small set of
templates (`agvas.data.templates`, `agvas.data.instruct.write_record` / `normal_record`), so a rule
written against that phrasing is exact on it and transparent elsewhere.

The rule, on the lower-cased text without the anchors ``[NOR] [ANO] [SEG]`` and other special tokens:

1. ``X-free`` ("defect-free") is read as ``free of X``.
2. The text is cut into clauses at sentence punctuation (``. ; : ! ?``) and at connectives that start
   a new statement (", so", ", therefore", ", which", ", because", "but", "however", ...).
3. In each clause the first negation (``no`` but not "no longer", ``not``, ``nothing``, ``none``,
   ``without``, ``free of``, ``never``) negates the rest of the clause. This is what keeps the
   expected-appearance sentences of anomalous answers ("... with no holes, cracks, stains or missing
   parts") from counting as defect descriptions.
4. **anomalous** if any clause names a defect (anomaly, anomalous, abnormal, defect, deviation,
   scratch, crack, hole, stain, missing, contamination, fold, dent, break, ...) *before* its negation:
   a description of something that is there wins over any general "normal" statement.
5. Otherwise **normal** if some negation covers a defect word or "segment" ("no anomaly", "without any
   defect", "nothing in the image deviates", "nothing to segment"), or the text calls the image
   ``normal`` or the mask ``empty``.
6. Otherwise ``None`` (undecidable), e.g. the bare "Sure, it is [NOR][ANO][SEG]."

Word forms are matched whole ("cracked texture", a DTD class, is not a crack), so class names that
merely resemble defect words do not decide the verdict.
"""

from __future__ import annotations

import re
from typing import Literal

from agvas.anchors import ANCHOR_TOKENS

__all__ = ["Verdict", "text_verdict"]

Verdict = Literal["anomalous", "normal"]

_SPECIAL = re.compile(r"<\|[^|]*\|>|</?s>|<image>")
_FREE = re.compile(r"\b([a-z]+)-free\b")
_CLAUSE_BREAK = re.compile(
    r"[.;:!?\n]+|,\s*(?:so|therefore|thus|which|because|whereas|while)\b|\b(?:but|however|although|though|except)\b")
_NEGATION = re.compile(r"\b(?:no\b(?!\s+longer)|not|nothing|none|without|free\s+of|never)\b|n't\b")
_DEFECT = re.compile(
    r"\b(?:anomal\w*|abnormal\w*|defect\w*|deviat\w*|irregularit(?:y|ies)|damaged?|flaws?|faults?|"
    r"scratch(?:es)?|cracks?|holes?|stains?|missing|contaminat\w*|folds?|dents?|chips?|breaks?|broken|"
    r"tears?|cuts?|spots?|bumps?|bulges?|wrinkles?|pits?|burns?|rust|discolou?r\w*|foreign)\b")
_SEGMENT = re.compile(r"\bsegment\w*")
_NORMAL = re.compile(r"\bnormal\b|\bempty\b")


def _clean(text: str) -> str:
    for token in ANCHOR_TOKENS:
        text = text.replace(token, " ")
    text = _SPECIAL.sub(" ", text).lower().replace("’", "'")
    return _FREE.sub(r"free of \1", " ".join(text.split()))


def text_verdict(text: str | None) -> Verdict | None:
    """"anomalous", "normal" or None (undecidable) for one generated answer; the rule is in the module notes."""
    if not text:
        return None
    clean = _clean(text)
    negated_defect = False
    for clause in _CLAUSE_BREAK.split(clean):
        neg = _NEGATION.search(clause)
        head, tail = (clause[:neg.start()], clause[neg.end():]) if neg else (clause, "")
        if _DEFECT.search(head):
            return "anomalous"
        if neg and (_DEFECT.search(tail) or _SEGMENT.search(tail)):
            negated_defect = True
    if negated_defect or _NORMAL.search(clean):
        return "normal"
    return None
