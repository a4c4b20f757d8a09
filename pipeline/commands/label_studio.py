"""`counteranimal label-studio start|stop|status`: a local Label Studio server for annotators.

Installs label-studio into its own venv on first use, binds it to 127.0.0.1 with offline
settings, and keeps the admin token and password in files (mode 600) that are never printed.
"""
from __future__ import annotations

from annotation import server


def register(sub) -> None:
    p = sub.add_parser("label-studio", help="start, stop or check a local Label Studio server",
                       description="Run a local Label Studio server (own venv, bound to 127.0.0.1) for "
                                   "`counteranimal annotate`.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="install on first use, start, wait until it answers")
    start.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: %(default)s)")
    start.add_argument("--data-dir", help="Label Studio's database and uploads (default: in the config home)")
    start.add_argument("--files-root", help="folder whose run directories the server may serve images from "
                                            "(default: the current directory)")
    start.add_argument("--timeout", type=float, default=300, help="seconds to wait for it to answer")
    start.set_defaults(func=_start)
    stop = actions.add_parser("stop", help="stop the server by its PID")
    stop.set_defaults(func=_stop)
    status = actions.add_parser("status", help="is it running, and where")
    status.set_defaults(func=_status)


def _start(args) -> int:
    state = server.start(port=args.port, data_dir=args.data_dir, files_root=args.files_root, timeout=args.timeout)
    print(f"label-studio: running at {state.url} (pid {state.pid}, data {state.data_dir}, "
          f"images served from runs under {state.files_root}).\n"
          f"  Log in as {state.username}; the password is in {server.password_path()}.\n"
          f"  The API token is in {server.token_path()} (mode 600); `counteranimal annotate` reads it from there.")
    return 0


def _stop(args) -> int:
    print("label-studio: stopped" if server.stop() else "label-studio: not running")
    return 0


def _status(args) -> int:
    info = server.status()
    if not info["running"]:
        print("label-studio: not running" + (f" (last pid {info['pid']}, log {info['log']})" if "pid" in info else ""))
        return 1
    print(f"label-studio: running at {info['url']} (pid {info['pid']}, data {info['data_dir']}, "
          f"files root {info['files_root']}, version {info['version']})")
    return 0
