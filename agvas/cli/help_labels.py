"""Plain type labels in help pages.

Recent typer prints a Python type after every option: `--help <bool>` for a flag that takes no value,
`<list[str]>` for an option given several times. A flag shows no label here, and a repeatable option or
argument shows its element type (`<str>`): an argument's `PATHS...` and an option's help text (`--set a
--set b`) already say that it repeats. Patched once, at import of `agvas.cli`; if typer's internals change, typer's own
labels are left as they are rather than failing the command.
"""

from __future__ import annotations

from typing import Any, get_args


def _plain_display_type(original: Any) -> Any:
    def display_type(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False):
            return None
        try:
            desc = self.type_descriptor
            if desc.is_list and not desc.is_choice:
                (element,) = get_args(desc.annotation)
                return f"<{self._bare_type(element)}>"
        except (AttributeError, TypeError, ValueError):
            pass
        return original(self, ctx)

    display_type.__wrapped__ = original  # type: ignore[attr-defined]
    return display_type


def install() -> None:
    """Replace typer's label function with the plain one (idempotent)."""
    try:
        from typer.core import _TyperParameter
    except ImportError:  # another typer layout: keep its labels
        return
    current = getattr(_TyperParameter, "display_type", None)
    if current is None or hasattr(current, "__wrapped__"):
        return
    _TyperParameter.display_type = _plain_display_type(current)
