"""Connecting to Label Studio: URL and token resolution, retries while the server is down.

The token comes from LABEL_STUDIO_API_KEY, or the file named by LABEL_STUDIO_TOKEN_FILE, or the
file `counteranimal label-studio start` wrote; never from the command line, never printed.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from annotation import server
from curation.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "the server is not answering right now": wait and try again.
TRANSIENT = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
             httpx.ConnectTimeout, httpx.PoolTimeout)
TRANSIENT_STATUS = (502, 503, 504)


class ServerDown(UserError):
    """The server did not answer after every retry."""


@dataclass
class Connection:
    url: str
    token: str
    token_source: str          # where the token came from, for error messages (never the token)
    files_root: str | None     # the server's local-files document root, when known
    retries: int = 6
    backoff: float = 1.0

    def __repr__(self) -> str:   # keep the token out of logs and tracebacks
        return f"Connection(url={self.url!r}, token_source={self.token_source!r})"

    def client(self, timeout: float = 120.0) -> LabelStudio:
        client = LabelStudio(base_url=self.url, api_key=self.token, timeout=timeout)
        # The SDK retries every request on 5xx/408/409/429, POSTs included: an import or annotation
        # the server applied but answered with an error (a loaded sqlite server) would be applied
        # twice. call() retries only what is safe to repeat, so the SDK's own retries are off.
        http = getattr(getattr(client, "_client_wrapper", None), "httpx_client", None)
        if http is not None and hasattr(http, "base_max_retries"):
            http.base_max_retries = 0
        return client

    def call(self, what: str, fn: Callable[[], T], retry: bool = True) -> T:
        """Run one API call; retry with doubling waits while the server is down, then a clear error.

        Only idempotent calls may pass retry=True: a POST that timed out may have been applied.
        """
        attempt = 0
        while True:
            try:
                return fn()
            except TRANSIENT as exc:
                failure = f"{type(exc).__name__}"
            except ApiError as exc:
                if exc.status_code in TRANSIENT_STATUS:
                    failure = f"HTTP {exc.status_code}"
                else:
                    raise self.explain(what, exc) from None
            if not retry or attempt >= self.retries:
                raise ServerDown(f"Label Studio at {self.url} is not answering ({failure}) while trying to {what}",
                                 hint="Start it (`counteranimal label-studio start`) and re-run: the command "
                                      "resumes where it stopped.")
            wait = self.backoff * 2 ** attempt
            log.warning("Label Studio at %s not answering (%s) during %s; retry %d/%d in %.1f s",
                        self.url, failure, what, attempt + 1, self.retries, wait)
            time.sleep(wait)
            attempt += 1

    def explain(self, what: str, exc: ApiError) -> UserError:
        if exc.status_code == 401:
            return UserError(f"Label Studio at {self.url} refused the API token from {self.token_source} "
                             f"(HTTP 401) while trying to {what}",
                             hint="Set LABEL_STUDIO_API_KEY to a valid token (Account & Settings → Access Token), "
                                  "or re-run `counteranimal label-studio start` for the local server.")
        if exc.status_code == 403:
            return UserError(f"Label Studio at {self.url} says this token may not {what} (HTTP 403)")
        body = exc.body if isinstance(exc.body, (str, dict)) else ""
        return UserError(f"Label Studio at {self.url} answered HTTP {exc.status_code} while trying to {what}: "
                         f"{str(body)[:400]}")


def connect(url: str | None = None, files_root: str | None = None, retries: int = 6,
            backoff: float = 1.0) -> Connection:
    """Resolve URL and token: arguments/config first, then environment, then the local launcher."""
    state = server.read_state()
    url = url or os.environ.get("LABEL_STUDIO_URL") or (state.url if state else None)
    if not url:
        raise UserError("no Label Studio URL: set annotation.url in config.yaml or LABEL_STUDIO_URL, "
                        "or start the local server with `counteranimal label-studio start`")
    token, source = _token()
    files_root = (files_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
                  or (state.files_root if state and state.url.rstrip("/") == url.rstrip("/") else None))
    return Connection(url=url.rstrip("/"), token=token, token_source=source, files_root=files_root,
                      retries=retries, backoff=backoff)


def _token() -> tuple[str, str]:
    if os.environ.get("LABEL_STUDIO_API_KEY"):
        return os.environ["LABEL_STUDIO_API_KEY"].strip(), "the LABEL_STUDIO_API_KEY environment variable"
    path = Path(os.environ.get("LABEL_STUDIO_TOKEN_FILE") or server.token_path())
    if path.exists():
        token = path.read_text().strip()
        if token:
            if path.stat().st_mode & 0o077:
                log.warning("%s is readable by other users; chmod 600 it", path)
            return token, str(path)
    raise UserError("no Label Studio API token: set LABEL_STUDIO_API_KEY or LABEL_STUDIO_TOKEN_FILE, "
                    f"or start the local server with `counteranimal label-studio start` (it writes {path})")
