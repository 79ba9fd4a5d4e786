"""The AG-VAS network and its parts (one module each, as in SAM's `modeling/`).

The names below are loaded on first use (PEP 562): `agvas.model.config` is read by every command's
help text, and importing the network here would load torch and transformers (~7 s) for `--help`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agvas.model.agvas import AGVASModel, AGVASOutput, fuse
    from agvas.model.config import PRESETS, VARIANTS, AGVASConfig, preset_config

_WHERE = {
    "AGVASModel": "agvas.model.agvas", "AGVASOutput": "agvas.model.agvas", "fuse": "agvas.model.agvas",
    "PRESETS": "agvas.model.config", "VARIANTS": "agvas.model.config", "AGVASConfig": "agvas.model.config",
    "preset_config": "agvas.model.config",
}

__all__ = ["AGVASConfig", "AGVASModel", "AGVASOutput", "PRESETS", "VARIANTS", "fuse", "preset_config"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agvas.model' has no attribute {name!r}")
