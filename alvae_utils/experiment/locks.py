"""One writer per run: a lock file that a process holds while it writes a run into the results store.

The lock of a run is ``<run_key>.lock`` beside its rows and state. It is created atomically
(``O_CREAT | O_EXCL``: of two processes, exactly one creates it) and holds the writer's host,
pid and token, and the attempt it belongs to (``owner``, see below). Its modification time is the
writer's heartbeat: refreshed at every step the run commits, and every :data:`HEARTBEAT_SECONDS` by a
light thread, so a long training does not look abandoned.

Another process that reaches a held run waits, naming the holder, until the lock is released, and
then loads or resumes the run. A lock is **stale**, and taken over with a warning, when

- its heartbeat is older than :data:`STALE_AFTER_SECONDS` (a crashed host, a suspended process; a pid
  cannot be checked from another host, so hosts' clocks must agree to well within this limit), or
- its holder ran on this host and its pid no longer exists (checked at once, with ``os.kill(pid, 0)``), or
- it belongs to an earlier attempt of the same unit of work (the same ``owner``): Ray retries a task
  whose worker died, or that ran out of GPU memory, with the arguments of the first attempt, so the retry
  takes over the lock of the attempt it replaces, on whatever node that one ran.

A writer whose lock was taken over (it was suspended past the limit, say) learns it at its next commit
(:meth:`RunLock.refresh` raises :class:`LockLost`) and stops before writing anything.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..progress import AlvaeWarning

STALE_AFTER_SECONDS = 180.0
"""A lock whose heartbeat is older than this is stale: its writer is gone (or stalled), and it is taken over.

Twelve heartbeats: room for a shared file system's attribute cache (NFS caches for up to 60 s) and for
some clock difference between hosts."""
HEARTBEAT_SECONDS = 15.0
"""How often a held lock's heartbeat is refreshed while its run trains, besides once per committed step."""
POLL_SECONDS = 1.0
"""How often a waiting process looks at a held lock again."""


class RunHeld(RuntimeError):
    """A run is being written by another live process; the message names it and what to do."""


class LockLost(RuntimeError):
    """This process's lock was taken over by another (its heartbeat looked stale); it must stop writing."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as read from its file: host, pid, token, owner (attempt), and the heartbeat's age in s.

    ``host`` and ``pid`` are None while the lock file's content is being written (just created).
    """

    host: str | None
    pid: int | None
    token: str | None
    owner: str | None
    heartbeat: float  # the lock file's modification time (seconds since the epoch)

    def age(self) -> float:
        return max(0.0, time.time() - self.heartbeat)

    def describe(self) -> str:
        """``"pid 4242 on node-3 (heartbeat 2 s ago)"``."""
        who = f"pid {self.pid} on {self.host}" if self.pid is not None else "a process that is creating its lock"
        return f"{who} (heartbeat {self.age():.0f} s ago)"

    def dead_here(self) -> bool:
        """Whether the holder ran on this host and its process is gone."""
        if self.host != socket.gethostname() or self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def stale(self, stale_after: float = STALE_AFTER_SECONDS) -> str | None:
        """Why this lock is stale, whoever looks at it (None: its writer may be alive): ``"writer pid 4242 on this
        host is gone"``, or its heartbeat is older than ``stale_after`` s."""
        if self.dead_here():
            return f"writer pid {self.pid} on this host is gone"
        if self.age() > stale_after:
            return f"its heartbeat is {self.age():.0f} s old, more than the limit of {stale_after:g} s"
        return None


def read_holder(path: Path) -> Holder | None:
    """The holder of the lock at ``path``, or None when there is no lock."""
    try:
        heartbeat = os.stat(path).st_mtime
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        content = json.loads(text)
        return Holder(str(content["host"]), int(content["pid"]), str(content["token"]), content.get("owner"),
                      heartbeat)
    except (ValueError, KeyError, TypeError):  # created, content not yet written (or cut short by a crash)
        return Holder(None, None, None, None, heartbeat)


class RunLock:
    """The lock of one run (a file ``path``), taken by this process for the work of ``owner``.

    ``owner`` names the unit of work across its attempts (a Ray task's retries share it; None: this
    attempt only). ``stale_after`` is the heartbeat age past which another's lock is taken over.
    """

    def __init__(self, path: Path, owner: str | None = None, stale_after: float = STALE_AFTER_SECONDS):
        self.path = Path(path)
        self.owner = owner
        self.stale_after = stale_after
        self.token = uuid.uuid4().hex
        self.held = False

    def _stale(self, holder: Holder) -> str | None:
        """Why ``holder``'s lock may be taken over (None: it may not)."""
        if self.owner is not None and holder.owner == self.owner:
            return "an earlier attempt of the same work (a retried task) held it"
        return holder.stale(self.stale_after)

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)  # a run's folder exists from its first commit
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "owner": self.owner,
                       "created": time.time()}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        self.held = True
        return True

    def _take_over(self, holder: Holder, reason: str) -> bool:
        """Remove ``holder``'s stale lock, unless it changed since it was judged; True when it was removed.

        The lock is first renamed aside (atomic: of two processes taking it over, one succeeds), then
        compared with what was judged stale; a lock refreshed or replaced meanwhile is put back.
        """
        aside = self.path.with_name(f".{self.path.name}.{self.token}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:  # released, or taken over by another process, meanwhile
            return False
        if read_holder(aside) != holder:
            try:
                os.link(aside, self.path)  # put back, unless a new lock exists already
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        warnings.warn(f"{self.path.name}: taking over the lock of {holder.describe()}: {reason}.",
                      AlvaeWarning, stacklevel=4)
        return True

    def try_acquire(self) -> Holder | None:
        """One attempt: None when this process now holds the lock (a stale one taken over, with a warning),
        else the live holder."""
        while not self._create():
            holder = read_holder(self.path)
            if holder is None:
                continue  # released meanwhile: try again
            reason = self._stale(holder)
            if reason is None:
                return holder
            self._take_over(holder, reason)
        return None

    def acquire(self, on_wait: Callable[[Holder], None] | None = None, poll: float = POLL_SECONDS) -> None:
        """Take the lock, waiting while a live process holds it; ``on_wait(holder)`` is called once per holder."""
        announced = None
        while (holder := self.try_acquire()) is not None:
            if on_wait is not None and (holder.token, holder.pid) != announced:
                on_wait(holder)
                announced = (holder.token, holder.pid)
            time.sleep(poll)

    def refresh(self) -> None:
        """Refresh the heartbeat; raises LockLost (naming the new holder) when the lock is no longer this process's."""
        holder = read_holder(self.path)
        if holder is None or holder.token != self.token:
            self.held = False
            taken = "removed" if holder is None else f"taken over by {holder.describe()}"
            raise LockLost(f"{self.path.name}: this process's lock was {taken}, as its heartbeat looked stale; "
                           "it stops here so that the run has one writer. Its committed steps stay stored.")
        os.utime(self.path)

    def release(self) -> None:
        """Remove the lock, if it is still this process's."""
        if self.held and (holder := read_holder(self.path)) is not None and holder.token == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False


def _beat(lock: RunLock, stop: threading.Event, every: float) -> None:
    """Refresh ``lock``'s heartbeat every ``every`` seconds until ``stop`` is set or the lock is lost."""
    while not stop.wait(every):
        try:
            lock.refresh()
        except (LockLost, OSError):  # the next commit reports a lost lock
            return


@contextmanager
def holding(lock: RunLock, on_wait: Callable[[Holder], None] | None = None,
            heartbeat: float = HEARTBEAT_SECONDS) -> Iterator[RunLock]:
    """Hold ``lock`` for the block (waiting for a live holder first), its heartbeat refreshed every ``heartbeat`` s.

    The lock is released however the block ends (an error, Ctrl-C); a killed process leaves it behind,
    stale at once on this host and after :data:`STALE_AFTER_SECONDS` anywhere.
    """
    lock.acquire(on_wait)
    stop = threading.Event()
    beater = threading.Thread(target=_beat, args=(lock, stop, heartbeat), name=f"heartbeat {lock.path.name}",
                              daemon=True)
    beater.start()
    try:
        yield lock
    finally:
        stop.set()
        beater.join()
        lock.release()
