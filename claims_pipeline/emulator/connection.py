"""Closing a request's connection without any response, as a dropped connection looks.

ASGI has no message for "hang up". Raising in the app is not enough: the server then answers
500. Under uvicorn, the ``receive`` callable is a method of the request cycle, which holds the
socket transport; closing that transport before any response byte is written is what a client
meets when a proxy or the network drops the connection after the server committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from claims_pipeline.errors import ClaimsPipelineError

_SCOPE_KEY = "claims_emulator.drop_connection"


class ConnectionDropUnsupported(ClaimsPipelineError):
    """The server running the app does not let it close a connection (uvicorn does)."""


class ConnectionDropMiddleware:
    """Puts a way to close the raw connection into each HTTP scope, for :func:`drop_connection`.

    It must see the server's own ``receive``, so no middleware that wraps ``receive`` may run
    before it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_SCOPE_KEY] = _closer(receive)
        await self.app(scope, receive, send)


async def drop_connection(scope: Scope) -> None:
    """Close the connection of ``scope`` so that no response reaches the client.

    Afterwards the endpoint may return any response: the server discards it. Raises
    :class:`ConnectionDropUnsupported` when the server offers no transport (e.g. a test client).
    """
    close = scope.get(_SCOPE_KEY)
    if close is None:
        raise ConnectionDropUnsupported("this server cannot drop a connection; run under uvicorn")
    await close()


def _closer(receive: Receive) -> Callable[[], Awaitable[None]] | None:
    cycle: Any = getattr(receive, "__self__", None)  # uvicorn's RequestResponseCycle
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(cycle, "disconnected"):
        return None

    async def close() -> None:
        transport.close()
        # uvicorn marks the cycle disconnected in connection_lost, one loop turn later; from
        # then on it sends nothing for this request, not even its own 500.
        for _ in range(1000):
            if cycle.disconnected:
                return
            await asyncio.sleep(0.001)

    return close
