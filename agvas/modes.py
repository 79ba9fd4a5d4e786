"""The inference contract: which single-turn modes exist and what each one needs.

Kept at the bottom of the package beside `agvas.anchors`, so that the prompts (data), the Segmenter's
checks (infer), the command line and the API's request schema and /v1/info (serve) all read one list
and one rule, and a new mode is added in one place.
"""

from __future__ import annotations

from typing import Final

MODES: Final[tuple[str, ...]] = ("direct", "describe", "describe-plus", "explain")
"""The paper's four instruction types, each a single-turn mode of `Segmenter.segment`."""
DIRECT_MODE: Final = MODES[0]
"""The one mode whose answer is fixed ("Sure, it is [NOR][ANO][SEG]."), teacher-forced: it says nothing."""
MODES_TEXT: Final = f"{', '.join(MODES[:-1])} or {MODES[-1]}"
"""The modes as help texts list them ("direct, describe, describe-plus or explain")."""
CHAT_MODE: Final = "chat"
"""Multi-turn dialogue: not a mode of `segment` but `Segmenter.chat` and POST /v1/chat."""

EXPECTATION_MODE: Final = "describe-plus"
"""The mode whose prompt starts with an expectation sentence (the paper's expert-provided prior)."""
EXPECTATION_HELP: Final = ("a sentence describing the normal appearance "
                           "(e.g. 'A normal hazelnut has a smooth, uniformly brown shell.')")


def needs_expectation(mode: str, expectation: str | None) -> bool:
    """True when `mode` needs an expectation sentence and none (or only blanks) was given."""
    return mode == EXPECTATION_MODE and not (expectation and expectation.strip())
