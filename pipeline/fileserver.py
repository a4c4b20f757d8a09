"""A loopback static file server that honours HTTP Range, for serving a release in tests and the demo.

``python -m http.server`` ignores Range, so a resumed download could not be told from a fresh one.
Faults for tests: ``drop_after={"common/0.tar": N}`` sends a path's headers (full Content-Length)
and only its first N bytes, then closes the connection, on the first request for that path only
(the retry resumes). Every request is recorded in ``requests`` as (path, Range header or None).

    with FileServer(folder).start() as server:      # binds 127.0.0.1, port 0
        server.base                                  # http://127.0.0.1:PORT/
    python -m pipeline.fileserver FOLDER             # prints its base URL, serves until killed
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class FileServer:
    def __init__(self, folder: str | Path, port: int = 0, drop_after: dict[str, int] | None = None):
        self.folder = Path(folder).resolve()
        self.drop_after = dict(drop_after or {})
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Handler, self))
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def start(self) -> "FileServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fileserver", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        # `with FileServer(folder) as s:` serves too (stop() would otherwise wait forever on a loop never started).
        return self if self.thread else self.start()

    def __exit__(self, *exc):
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, state: FileServer, *args, **kwargs):
        self.state = state
        super().__init__(*args, **kwargs)

    def log_message(self, *args):   # quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        with self.state.lock:
            self.state.requests.append((rel, rng))
            drop = self.state.drop_after.pop(rel, None)
        path = (self.state.folder / rel).resolve()
        if self.state.folder not in path.parents or not path.is_file():
            return self._send_status(404)
        size = path.stat().st_size
        start, end = 0, size - 1
        if rng:
            m = _RANGE.match(rng.strip())
            if not m:
                return self._send_status(416, {"Content-Range": f"bytes */{size}"})
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            if start >= size:
                return self._send_status(416, {"Content-Range": f"bytes */{size}"})
        length = end - start + 1
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            todo = length if drop is None else min(length, drop)
            while todo > 0:
                chunk = f.read(min(todo, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                todo -= len(chunk)
        if drop is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)   # mid-body: the client sees fewer bytes than Content-Length

    def _send_status(self, code: int, headers: dict | None = None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    server = FileServer(args.folder, args.port)
    print(server.base, flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
