"""Safety: paths that never leave their folder, the write token, request size limits.

Path rule: a name from a URL, an upload or an index is decoded (repeatedly, so double encoding
cannot hide `..`), must be relative without `..`, NUL or backslashes, and must still lie inside
the folder after symlinks are resolved.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def safe_child(folder: Path, name: str) -> Path | None:
    """folder/name if it stays inside folder (after decoding and resolving symlinks), else None."""
    decoded = name
    for _ in range(5):  # %252e%252e -> %2e%2e -> ..
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    if not decoded or "\0" in decoded or "\\" in decoded or decoded.startswith("/") or re.match(r"^[A-Za-z]:", decoded):
        return None
    if any(part in ("..", ".") for part in PurePosixPath(decoded).parts):
        return None
    root = folder.resolve()
    path = (root / decoded).resolve()
    return path if path.is_relative_to(root) and path != root else None


def check_token(headers: dict[str, str], query: str, token: str) -> bool:
    given = headers.get("x-circuit-atlas-token", "")
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given:
        for part in query.split("&"):
            if part.startswith("token="):
                given = unquote(part[6:])
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


class GuardMiddleware:
    """ASGI middleware: token on writes (and reads unless public), body size limits answered with 413.

    The body limit is enforced on the bytes actually received, not only on Content-Length, so a
    chunked upload cannot slip past it."""

    def __init__(self, app: ASGIApp, *, token: str | None, public_reads: bool, max_request: int, max_upload: int):
        self.app, self.token, self.public_reads = app, token, public_reads
        self.max_request, self.max_upload = max_request, max_upload

    def limit_for(self, path: str) -> int:
        return self.max_upload if path.rstrip("/") in ("/api/graphs", "/api/graphs/import-dir") else self.max_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        is_api = path.startswith("/api/")
        if self.token and is_api and path != "/api/health":
            needs = method in WRITE_METHODS or not self.public_reads
            if needs and not check_token(headers, scope.get("query_string", b"").decode("latin-1"), self.token):
                what = "writes" if method in WRITE_METHODS else "reads"
                resp = JSONResponse({"detail": f"this server requires its token for {what}: send "
                                               "'Authorization: Bearer TOKEN' (printed when the server started)"},
                                    status_code=401)  # fmt: skip
                return await resp(scope, receive, send)
        limit = self.limit_for(path)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _too_large(limit)(scope, receive, send)
        received = 0
        too_large = False

        async def counted() -> dict:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise BodyTooLarge
            return message

        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except BodyTooLarge:
            if not started:
                await _too_large(limit)(scope, receive, send)
        except Exception:
            if too_large and not started:
                await _too_large(limit)(scope, receive, send)
            else:
                raise


class BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"request body larger than this server's limit of {limit} bytes (set --max-upload-mb / "
                   "--max-request-kb to raise it)"},
        status_code=413,
    )  # fmt: skip
