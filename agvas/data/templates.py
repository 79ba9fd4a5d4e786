"""Instruction templates: turn a record (or nothing, for direct segmentation) into a conversation.

The paper fuses templates with record fields at sampling time (Fig. 4b), so the same record yields a
different prompt every epoch. Four instruction types are covered (Direct Segmentation,
Describe-then-Segment, Describe-then-Segment-Plus, Segment-then-Explain) plus short multi-turn
dialogues. Contract with the model side: a conversation is a list of {"role", "content"} turns, the
first user turn holds IMAGE_PLACEHOLDER once, and the anchor string appears exactly once per
conversation (one mask per sample), in the assistant turn that produces the mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from agvas.anchors import ANCHOR_TOKENS, DIRECT_INSTRUCTION, IMAGE_PLACEHOLDER, anchor_string
from agvas.data.instruct import InstructRecord, class_noun, normal_record
from agvas.modes import EXPECTATION_MODE, MODES, needs_expectation

Turn = dict[str, str]
Conversation = list[Turn]

INSTRUCTION_TYPES: tuple[str, ...] = MODES
"""Training renders the same four types that inference offers as modes."""

DESCRIBE_INSTRUCTION = (
    "What anomalies are present in this image? Please describe the anomalies and then output the "
    "segmentation map."
)
EXPLAIN_INSTRUCTION = "Please segment the anomalies in this image and then explain the segmentation result."

# The fixed inference prompts are always the first phrasing, so test-time prompts are in-distribution.
DIRECT_QUESTIONS: tuple[str, ...] = (
    DIRECT_INSTRUCTION,
    "Can you segment the anomalous regions in this image?",
    "Segment any defects you can find on this {object}.",
    "Where are the anomalies in this image? Please output the segmentation mask.",
    "Please find and segment all abnormal regions of this {object}.",
    "Is anything wrong with this {object}? Please segment it.",
    "Identify the anomalous areas in this picture and give their segmentation.",
    "Please output a segmentation mask of the defects in this image.",
    "Highlight the regions of this {object} that deviate from its normal appearance.",
    "Segment the parts of this image that look abnormal.",
)
DIRECT_ANSWERS: tuple[str, ...] = (
    "Sure, it is {anchors}.",
    "Sure, {anchors}.",
    "It is {anchors}.",
    "Sure, the segmentation result is {anchors}.",
    "{anchors}.",
    "Here is the anomaly mask: {anchors}.",
)
DIRECT_ANSWERS_NORMAL: tuple[str, ...] = (
    "There is no anomaly in this image, so the mask is empty: {anchors}.",
    "This {object} looks normal and has nothing to segment. It is {anchors}.",
    "No anomalies are present. Sure, it is {anchors}.",
    "Sure, it is {anchors}. The image shows no anomaly.",
    "I find no defect here; the segmentation result is {anchors}.",
)

DESCRIBE_QUESTIONS: tuple[str, ...] = (
    DESCRIBE_INSTRUCTION,
    "Describe any defect on this {object} and then segment it.",
    "First describe what is wrong with this {object}, then output its segmentation mask.",
    "Please describe the abnormal regions of this image before segmenting them.",
    "What looks abnormal here? Describe it, then give the segmentation.",
    "Tell me about the anomalies in this image and segment them.",
    "Inspect this {object}: describe the anomalies you see and then segment them.",
)
# Fig. 4b: the description (Observation / Summary) followed by "... as indicated by [NOR][ANO][SEG]."
DESCRIBE_ANSWERS: tuple[str, ...] = (
    "{observation_clause}, as indicated by {anchors}.",
    "{observation} {summary_clause}, as indicated by {anchors}.",
    "{observation} The segmentation is {anchors}.",
    "{summary_clause}, as indicated by {anchors}.",
    "{observation} {summary} It is {anchors}.",
)

EXPLAIN_QUESTIONS: tuple[str, ...] = (
    EXPLAIN_INSTRUCTION,
    "Segment the defects on this {object} and explain why they are anomalous.",
    "Output the anomaly mask first, then explain your reasoning.",
    "Find the abnormal regions, segment them, and tell me why they are abnormal.",
    "Segment any anomaly in this image and justify the result.",
    "Please give the segmentation of the anomalies, followed by an explanation.",
)
# Fig. 4b: "[NOR][ANO][SEG]. " + Explanation.
EXPLAIN_ANSWERS: tuple[str, ...] = (
    "Sure, it is {anchors}. {explanation}",
    "{anchors}. {explanation}",
    "Sure, {anchors}. {explanation}",
    "The segmentation is {anchors}. {explanation}",
)

EXPECTATION_QUESTIONS: tuple[str, ...] = (
    "What should a normal {object} look like?",
    "Describe the normal appearance of this kind of {object}.",
    "Before looking for defects: how does a defect-free {object} look?",
)
FOLLOW_UP_QUESTIONS: tuple[str, ...] = (
    "Why is that region anomalous?",
    "Can you explain the result?",
    "Why did you segment it that way?",
)


def _clause(text: str) -> str:
    """A sentence without its final punctuation, so a template can continue it."""
    return text.strip().rstrip(".!;: ")


def _noun(cls_name: str | None) -> str:
    return class_noun(cls_name)[0] if cls_name else "object"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _clean(text: str) -> str:
    """Record text without anchors or image placeholders.

    LMM-written Summaries sometimes quote "[NOR][ANO][SEG]" literally; left in, a conversation would
    hold two anchor groups and the model would predict two masks for one target.
    """
    for token in (*ANCHOR_TOKENS, IMAGE_PLACEHOLDER):
        text = text.replace(token, "")
    return " ".join(text.split())


def _fill(template: str, record: InstructRecord | None, anchors: tuple[str, ...], obj: str) -> str:
    values = {"anchors": anchor_string(anchors), "object": obj}
    if record is not None:
        f = {k.lower(): _clean(v) for k, v in record.to_dict().items()}
        values.update(f, observation_clause=_clause(f["observation"]), summary_clause=_clause(f["summary"]))
    return template.format(**values)


def _user(text: str, first: bool) -> Turn:
    return {"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{text}" if first else text}


def _assistant(text: str) -> Turn:
    return {"role": "assistant", "content": text}


def _check_anchors(anchors: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [a for a in anchors if a not in ANCHOR_TOKENS]
    if unknown or not anchors:
        raise ValueError(f"anchors must be a non-empty subset of {ANCHOR_TOKENS}, got {anchors}")
    return tuple(anchors)


def _resolve(record: InstructRecord | None, anomalous: bool, kind: str, cls_name: str | None,
             rng: np.random.Generator) -> InstructRecord | None:
    if not anomalous:
        return record if record is not None else normal_record(cls_name, seed=rng)
    if record is None and kind != "direct":
        raise ValueError(f"instruction type {kind!r} needs a record for an anomalous image")
    return record


def _question_answer(kind: str, record: InstructRecord | None, anomalous: bool, anchors: tuple[str, ...],
                     obj: str, rng: np.random.Generator) -> tuple[str, str]:
    if kind == "direct":
        question = _pick(rng, DIRECT_QUESTIONS)
        answer = _pick(rng, DIRECT_ANSWERS if anomalous else DIRECT_ANSWERS_NORMAL)
    elif kind in ("describe", "describe-plus"):
        question = _pick(rng, DESCRIBE_QUESTIONS)
        answer = _pick(rng, DESCRIBE_ANSWERS)
        if kind == "describe-plus":
            question = "{expectation} " + question
    elif kind == "explain":
        question = _pick(rng, EXPLAIN_QUESTIONS)
        answer = _pick(rng, EXPLAIN_ANSWERS)
    else:
        raise ValueError(f"unknown instruction type {kind!r}; expected one of {INSTRUCTION_TYPES}")
    return _fill(question, record, anchors, obj), _fill(answer, record, anchors, obj)


def render(kind: str, record: InstructRecord | None, rng: np.random.Generator,
           anchors: tuple[str, ...] = ANCHOR_TOKENS, anomalous: bool = True,
           cls_name: str | None = None) -> Conversation:
    """One single-turn conversation of the given instruction type.

    For a normal image the record may be None (a normal record is written); its answers say there is
    no anomaly and still carry the anchors, because the (empty) mask is still predicted from them.
    """
    anchors = _check_anchors(anchors)
    record = _resolve(record, anomalous, kind, cls_name, rng)
    question, answer = _question_answer(kind, record, anomalous, anchors, _noun(cls_name), rng)
    return [_user(question, first=True), _assistant(answer)]


def render_multi_turn(record: InstructRecord | None, rng: np.random.Generator,
                      anchors: tuple[str, ...] = ANCHOR_TOKENS, anomalous: bool = True,
                      cls_name: str | None = None) -> Conversation:
    """A short dialogue: either expectation first then segmentation, or segmentation then "why?".

    Only the segmenting assistant turn carries the anchors, so one conversation still means one mask.
    """
    anchors = _check_anchors(anchors)
    obj = _noun(cls_name)
    if record is None and anomalous:
        raise ValueError("a multi-turn dialogue needs a record for an anomalous image")
    record = _resolve(record, anomalous, "describe", cls_name, rng)
    assert record is not None
    if rng.random() < 0.5:
        kind = _pick(rng, ("direct", "describe"))
        q2, a2 = _question_answer(kind, record, anomalous, anchors, obj, rng)
        return [
            _user(_fill(_pick(rng, EXPECTATION_QUESTIONS), record, anchors, obj), first=True),
            _assistant(_clean(record.expectation)),
            _user(q2, first=False),
            _assistant(a2),
        ]
    q1, a1 = _question_answer("direct", record, anomalous, anchors, obj, rng)
    return [
        _user(q1, first=True),
        _assistant(a1),
        _user(_pick(rng, FOLLOW_UP_QUESTIONS), first=False),
        _assistant(_clean(record.explanation)),
    ]


DEFAULT_TYPE_RATES: Mapping[str, float] = {
    "direct": 0.25, "describe": 0.25, "describe-plus": 0.2, "explain": 0.2, "multi-turn": 0.1,
}


def sample_conversation(record: InstructRecord | None, rng: np.random.Generator,
                        anchors: tuple[str, ...] = ANCHOR_TOKENS, anomalous: bool = True,
                        cls_name: str | None = None,
                        type_rates: Mapping[str, float] | None = None) -> tuple[str, Conversation]:
    """Pick an instruction type by rate and render it; returns (type, conversation).

    Without a record an anomalous image can only get direct segmentation, whatever the rates say.
    """
    rates = dict(type_rates or DEFAULT_TYPE_RATES)
    allowed = set(INSTRUCTION_TYPES) | {"multi-turn"}
    bad = sorted(set(rates) - allowed)
    if bad:
        raise ValueError(f"unknown instruction type(s) {bad}; expected some of {sorted(allowed)}")
    if anomalous and record is None:
        rates = {"direct": 1.0}
    names = [k for k, v in rates.items() if v > 0]
    if not names:
        raise ValueError("all instruction type rates are zero")
    p = np.array([rates[k] for k in names], dtype=np.float64)
    kind = names[int(rng.choice(len(names), p=p / p.sum()))]
    if kind == "multi-turn":
        return kind, render_multi_turn(record, rng, anchors, anomalous, cls_name)
    return kind, render(kind, record, rng, anchors, anomalous, cls_name)


def inference_prompt(mode: str, instruction: str | None = None, expectation: str | None = None,
                     with_image: bool = True) -> str:
    """The fixed user prompt of an inference mode (the first phrasing of its training templates).

    describe-plus prepends the expectation sentence (the paper's expert-provided prior), so it needs
    one. `instruction` replaces the fixed question of any mode. With `with_image` the prompt starts
    with IMAGE_PLACEHOLDER and a newline, exactly like the first user turn of training conversations.
    """
    fixed = {"direct": DIRECT_INSTRUCTION, "describe": DESCRIBE_INSTRUCTION,
             "describe-plus": DESCRIBE_INSTRUCTION, "explain": EXPLAIN_INSTRUCTION}
    if mode not in fixed:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    text = instruction if instruction else fixed[mode]
    if mode == EXPECTATION_MODE:
        if needs_expectation(mode, expectation):
            raise ValueError("mode 'describe-plus' needs an expectation sentence (the normal appearance)")
        text = f"{expectation.strip()} {text}"
    return f"{IMAGE_PLACEHOLDER}\n{text}" if with_image else text


def inference_conversation(mode: str, instruction: str | None = None,
                           expectation: str | None = None) -> Conversation:
    """The user turn of an inference request, in the same shape as training conversations."""
    return [_user(inference_prompt(mode, instruction, expectation, with_image=False), first=True)]
