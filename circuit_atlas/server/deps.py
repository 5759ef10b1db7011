"""Shared route plumbing: the per-request database session and the 404 exception."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session


class NotFound(Exception):
    """Answered as 404 {"detail": message}."""


def _db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


DB = Annotated[Session, Depends(_db)]
