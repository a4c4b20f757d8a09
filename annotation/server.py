"""A local Label Studio server: install into its own venv, start bound to 127.0.0.1, stop by PID.

Label Studio pins Django, pytz and pyarrow, so it never shares the project venv: it lives in
``.venv-labelstudio`` (override with COUNTERANIMAL_LS_VENV). Its state (URL, PID, data dir, files
root) is a JSON file in the counteranimal config home; the admin token and password are files
beside it with mode 600, handed to the server through its environment, never its command line.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from curation import atomic
from curation.errors import UserError

LABEL_STUDIO_VERSION = "1.23.2"
REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin@localhost"

# Offline, loopback-only settings (DESIGN.md, "Real components and how they start").
OFFLINE_ENV = {
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "FEATURE_FLAGS_OFFLINE": "true",
    "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
}


def config_home() -> Path:
    """Where the launcher keeps state and secrets (COUNTERANIMAL_HOME overrides)."""
    if os.environ.get("COUNTERANIMAL_HOME"):
        return Path(os.environ["COUNTERANIMAL_HOME"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "counteranimal"


def token_path(home: Path | None = None) -> Path:
    return (home or config_home()) / "label-studio.token"


def password_path(home: Path | None = None) -> Path:
    return (home or config_home()) / "label-studio.password"


def state_path(home: Path | None = None) -> Path:
    return (home or config_home()) / "label-studio.json"


def venv_dir() -> Path:
    return Path(os.environ.get("COUNTERANIMAL_LS_VENV") or REPO_ROOT / ".venv-labelstudio")


@dataclass
class ServerState:
    url: str
    port: int
    pid: int
    data_dir: str
    files_root: str
    username: str
    log: str
    version: str = LABEL_STUDIO_VERSION


def ensure_installed(venv: Path | None = None) -> Path:
    """Return the `label-studio` executable, installing it into its own venv on first use."""
    venv = venv or venv_dir()
    exe = venv / "bin" / "label-studio"
    stamp = venv / f".installed-{LABEL_STUDIO_VERSION}"
    if exe.exists() and stamp.exists():
        return exe
    print(f"label-studio: installing label-studio=={LABEL_STUDIO_VERSION} into {venv} (first use, a few minutes)",
          file=sys.stderr)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable if not _in_venv() else _base_python(), "-m", "venv", str(venv)], check=True)
    log = venv / "install.log"
    with open(log, "ab") as out:
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
                               f"label-studio=={LABEL_STUDIO_VERSION}"], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not exe.exists():
        raise UserError(f"installing label-studio into {venv} failed; see {log}")
    stamp.touch()
    return exe


def _in_venv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def _base_python() -> str:
    return str(Path(sys.base_prefix) / "bin" / "python3")


def _secret(path: Path, nbytes: int) -> str:
    """Read a secret file, or create it (mode 600) with a fresh random value."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(nbytes)
    with atomic.atomic_path(path, mode=0o600) as tmp:   # mkstemp's file is 0600 from the start
        tmp.write_text(value)
    return value


def read_state(home: Path | None = None) -> ServerState | None:
    path = state_path(home)
    if not path.exists():
        return None
    try:
        return ServerState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise UserError(f"unreadable launcher state ({exc}); delete it to start afresh", where=str(path)) from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def responding(url: str, timeout: float = 2.0) -> bool:
    """True when the server answers its health endpoint."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start(port: int = 8080, data_dir: str | Path | None = None, files_root: str | Path | None = None,
          home: Path | None = None, timeout: float = 300.0) -> ServerState:
    """Start the server (or return the one already running) and wait until it answers."""
    home = home or config_home()
    state = read_state(home)
    if state and pid_alive(state.pid) and responding(state.url):
        return state
    exe = ensure_installed()
    data_dir = Path(data_dir or home / "label-studio-data").resolve()
    files_root = Path(files_root or Path.cwd()).resolve()
    if not files_root.is_dir():
        raise UserError("the files root must be an existing folder (run folders must lie under it)",
                        where=str(files_root))
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    if responding(url):
        raise UserError(f"something already answers on {url}; pick another --port")
    token = _secret(token_path(home), 20)
    password = _secret(password_path(home), 12)
    env = {**os.environ, **OFFLINE_ENV,
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
           # Secrets travel in the environment, not argv (argv is visible to every local user).
           "LABEL_STUDIO_USERNAME": ADMIN, "LABEL_STUDIO_PASSWORD": password, "LABEL_STUDIO_USER_TOKEN": token}
    log = home / "label-studio.log"
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--host", url, "--data-dir", str(data_dir), "--username", ADMIN, "--enable-legacy-api-token"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    state = ServerState(url=url, port=port, pid=proc.pid, data_dir=str(data_dir), files_root=str(files_root),
                        username=ADMIN, log=str(log))
    atomic.write_text(state_path(home), json.dumps(asdict(state), indent=2))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"label-studio exited with code {proc.returncode} while starting; see {log}")
        if responding(url) and _token_works(url, token):
            return state
        time.sleep(1.0)
    stop(home)
    raise UserError(f"label-studio did not answer on {url} within {timeout:.0f} s; see {log}")


def _token_works(url: str, token: str) -> bool:
    req = urllib.request.Request(f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(home: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the server by its recorded PID (its whole process group); False if none was running."""
    home = home or config_home()
    state = read_state(home)
    if state is None:
        return False
    running = pid_alive(state.pid)
    if running:
        _signal_group(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(state.pid) and time.monotonic() < deadline:
            _reap(state.pid)
            time.sleep(0.2)
        if pid_alive(state.pid):
            _signal_group(state.pid, signal.SIGKILL)
        _reap(state.pid)
    state_path(home).unlink(missing_ok=True)
    return running


def kill(home: Path | None = None) -> None:
    """SIGKILL the server's process group (fault tests: a crash, not a shutdown). State is kept."""
    state = read_state(home)
    if state and pid_alive(state.pid):
        _signal_group(state.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(state.pid) and time.monotonic() < deadline:
            _reap(state.pid)
            time.sleep(0.1)


def _signal_group(pid: int, sig: int) -> None:
    # The server runs in its own session (start_new_session), so its group id is its pid.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(home: Path | None = None) -> dict:
    state = read_state(home)
    if state is None:
        return {"running": False}
    return {"running": pid_alive(state.pid) and responding(state.url), **asdict(state)}


def user_token(username: str, data_dir: str | Path) -> str:
    """An existing user's API token, from `label-studio user --username U --data-dir D`."""
    exe = ensure_installed()
    env = {**os.environ, **OFFLINE_ENV}
    done = subprocess.run([str(exe), "user", "--username", username, "--data-dir", str(data_dir)],
                          env=env, capture_output=True, text=True, timeout=180)
    lines = done.stdout.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "=> User info:" and i + 1 < len(lines):
            import ast

            info = ast.literal_eval(lines[i + 1].strip())
            return info["token"]
    raise UserError(f"`label-studio user --username {username}` gave no token (exit {done.returncode})")
