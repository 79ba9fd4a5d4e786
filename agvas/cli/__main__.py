"""`python -m agvas.cli ...` (what `accelerate launch -m agvas.cli train ...` runs)."""

from agvas.cli import main

main()
