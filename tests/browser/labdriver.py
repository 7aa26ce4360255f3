"""Driving JupyterLab for the browser test: a sandboxed server (:class:`Lab`) and Chromium (:class:`Page`).

:func:`start_lab` runs JupyterLab from the venv with the project's outputs under
``build/browser/`` and Jupyter's own state in a temporary folder; :func:`start_browser`
runs the system's headless Chromium through its chromedriver. Both stop exactly what
they started. :class:`Page` waits on JupyterLab's own state (``window.jupyterapp``,
exposed by the server's ``--LabApp.expose_app_in_browser``) rather than sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
OUT = REPO_ROOT / "build" / "browser"  # screenshots, logs, the notebook copy and the sandboxed outputs
JUPYTER = REPO_ROOT / ".venv" / "bin" / "jupyter"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"

SERVER_START_TIMEOUT = 120  # s, JupyterLab answering /api/status
SERVER_STOP_TIMEOUT = 30  # s, after SIGTERM, before SIGKILL
PAGE_LOAD_TIMEOUT = 120  # s, JupyterLab's UI up and the document open
KERNEL_READY_TIMEOUT = 120  # s, kernel started, connected and idle

# JupyterLab user settings for the sandboxed run. Autosave off: a document must never be
# written unless the test saves it (the tracked notebook is opened too); no news or update
# checks (no network here, and their notification would cover the page).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process_group(proc: subprocess.Popen, timeout: float = SERVER_STOP_TIMEOUT) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session=True``), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


@dataclass
class Lab:
    """A running JupyterLab server serving the repository root."""

    url: str
    token: str
    log: Path
    proc: subprocess.Popen

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def tree_url(self, path: str) -> str:
        # ?reset: start from an empty layout rather than the workspace of the previous page.
        return f"{self.url}/lab/tree/{urllib.parse.quote(path)}?reset&token={self.token}"

    def shut_down_sessions(self, path: str | None = None) -> None:
        """Delete the sessions (and so stop the kernels) of ``path``, or all of them."""
        for session in self.api("GET", "sessions"):
            if path is None or session.get("path") == path:
                self.api("DELETE", f"sessions/{session['id']}")

    def saves_logged(self, path: str) -> list[str]:
        """The server's log lines about saving ``path`` (jupyter_server logs every save)."""
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if line.rstrip().endswith(f"Saving file at /{path}")]


def _sandbox_env(home: Path) -> dict[str, str]:
    """The server's (and so the kernels') environment.

    The project's outputs go under build/browser/, Jupyter's own state into ``home``.
    """
    from alvae_utils.workflow import papermill as workflow

    env = dict(os.environ)
    env.pop("ALVAE_PROGRESS_LOG", None)  # progress lines belong in the widgets here, not in a file
    env.pop("JUPYTER_TOKEN", None)
    # The ci profile's environment (offline, and its generated ChestMNIST file), with every
    # location moved under build/browser/: results and figures start empty on every run.
    ci = workflow.ci_sandbox()
    shutil.copytree(ci["ALVAE_DATA_ROOT"], OUT / "data")
    env.update(ci)
    env.update({"ALVAE_DATA_ROOT": str(OUT / "data"), "ALVAE_RESULTS_ROOT": str(OUT / "results"),
                "ALVAE_FIGURES_DIR": str(OUT / "figures"), "ALVAE_OFFLINE": "1"})
    # Jupyter's own state in a throwaway folder, so the user's settings and workspaces are neither
    # used nor touched. JUPYTER_PATH is left alone: the "alvae" kernel is installed with
    # --sys-prefix (.venv/share/jupyter), which stays on the path of the venv's jupyter.
    for name in ("CONFIG_DIR", "DATA_DIR", "RUNTIME_DIR"):
        env[f"JUPYTER_{name}"] = str(home / name.lower())
    env["JUPYTERLAB_SETTINGS_DIR"] = str(home / "lab-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(home / "lab-workspaces")
    env["IPYTHONDIR"] = str(home / "ipython")
    for plugin, settings in LAB_SETTINGS.items():
        file = home / "lab-settings" / f"{plugin}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(settings))
    return env


@contextlib.contextmanager
def start_lab() -> Iterator[Lab]:
    """JupyterLab from the venv on 127.0.0.1, a free port and a random token, rooted at the repository.

    Wipes and recreates ``build/browser/`` first. On exit, stops the kernels (they run in
    sessions of their own), then the server's process group, and removes the temporary folder.
    """
    if not os.access(JUPYTER, os.X_OK):
        raise RuntimeError(f"{JUPYTER} not found: run `make setup` first")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    home = Path(tempfile.mkdtemp(prefix="alvae-browser-"))
    port, token = _free_port(), secrets.token_hex(24)
    command = [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO_ROOT}",
               # JupyterLab checkpoints every writable file it opens that has none yet: an absolute
               # folder keeps those out of the repository (notebooks/.ipynb_checkpoints/).
               f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",
               # window.jupyterapp: lets the test wait on JupyterLab's own state (kernel, dirty flag)
               "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = OUT / "jupyterlab.log"
    proc = None
    try:
        env = _sandbox_env(home)
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        lab = Lab(url=f"http://127.0.0.1:{port}", token=token, log=log, proc=proc)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with status {proc.returncode} while starting; "
                                   f"{log.relative_to(REPO_ROOT)} ends with:\n{_tail(log)}")
            try:
                lab.api("GET", "status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer on port {port} within {SERVER_START_TIMEOUT} s; "
                                       f"{log.relative_to(REPO_ROOT)} ends with:\n{_tail(log)}") from None
                time.sleep(0.5)  # polling an HTTP endpoint: there is nothing to wait on
        yield lab
    finally:
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(OSError):  # URLError is an OSError
                    lab.shut_down_sessions()
            stop_process_group(proc)
        shutil.rmtree(home, ignore_errors=True)


# JavaScript run in the page. FIND_PANEL sets `panel` to the open document whose path is arguments[0].
FIND_PANEL = """
const app = window.jupyterapp;
const panel = app && Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === arguments[0]);
"""
PANEL_STATE_JS = FIND_PANEL + """
if (!panel) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
return {ready: panel.context.isReady && panel.sessionContext.isReady,
        kernel_status: kernel ? kernel.status : null, connection: kernel ? kernel.connectionStatus : null,
        kernel_display_name: panel.sessionContext.kernelDisplayName, dirty: panel.context.model.dirty};
"""
# Resolves once the document is loaded, its kernel has answered kernel_info and its spec is known
# (JupyterLab writes language_info and kernelspec into the notebook's metadata then), and the
# page has painted twice since (tab classes are updated on the next frame).
SETTLED_JS = FIND_PANEL + """
const done = arguments[arguments.length - 1];
(async () => {
  await panel.context.ready;
  await panel.sessionContext.ready;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (kernel) { await kernel.info; await kernel.spec; }
  await new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  done({dirty: panel.context.model.dirty, notebook: panel.context.model.toJSON()});
})().catch(error => done({error: String(error)}));
"""
TAB_JS = """
return Array.from(document.querySelectorAll('#jp-main-dock-panel .lm-TabBar-tab'))
  .find(tab => (tab.title || '').split('\\n').includes('Path: ' + arguments[0])) || null;
"""
DIALOGS_JS = "return Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText);"


class Page:
    """Chromium showing JupyterLab, with waits on JupyterLab's state."""

    def __init__(self, driver, lab: Lab):
        self.driver = driver
        self.lab = lab

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, condition, timeout: float, message, poll: float = 0.25):
        """Wait until ``condition(driver)`` is truthy and return it; on timeout fail with ``message``.

        ``message`` is a string, or a function returning one (called on timeout).
        """
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=poll).until(condition)
        except TimeoutException:
            dialogs = self.js(DIALOGS_JS)
            shown = f"; dialog shown: {dialogs}" if dialogs else ""
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f} s: {text}{shown}") from None

    def open(self, path: str) -> None:
        """Open ``path`` (relative to the repository) in a freshly loaded JupyterLab."""
        self.driver.get(self.lab.tree_url(path))
        self.wait(lambda d: self.js(PANEL_STATE_JS, path), PAGE_LOAD_TIMEOUT,
                  f"JupyterLab did not open {path} (is window.jupyterapp exposed?)")

    def state(self, path: str) -> dict:
        return self.js(PANEL_STATE_JS, path) or {}

    def wait_kernel_ready(self, path: str) -> dict:
        def ready(_driver):
            if self.js(DIALOGS_JS):  # "Select Kernel" and the like: nothing will start by itself
                return {"dialog": True}
            state = self.state(path)
            return state if state.get("ready") and state.get("kernel_status") == "idle" \
                and state.get("connection") == "connected" else None

        state = self.wait(ready, KERNEL_READY_TIMEOUT, f"the kernel of {path} did not become idle")
        if "dialog" in state:
            raise AssertionError(f"JupyterLab asks instead of starting the kernel of {path}: {self.js(DIALOGS_JS)}")
        return state

    def settled(self, path: str) -> dict:
        """The dirty flag and notebook JSON of ``path`` once its kernel's metadata has been applied."""
        result = self.driver.execute_async_script(SETTLED_JS, path)
        if "error" in result:
            raise AssertionError(f"could not read the state of {path}: {result['error']}")
        return result

    def tab(self, path: str):
        return self.js(TAB_JS, path)

    def tab_is_dirty(self, path: str) -> bool:
        tab = self.tab(path)
        assert tab is not None, f"no tab for {path}"
        return "jp-mod-dirty" in tab.get_attribute("class").split()

    def close_without_saving(self, path: str) -> None:
        """Close the tab of ``path``; if JupyterLab asks to save, answer Discard."""
        from selenium.webdriver.common.by import By

        self.tab(path).find_element(By.CSS_SELECTOR, ".lm-TabBar-tabCloseIcon").click()
        closed_or_asked = self.wait(lambda d: "closed" if self.tab(path) is None else
                                    d.find_elements(By.CSS_SELECTOR, ".jp-Dialog"), 30,
                                    f"the tab of {path} neither closed nor asked to save")
        if closed_or_asked != "closed":
            buttons = closed_or_asked[0].find_elements(By.CSS_SELECTOR, ".jp-Dialog-button")
            discard = [button for button in buttons if button.text.strip() == "Discard"]
            assert discard, f"closing {path} asked {closed_or_asked[0].text!r} without a Discard button"
            discard[0].click()
            self.wait(lambda d: self.tab(path) is None, 30, f"the tab of {path} did not close after Discard")

    def screenshot(self, name: str) -> Path:
        path = OUT / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def dump(self, name: str) -> None:
        """Screenshot, page text and the open notebooks' JSON, for debugging a failure."""
        try:
            self.screenshot(name)
            (OUT / f"{name}.txt").write_text(self.js("return document.body.innerText") or "", encoding="utf-8")
            notebooks = self.js("""
                const app = window.jupyterapp; if (!app) return {};
                const out = {};
                for (const w of app.shell.widgets('main')) {
                  if (w.context) out[w.context.path] = w.context.model.toJSON();
                }
                return out;""")
            (OUT / f"{name}.notebooks.json").write_text(json.dumps(notebooks, indent=1), encoding="utf-8")
        except Exception as error:  # a dead browser must not hide the original failure
            (OUT / f"{name}.txt").write_text(f"could not dump the page: {error!r}", encoding="utf-8")


@contextlib.contextmanager
def start_browser(lab: Lab) -> Iterator[Page]:
    """Headless Chromium (the system's chromium and chromedriver) on a 1400x1000 window, showing ``lab``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile_dir = Path(tempfile.mkdtemp(prefix="alvae-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # given, with the driver below: Selenium Manager never runs
    for argument in ("--headless=new", "--window-size=1400,1000", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile_dir}"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(OUT / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_script_timeout(KERNEL_READY_TIMEOUT)
            yield Page(driver, lab)
        finally:
            driver.quit()  # stops the chromedriver it started, which closes its chromium
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)
