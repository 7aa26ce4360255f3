"""Progress: widget bars in JupyterLab, text bars in a terminal, and step lines for ``make figures``.

Bars come from ``tqdm.auto``: in a Jupyter kernel with ipywidgets they are widgets,
elsewhere text on stderr. Three levels are shown: the runs of a sweep, the steps of a
run and the epochs of a training. While ``make figures`` executes a notebook, the
kernel's cell outputs are not visible in the terminal, so with ``$ALVAE_PROGRESS_LOG``
naming a file (``make figures`` sets it), every finished run, step and VAE epoch is
also appended to that file as one line, which ``make figures`` prints as it grows
(:func:`follow`). Anything the kernel wrote to stdout or stderr would land in the cell
outputs; a file keeps these lines out of the executed notebooks and out of nbval.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

LOG_VARIABLE = "ALVAE_PROGRESS_LOG"
SWITCH_VARIABLE = "ALVAE_PROGRESS"
"""``ALVAE_PROGRESS=0`` hides every bar. nbval sets it: it reads a cell's messages only after the
cell ends, and the widget traffic of a long cell would overflow the kernel's message queue."""


def _shown(enabled: bool) -> bool:
    return enabled and os.environ.get(SWITCH_VARIABLE, "1").strip().lower() not in {"0", "off", "false", "no"}

Item = TypeVar("Item")


def log_line(text: str) -> None:
    """Append ``text`` as one line to the file named by ``$ALVAE_PROGRESS_LOG``, if set."""
    path = os.environ.get(LOG_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(text.rstrip("\n") + "\n")


@contextmanager
def follow(path: Path, prefix: str = "  ", interval: float = 0.5) -> Iterator[None]:
    """While the block runs, print each line appended to ``path`` (a new, empty log) to stdout.

    Sets ``$ALVAE_PROGRESS_LOG`` to ``path`` for the block, so kernels started inside
    it (which inherit the environment) log there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    previous = os.environ.get(LOG_VARIABLE)
    os.environ[LOG_VARIABLE] = str(path)
    done = threading.Event()

    def pump() -> None:
        with open(path, encoding="utf-8") as log:
            while True:
                finished = done.is_set()  # read once more after the block ends, then stop
                for line in log.readlines():
                    print(prefix + line.rstrip("\n"), flush=True)
                if finished:
                    return
                done.wait(interval)

    thread = threading.Thread(target=pump, name="alvae-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if previous is None:
            os.environ.pop(LOG_VARIABLE, None)
        else:
            os.environ[LOG_VARIABLE] = previous


def note(text: str, enabled: bool = True) -> None:
    """A line of progress news (where a run started, say): on stderr, and in the log of :func:`log_line`.

    stderr, not stdout: nbval does not compare it, and it is hidden with the bars
    (``ALVAE_PROGRESS=0``).
    """
    if not enabled:
        return
    if _shown(enabled):
        print(text, file=sys.stderr, flush=True)
    log_line(text)


def bar(total: int, desc: str, enabled: bool = True, initial: int = 0, leave: bool = False) -> tqdm:
    """A bar to advance by hand (``bar.update(1)``): a widget in a notebook, text in a terminal."""
    return tqdm(total=total, desc=desc, initial=initial, leave=leave, disable=not _shown(enabled))


def track(items: Iterable[Item], desc: str, total: int | None = None, enabled: bool = True, initial: int = 0,
          leave: bool = False) -> Iterator[Item]:
    """Yield ``items``, advancing a bar after each one is done (and logging it, see :func:`log_line`).

    ``total`` defaults to ``len(items)``; ``initial`` counts items already done
    before (a resumed run). The bar closes when the loop ends or is interrupted.
    """
    total = len(items) if total is None else total  # type: ignore[arg-type]
    progress = bar(total, desc, enabled, initial, leave)
    done = initial
    try:
        for item in items:
            yield item
            done += 1
            progress.update(1)
            if enabled:
                log_line(f"{desc}: {done}/{total}")
    finally:
        progress.close()


class EventBuffer:
    """Events sent from other processes, kept in order for the driver to drain (run as a Ray actor).

    Workers ``add`` their events (a run started, a step stored) without waiting for a reply.
    It lives in this light module so that the actor's process does not import torch.
    """

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def add(self, event: tuple) -> None:
        self.events.append(event)

    def drain(self) -> list[tuple]:
        """The events added since the last drain, oldest first."""
        events, self.events = self.events, []
        return events
