"""The API's request options and responses: one place that the handlers, the OpenAPI schema and the
page's expectations all follow.

Options arrive as a JSON string in a multipart field next to the image (a file and structured options
cannot share one JSON body), so they are validated here by pydantic rather than by FastAPI's form
parsing; unknown keys are refused so a typo ("instructions") fails loudly instead of being ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agvas.anchors import IMAGE_PLACEHOLDER
from agvas.modes import EXPECTATION_HELP, EXPECTATION_MODE, MODES, MODES_TEXT, needs_expectation

Mode = Literal[MODES]  # type: ignore[valid-type]  # agvas.modes.MODES as a Literal: one list, one schema enum
MAX_TEXT = 2000
"""Characters of one instruction, expectation or chat message."""
MAX_CHAT_TURNS = 16
"""Earlier question/answer pairs a chat request may carry (the prompt grows with every turn)."""


def _clean_text(value: str | None) -> str | None:
    """Blank means absent, and the image placeholder is the server's to place."""
    if value is None:
        return None
    value = value.strip()
    if IMAGE_PLACEHOLDER in value:
        raise ValueError(f"{IMAGE_PLACEHOLDER} is reserved: the uploaded image is already part of the prompt")
    return value or None


class SegmentOptions(BaseModel):
    """The `options` field of POST /v1/segment."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field("direct", description=MODES_TEXT.replace("direct", "direct (fastest)", 1))
    instruction: str | None = Field(None, max_length=MAX_TEXT, description="replaces the mode's fixed question")
    expectation: str | None = Field(None, max_length=MAX_TEXT,
                                    description=f"the normal appearance, one sentence (required by {EXPECTATION_MODE})")
    threshold: float | None = Field(None, ge=0.0, lt=1.0,
                                    description="cut on P for the mask (pixels above it are anomalous); "
                                                "absent: the server's (the paper's 0.5 unless started otherwise)")
    visuals: bool = Field(False, description="also return overlay, heat-map and probability-map PNGs (what the "
                                             "web page shows)")

    @field_validator("instruction", "expectation")
    @classmethod
    def _texts(cls, value: str | None) -> str | None:
        return _clean_text(value)

    @model_validator(mode="after")
    def _expectation_needed(self) -> SegmentOptions:
        if needs_expectation(self.mode, self.expectation):
            raise ValueError(f"mode '{EXPECTATION_MODE}' needs 'expectation': {EXPECTATION_HELP}")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(..., max_length=4 * MAX_TEXT)


class ChatOptions(BaseModel):
    """The `options` field of POST /v1/chat: the new question and the dialogue so far.

    The server keeps no sessions: the client sends back the `history` of the previous response, so a
    restart, a second tab or a second server loses nothing and no session ever needs expiring.
    """

    model_config = ConfigDict(extra="forbid")

    message: str = Field(..., min_length=1, max_length=MAX_TEXT, description="the new question")
    history: list[ChatMessage] = Field(default_factory=list, max_length=2 * MAX_CHAT_TURNS,
                                       description="earlier turns, exactly as the last response returned them")
    visuals: bool = Field(False, description="also return overlay and heat-map PNGs")

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
        cleaned = _clean_text(value)
        if not cleaned:
            raise ValueError("the message is empty")
        return cleaned

    @field_validator("history")
    @classmethod
    def _alternates(cls, history: list[ChatMessage]) -> list[ChatMessage]:
        for i, msg in enumerate(history):
            expected = "user" if i % 2 == 0 else "assistant"
            if msg.role != expected:
                raise ValueError(f"history[{i}] should be a {expected} message: turns alternate user, assistant, "
                                 "starting with the user")
            if IMAGE_PLACEHOLDER in msg.content:
                raise ValueError(f"history[{i}] contains {IMAGE_PLACEHOLDER}, which is reserved")
        if len(history) % 2:
            raise ValueError("history must end with an assistant message (send the last response's history)")
        return history


class SegmentResponse(BaseModel):
    text: str = Field(..., description="the model's answer as a person reads it: the anchor tokens removed")
    raw_text: str = Field(..., description="the answer exactly as generated, anchor tokens ([NOR][ANO][SEG]) "
                                           "included; chat history carries this form")
    score: float = Field(..., description="image-level anomaly score: the maximum of the probability map")
    anomalous: bool = Field(..., description="the decision: the mask is non-empty")
    threshold: float = Field(..., description="the cut on P that made the mask")
    min_area: float = Field(0.0, description="masks covering less than this share of the image are emptied "
                                             "(0: the paper's rule)")
    area_fraction: float = Field(..., description="fraction of the image inside the mask")
    mode: str
    anchors_found: bool = Field(..., description="false when the answer held no anchors (then the mask is empty)")
    text_verdict: Literal["anomalous", "normal"] | None = Field(
        None, description="what the generated answer says about the image (a documented rule on its words, "
                          "agvas/verdict.py); null in direct mode and where the text decides nothing")
    text_agrees: bool | None = Field(None, description="whether text_verdict is the mask's decision; false is a "
                                                       "contradiction between the answer and the mask")
    note: str | None = None
    width: int
    height: int
    mask_png_base64: str = Field(..., description="the mask at the image's size, PNG, 0 = normal, 255 = anomalous")
    overlay_png_base64: str | None = Field(None, description="with visuals: heat map blended on the image "
                                                             "(at most 1024 px a side)")
    heat_png_base64: str | None = Field(None, description="with visuals: the probability map, colour-coded")
    map_png_base64: str | None = Field(None, description="with visuals: P itself as an 8-bit grey PNG (value = "
                                                         "round(255·P), overlay size), for re-thresholding "
                                                         "without a new request")
    elapsed_ms: float = Field(..., description="time from upload to result, queueing included")


class ChatResponse(SegmentResponse):
    history: list[ChatMessage] = Field(..., description="the dialogue including this turn: send it back next time")
    turn: int


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    queue: int = Field(..., description="requests waiting for or being processed by the model worker")
    detail: str | None = None


class ServerInfo(BaseModel):
    model: str
    source: str | None
    device: str
    modes: list[str]
    max_upload_mb: float
    max_pixels: int
    max_batch: int
    threshold: float = Field(0.5, description="the default cut on P (a segment request may set its own)")
    min_area: float = Field(0.0, description="the default minimum mask area, as a share of the image")
    chat_history: str = "client-side: each /v1/chat request carries the dialogue so far"


class ErrorBody(BaseModel):
    error: str = Field(..., description="a short code, e.g. payload_too_large")
    message: str = Field(..., description="what went wrong and what to do about it")
