"""One server per run folder: a lock file held for the server's lifetime.

Two servers started with the same ``run-name`` would both write ``config.yaml``, ``server_state.pt`` and the
round logs of one folder. The first to start creates ``<run folder>/server.lock`` exclusively (``O_EXCL``) and
writes its host name and process id into it; a second one finds it and stops with an error naming the holder.
A lock left by a server that died without removing it (killed, machine reset) is recognised by its process id
no longer running on this host, or running a process that started at another time (Linux: the start time in
``/proc/<pid>/stat``; a restarted container numbers its processes from 1 again, so a new process may hold the
dead server's pid), and taken over with a warning. A lock written on another host cannot be checked
from here: the error says which file to delete once that server is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from server.state import ResumeError

log = logging.getLogger(__name__)

LOCK_NAME = "server.lock"


def _pid_running(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22; the name in (...) may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _read_holder(path: Path) -> dict[str, object] | None:
    """The lock file's content, or None when it is unreadable (being written, or damaged)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class RunFolderLock:
    """Hold ``<run_dir>/server.lock`` while a server runs in ``run_dir``; use as a context manager.

    Parameters
    ----------
    run_dir
        The run folder; created when missing.

    Raises
    ------
    ResumeError
        On entry, if a live server (this host) or a server on another host holds the folder.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._held = False

    def _create(self) -> bool:
        """Create the lock file exclusively; False if it already exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": _start_ticks(os.getpid())}, handle)
        return True

    def acquire(self) -> None:
        """Take the lock, replacing a stale one (see the module docstring)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            holder = _read_holder(self.path)
            pid, host = (holder or {}).get("pid"), (holder or {}).get("host")
            if holder is None or not isinstance(pid, int):
                raise ResumeError(
                    f"{self.path.parent} is locked by {self.path}, which cannot be read; if no server runs in "
                    "this folder any more, delete that file and start again"
                )
            if host != socket.gethostname():
                raise ResumeError(
                    f"{self.path.parent} is in use by a server on host {host} (pid {pid}); choose another run-name, "
                    f"or delete {self.path} once that server is known to be stopped"
                )
            started = holder.get("started")
            # The pid may now belong to another process (this one, or one started later): then the holder is gone.
            reused = pid == os.getpid() or (isinstance(started, int) and _start_ticks(pid) not in (None, started))
            if not reused and _pid_running(pid):
                raise ResumeError(
                    f"{self.path.parent} is in use by a running server (pid {pid}); wait for it to finish, stop it, "
                    "or choose another run-name"
                )
            log.warning("%s was left by server pid %d, which no longer runs: taking it over", self.path, pid)
            self.path.unlink(missing_ok=True)
            if not self._create():  # another server took it over in between
                raise ResumeError(f"{self.path.parent} was just locked by another server; choose another run-name")
        self._held = True

    def release(self) -> None:
        """Remove the lock file if this object holds it."""
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._held = False

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
