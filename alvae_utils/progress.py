"""Progress: widget bars in JupyterLab, text bars in a terminal, and step lines for ``make figures``.

Bars come from ``tqdm.auto``: in a Jupyter kernel with ipywidgets they are widgets,
elsewhere text on stderr. Three levels are shown: the runs of a sweep, the steps of a
run and the epochs of a training. While ``make figures`` executes a notebook, the
kernel's cell outputs are not visible in the terminal, so with ``$ALVAE_PROGRESS_LOG``
naming a file (``make figures`` sets it), every finished run, step and VAE epoch is
also appended to that file as one timestamped line, which ``make figures`` prints as
it grows (:func:`follow`). Anything the kernel wrote to stdout or stderr would land in the
cell outputs; a file keeps these lines out of the executed notebooks and out of nbval.

In a notebook, the bars opened while another is open are shown inside the outermost
one's output, and once the outermost closes its output is replaced by one text line
(``quick/mnist runs: 15/15 done in 05:37``), so an executed copy reads as finished and
a live page has no closed widget left to show ("model not found").

alvae's own warnings (:class:`AlvaeWarning`: damage found in the store, a lock taken over, a cache recomputed)
are shown as their message alone, without the source line Python's default format adds (an internal line of
alvae, which says nothing to the reader).
"""

from __future__ import annotations

import os
import sys
import functools
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm



class AlvaeWarning(UserWarning):
    """A warning of alvae's to its user; shown as ``AlvaeWarning: message`` (:func:`_format_warning`)."""


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """:func:`warnings.formatwarning` with alvae's warnings as their message alone; others as Python shows them."""
    if isinstance(category, type) and issubclass(category, AlvaeWarning):
        return f"{category.__name__}: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = getattr(warnings.formatwarning, "python_format", warnings.formatwarning)
_format_warning.python_format = _python_format_warning  # a reload wraps Python's format, never its own wrapper
warnings.formatwarning = _format_warning

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
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text.rstrip(chr(10))}\n")


_said: set[str] = set()


def say_once(text: str) -> None:
    """Tell the reader a fact they need (the MNIST sample stands in for MNIST, say), once per process.

    One line on stderr (``alvae: ...``) and in the log of :func:`log_line`; the same
    text again is dropped, so a notebook (one kernel) says it once however often its
    cells meet it. Not a ``warnings.warn``: that prints the calling source line, and
    repeats once per call site.
    """
    line = " ".join(text.split())
    if line in _said:
        return
    _said.add(line)
    print(f"alvae: {line}", file=sys.stderr, flush=True)
    log_line(line)


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


PROGRESS_METADATA = "alvae_progress"
"""Metadata key of the text line a closed notebook bar leaves: progress, not a result (nbval skips it)."""


@functools.cache
def _notebook_bar() -> type | None:
    """The notebook bar class (see the module docstring) when ``tqdm.auto`` draws widgets here; else None."""
    from tqdm.notebook import tqdm as widget_tqdm

    if not issubclass(tqdm, widget_tqdm):
        return None
    from IPython.display import display
    from ipywidgets import VBox

    class NotebookBar(widget_tqdm):
        outermost: NotebookBar | None = None  # the open bar that owns the cell output; nested bars show inside it

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, display=False, **kwargs)
            if self.disable:
                return
            self.owner = NotebookBar.outermost
            if self.owner is None:
                NotebookBar.outermost = self
                self.box = VBox([self.container])
                self.handle = display(self.box, display_id=True)
            else:
                self.owner.box.children = (*self.owner.box.children, self.container)

        def close(self) -> None:
            if self.disable:
                return
            elapsed = self.format_interval(self.format_dict["elapsed"])
            finished = not self.total or self.n >= self.total
            line = f"{self.desc}: {self.n}/{self.total} " + (f"done in {elapsed}" if finished else
                                                               f"stopped after {elapsed}")
            if self.owner is None:
                NotebookBar.outermost = None
                # The text replaces the widgets before they close, so the page never shows a closed one.
                self.handle.update({"text/plain": line}, metadata={PROGRESS_METADATA: True}, raw=True)
                super().close()
                self.box.close()
            else:
                if NotebookBar.outermost is self.owner:  # else its output is already a line
                    self.owner.box.children = tuple(child for child in self.owner.box.children
                                                    if child is not self.container)
                super().close()
            # Closed widgets are dropped from the state saved with an executed copy.
            for widget in (*self.container.children, self.container):
                widget.close()

    def end_the_last_cells_bar(*_) -> None:
        # A bar left open by a cell that raised (its generator is kept alive by the stored traceback)
        # would take in the next cell's bars: it ends, as stopped, when a new cell runs.
        if NotebookBar.outermost is not None:
            NotebookBar.outermost.close()

    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        shell.events.register("pre_run_cell", end_the_last_cells_bar)
    return NotebookBar


def bar(total: int, desc: str, enabled: bool = True, initial: int = 0, leave: bool = False) -> tqdm:
    """A bar to advance by hand (``bar.update(1)``): a widget in a notebook, text in a terminal.

    ``leave`` keeps a finished text bar on the terminal; a notebook's outermost bar always leaves
    its final line, and nested ones vanish with it (module docstring).
    """
    kind = _notebook_bar() or tqdm
    return kind(total=total, desc=desc, initial=initial, leave=leave, disable=not _shown(enabled))


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
