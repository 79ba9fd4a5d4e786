"""Who this process is among the processes of one sharded job (`accelerate launch ... -m agvas.cli eval` or
`... segment`), and how to wait for the others. One process when nothing launched several.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Distributed:
    """Rank r of W takes items r, r+W, ...; `barrier` waits until every process got there."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = field(default=lambda: None, repr=False)
    device: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def detect(cls) -> Distributed:
        """From the launcher's environment (`accelerate launch`, torchrun); one process otherwise.

        accelerate is only imported when several processes run, which keeps single runs light. A bare
        `PartialState()` ignores ACCELERATE_USE_CPU (only `Accelerator` reads it) and, without a GPU, would
        silently give every worker the whole dataset; so CPU is asked for explicitly, and a process count
        that disagrees with the launcher's is an error rather than W identical runs racing on one folder.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
        if state.num_processes != world:
            raise RuntimeError(f"launched as {world} processes but accelerate set up {state.num_processes}")
        return cls(state.process_index, state.num_processes, state.wait_for_everyone, state.device)
