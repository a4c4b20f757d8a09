"""A urllib opener that enforces curation.netguard on every connection img2dataset makes.

img2dataset fetches with ``urllib.request.urlopen``; installing this opener while a chunk is fetched
(``installed``) puts the guard under it without patching img2dataset:

- the host is resolved here and each address is checked *before* a socket is opened, on the
  first request and on every redirect hop (each hop opens a new connection), and the socket
  is connected to the checked address (no second lookup an attacker could change);
- redirects may only lead to http(s); file:// is served only under the folder source's root;
- proxies are not used (the guard must see the real peer);
- a body over ``max_bytes`` is refused, whether or not the server declares its length.
"""
from __future__ import annotations

import contextlib

import email.message
import functools
import http.client
import os
import socket
import threading
import urllib.parse
import urllib.request
import urllib.response

from curation.netguard import Blocked, NetPolicy


def guarded_create_connection(policy: NetPolicy, address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
                              source_address=None, **_):
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    allowed, refusal = [], None
    for family, _, _, _, sockaddr in infos:
        try:
            policy.check_ip(sockaddr[0], host)
            allowed.append(sockaddr[0])
        except Blocked as exc:
            refusal = exc
    if not allowed:
        raise refusal or Blocked("blocked_address", f"{host} resolves to no address")
    last: OSError | None = None
    for ip in allowed:
        try:
            return socket.create_connection((ip, port), timeout, source_address)
        except OSError as exc:
            last = exc
    raise last  # type: ignore[misc]


def _capped_response(max_bytes: int):
    class CappedResponse(http.client.HTTPResponse):
        def begin(self):
            super().begin()
            if self.length is not None and self.length > max_bytes:
                raise Blocked("too_many_bytes", f"declared body of {self.length} bytes is over {max_bytes}")

        def read(self, amt=None):
            if amt is None:
                data = super().read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise Blocked("too_many_bytes", f"body is over {max_bytes} bytes")
                return data
            return super().read(amt)

    return CappedResponse


def _connection_class(base, policy: NetPolicy, max_bytes: int):
    response = _capped_response(max_bytes)

    class Guarded(base):
        response_class = response

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = functools.partial(guarded_create_connection, policy)

    return Guarded


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy, max_bytes):
        super().__init__()
        self._conn = _connection_class(http.client.HTTPConnection, policy, max_bytes)

    def http_open(self, req):
        return self.do_open(self._conn, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy, max_bytes):
        super().__init__()
        self._conn = _connection_class(http.client.HTTPSConnection, policy, max_bytes)

    def https_open(self, req):
        return self.do_open(self._conn, req, context=self._context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):   # never follow a web redirect onto file:// or other schemes
            raise Blocked("unsupported_scheme", f"redirect from {req.full_url} to {newurl} refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _FileHandler(urllib.request.BaseHandler):
    def __init__(self, policy: NetPolicy, max_bytes: int):
        self.policy, self.max_bytes = policy, max_bytes

    def file_open(self, req):
        parts = urllib.parse.urlsplit(req.full_url)
        if parts.netloc not in ("", "localhost"):
            raise Blocked("unsupported_scheme", f"file:// URL with a host: {req.full_url}")
        real = self.policy.check_file(urllib.request.url2pathname(parts.path))
        size = os.path.getsize(real)
        if size > self.max_bytes:
            raise Blocked("too_many_bytes", f"{real} has {size} bytes, over {self.max_bytes}")
        headers = email.message.Message()
        headers["Content-Length"] = str(size)
        return urllib.response.addinfourl(open(real, "rb"), headers, req.full_url)


class _RefuseOthers(urllib.request.BaseHandler):
    handler_order = 1000

    def unknown_open(self, req):
        raise Blocked("unsupported_scheme", f"only http(s) URLs are fetched: {req.full_url}")


def build_opener(policy: NetPolicy, max_bytes: int) -> urllib.request.OpenerDirector:
    opener = urllib.request.OpenerDirector()
    handlers = [_HTTPHandler(policy, max_bytes), _HTTPSHandler(policy, max_bytes), _RedirectHandler(),
                urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(), _RefuseOthers()]
    if policy.file_root is not None:
        handlers.append(_FileHandler(policy, max_bytes))
    for h in handlers:
        opener.add_handler(h)
    return opener


_lock = threading.Lock()
_users = 0
_previous = None


@contextlib.contextmanager
def installed(policy: NetPolicy, max_bytes: int):
    """Within the block, ``urllib.request.urlopen`` (img2dataset's fetcher) goes through the guard.

    Installed process-wide while any thread is inside such a block (img2dataset fetches from its
    own threads), and the opener it replaced comes back when the last one leaves: an in-process run
    must not leave the guard on the rest of the caller's process.
    """
    global _users, _previous
    with _lock:
        if _users == 0:
            _previous = urllib.request._opener   # noqa: SLF001 - urllib keeps the installed opener only there
            urllib.request.install_opener(build_opener(policy, max_bytes))
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                urllib.request.install_opener(_previous)
