"""The AG-VAS network and its parts (one module each, as in SAM's `modeling/`)."""

from agvas.model.agvas import AGVASModel, AGVASOutput, fuse
from agvas.model.config import PRESETS, VARIANTS, AGVASConfig, preset_config

__all__ = ["AGVASConfig", "AGVASModel", "AGVASOutput", "PRESETS", "VARIANTS", "fuse", "preset_config"]
