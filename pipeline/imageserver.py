"""A loopback HTTP image server for tests, the demo and the benchmark, with fault routes.

    /img/<name>                   a file from the served folder (optionally after `delay` seconds)
    /<name>                       the same, as any static file server serves it
    /redirect/<name>              302 to /img/<name>
    /fault/404, /fault/500        those statuses
    /fault/slow.jpg               a real image, sent after `slow_seconds` (past a fetch timeout)
    /fault/truncated.jpg          the first half of a real JPEG, with a matching Content-Length
    /fault/notimage.jpg           an HTML page served as image/jpeg
    /fault/huge.png               a valid 20000x20000 PNG of ~50 kB (a decompression bomb)
    /fault/big.jpg                a 2 MB body served as image/jpeg (for a max_bytes cap)
    /fault/robots.jpg             a real image with `X-Robots-Tag: noai`
    /fault/drop.jpg               the connection closed before any response
    /fault/drop-body.jpg          headers and half the declared body, then the connection closed
    /fault/html                   an HTML page served as text/html (a photo page, not the photo)
    /fault/redirect-private.jpg   302 to http://10.255.255.1/ (a private address)
    /fault/redirect-metadata.jpg  302 to http://169.254.169.254/ (link-local cloud metadata)

Start it in a thread (``ImageServer(folder).start()``) or as a process
(``python -m pipeline.imageserver FOLDER``, which prints its port). Binds 127.0.0.1, port 0.
"""
from __future__ import annotations

import argparse
import functools
import io
import random
import socket
import struct
import sys
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FAULTS = {  # route -> (status, reason) a fetch must record for it
    "/fault/404": ("failed", "http_404"),
    "/fault/500": ("failed", "http_500"),
    "/fault/slow.jpg": ("failed", "timeout"),
    "/fault/truncated.jpg": ("failed", "truncated"),
    "/fault/notimage.jpg": ("failed", "not_an_image"),
    "/fault/huge.png": ("failed", "too_many_pixels"),
    "/fault/big.jpg": ("failed", "too_many_bytes"),
    "/fault/robots.jpg": ("failed", "robots_disallowed"),
    "/fault/drop.jpg": ("failed", "connection_error"),
    "/fault/drop-body.jpg": ("failed", "truncated"),
    "/fault/html": ("failed", "not_an_image"),
    "/fault/redirect-private.jpg": ("failed", "blocked_address"),
    "/fault/redirect-metadata.jpg": ("failed", "blocked_address"),
}
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


class ImageServer:
    def __init__(self, folder: str | Path, delay: float = 0.0, slow_seconds: float = 5.0, port: int = 0):
        self.folder = Path(folder).resolve()
        self.delay, self.slow_seconds = delay, slow_seconds
        handler = functools.partial(_Handler, self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self.requests = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    def start(self) -> "ImageServer":
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, server_state: ImageServer, *args, **kwargs):
        self.state = server_state
        super().__init__(*args, **kwargs)

    def log_message(self, *args):  # quiet: tests and the benchmark make thousands of requests
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.state.requests += 1
        path = self.path.split("?", 1)[0]
        try:
            if path.startswith("/img/"):
                return self._serve_file(path[len("/img/"):], delay=self.state.delay)
            if path.startswith("/redirect/"):
                return self._redirect("/img/" + path[len("/redirect/"):])
            if path.startswith("/fault/"):
                return self._fault(path)
            return self._serve_file(path.lstrip("/"), delay=self.state.delay)   # BASE/<name>, as a static server
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client gave up (e.g. its timeout); nothing to answer

    def _fault(self, path: str):
        if path == "/fault/404":
            return self._send(404, b"not found", "text/plain")
        if path == "/fault/500":
            return self._send(500, b"server error", "text/plain")
        if path == "/fault/slow.jpg":
            time.sleep(self.state.slow_seconds)
            return self._send(200, _sample_jpeg(), "image/jpeg")
        if path == "/fault/truncated.jpg":
            data = _sample_jpeg()
            return self._send(200, data[: len(data) // 2], "image/jpeg")
        if path == "/fault/notimage.jpg":
            return self._send(200, b"<html><body>Sorry, this photo was removed.</body></html>", "image/jpeg")
        if path == "/fault/huge.png":
            return self._send(200, bomb_png(), "image/png")
        if path == "/fault/big.jpg":
            return self._send(200, _sample_jpeg() + bytes(2_000_000), "image/jpeg")
        if path == "/fault/robots.jpg":
            return self._send(200, _sample_jpeg(), "image/jpeg", {"X-Robots-Tag": "noai"})
        if path == "/fault/drop.jpg":
            return self._drop()
        if path == "/fault/drop-body.jpg":
            data = _sample_jpeg()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            return self._drop()
        if path == "/fault/html":
            return self._send(200, b"<!doctype html><html><body><img src='/img/x.jpg'></body></html>",
                              "text/html; charset=utf-8")
        if path == "/fault/redirect-private.jpg":
            return self._redirect("http://10.255.255.1/photo.jpg")
        if path == "/fault/redirect-metadata.jpg":
            return self._redirect("http://169.254.169.254/latest/meta-data/")
        return self._send(404, b"no such route", "text/plain")

    def _serve_file(self, name: str, delay: float):
        target = (self.state.folder / name).resolve()
        if self.state.folder not in target.parents or not target.is_file():
            return self._send(404, b"not found", "text/plain")
        if delay:
            time.sleep(delay)
        self._send(200, target.read_bytes(), CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream"))

    def _drop(self):
        """Close the socket at once, without a (complete) response."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _redirect(self, location: str):
        self.send_response(HTTPStatus.FOUND)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, code: int, body: bytes, ctype: str, headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


# -- images ------------------------------------------------------------------------------------

def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like RGB image: a smooth random scene, a blurred subject, sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(coarse, "RGB").resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        rx, ry = rng.integers(w // 12, w // 4), rng.integers(h // 12, h // 4)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 4.0))))
    noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, size=(h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def write_photos(folder: str | Path, n: int, seed: int = 0, sizes: tuple[int, int] = (400, 800),
                 png_every: int = 0) -> list[str]:
    """Write ``n`` photo-like JPEGs (every ``png_every``-th a PNG) with sides in ``sizes``; returns names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = []
    for i in range(n):
        size = (rng.randint(*sizes), rng.randint(*sizes))
        ext = "png" if png_every and i % png_every == png_every - 1 else "jpg"
        name = f"photo_{seed}_{i:05d}.{ext}"
        path = folder / name
        if not path.exists():
            img = photo(seed * 100_003 + i, size)
            img.save(path, quality=90) if ext == "jpg" else img.save(path)
        names.append(name)
    return names


@functools.lru_cache(maxsize=1)
def _sample_jpeg() -> bytes:
    buf = io.BytesIO()
    photo(12345, (600, 400)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def bomb_png(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of side x side pixels: tiny on the wire, huge once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = bytes(1 + (side + 7) // 8)          # filter byte + packed bits, all zero
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve a folder of images on 127.0.0.1 (with fault routes).")
    ap.add_argument("folder")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each /img/ response")
    args = ap.parse_args(argv)
    server = ImageServer(args.folder, delay=args.delay, port=args.port)
    print(server.port, flush=True)
    try:
        server.httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
