"""One run at a time per output folder: two runs writing into the same folder lose each other's records.

The lock is the file `OUT/.agvas.lock`, held with `fcntl.flock` and holding the owner's PID and command.
A second run refuses at once with a message naming the owner (it does not wait: a batch job that
silently waits for hours looks hung). The kernel drops a flock when its process dies, even by SIGKILL,
so the lock of a dead run is taken over without any PID guessing; the file is removed at exit. The
lock is unlinked while still held, and a run that locked a file since unlinked tries again, so two
runs never both believe they own the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".agvas.lock"


class FolderBusyError(RuntimeError):
    """Another live run holds the output folder."""


def _owner(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another run"
    return text or "another run"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, flag: str = "--out", name: str = LOCK_FILE) -> Iterator[Path]:
    """Hold `folder`'s lock for the `with` block (the folder is created if needed).

    Raises FolderBusyError, naming the run that holds it and `flag` (the option that chose the folder),
    when another live process holds it. `name`: the lock file; the processes of one sharded run hold
    one each (the first the plain one, so a single run into the same folder is still refused).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusyError(
                f"{folder} is in use by {_owner(path)}; wait for that run to finish or choose another "
                f"{flag} (two runs writing into one folder would lose each other's results)") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous owner removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({' '.join(['agvas', *sys.argv[1:]])[:200]})\n".encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
