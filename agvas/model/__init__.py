"""The AG-VAS network and its parts (one module each, as in SAM's `modeling/`).

The names below are loaded on first use (PEP 562): `agvas.model.config` is read by every command's
help text, and importing the network here would load torch and transformers (~7 s) for `--help`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agvas._lazy import lazy_names

if TYPE_CHECKING:
    from agvas.model.agvas import AGVASModel, AGVASOutput, fuse
    from agvas.model.config import PRESETS, VARIANTS, AGVASConfig, preset_config

_WHERE = {
    "AGVASModel": "agvas.model.agvas", "AGVASOutput": "agvas.model.agvas", "fuse": "agvas.model.agvas",
    "PRESETS": "agvas.model.config", "VARIANTS": "agvas.model.config", "AGVASConfig": "agvas.model.config",
    "preset_config": "agvas.model.config",
}

__all__ = ["AGVASConfig", "AGVASModel", "AGVASOutput", "PRESETS", "VARIANTS", "fuse", "preset_config"]


__getattr__ = lazy_names(__name__, _WHERE)
