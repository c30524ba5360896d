"""One job per output dir: an exclusive lock held for the job's lifetime.

A second job on the same `output.dir` took the first one's unfinished shards for a killed run's
leftovers and deleted them. `flock` is the right tool: the kernel drops the lock when the
holder's process ends however it ends (`kill -9` included), so a stale lock file never blocks
the next run, and there is no pid to check for liveness. The file holds the holder's pid, for
the error message only. The descriptor is not inherited by processes the job starts (Python's
default), so Ray's daemons cannot keep it held after the job is gone. On NFS, Linux maps flock
to a POSIX lock on the server.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

from jobs.errors import OutputError

LOCK_FILE = ".judgefleet.lock"


class OutputLock:
    def __init__(self, fd: int, path: Path):
        self._fd: Optional[int] = fd
        self.path = path

    @classmethod
    def acquire(cls, out_dir: Path) -> "OutputLock":
        path = Path(out_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"output.dir: cannot create the lock file '{path}' ({e.strerror}); "
                              "choose a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"output.dir '{out_dir}' is in use by another judgefleet job (pid {holder}); "
                              "wait for it to end, or choose another output.dir") from None
        # The file is never removed: a job that opened it before a removal would lock a file
        # nobody else sees. Its content is only who holds it now.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
