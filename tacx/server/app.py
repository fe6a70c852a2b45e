"""The HTTP server (`--listen`): aiohttp in the coordinator's own loop, on a socket the
command line bound before anything started.

Every answer is JSON with a sentence (an error never shows a traceback); every route but
/health needs the bearer token; request bodies are bounded (413), and so are lists, log
ranges and the number of open streams (429). The server subscribes to the engine's bus
and reads the store on a thread of its own (reads.py): the engine knows nothing of it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from tacx.engine.coordinator import Coordinator
from tacx.server import api, catalog, observe, streams
from tacx.server.address import Listener
from tacx.server.context import AUTHORIZED, CONTEXT, ApiError, Context, Limits, error_response
from tacx.server.metrics import EngineMetrics
from tacx.server.reads import StoreReader
from tacx.server.token import TokenCheck
from tacx.store.errors import StoreError

log = logging.getLogger(__name__)

OPEN_ROUTES = frozenset({"/health"})  # the only route without the token
SHUTDOWN_SECONDS = 2.0  # how long stopping waits for requests in flight

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no route {request.path[:200]}; the README's Server section lists the routes"
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return f"{request.path[:200]} does not take {request.method}" + (f"; it takes {allowed}" if allowed else "")
    if exc.status == 413:
        return f"the request body is too large: at most {request.app[CONTEXT].limits.body:,} bytes"
    return exc.reason or "refused"


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as JSON with a sentence; a bug as a 500 with one (the traceback goes to
    the log, never to the client)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return error_response(exc.status, _message(request, exc), **headers)
    except StoreError as exc:
        return error_response(503, f"the store cannot be read or written: {exc}")
    except ConnectionError:
        raise
    except Exception:
        log.exception("the API failed on %s %s", request.method, request.path)
        return error_response(500, "tacx failed on this request (a bug; its traceback is in the home's crash.log)")


@web.middleware
async def _share(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests (answered or refused) take their turn in the API's share of the loop;
    streams do not (see FairShare)."""
    share = request.app[CONTEXT].share
    if request.path == "/events" or request.query.get("follow", "0").lower() not in ("", "0", "false", "no"):
        return await handler(request)
    async with share.turn():
        return await handler(request)


def _auth(check: TokenCheck) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[AUTHORIZED] = check.allows(request.headers.get("Authorization"))
        if request[AUTHORIZED] or request.path in OPEN_ROUTES:
            return await handler(request)
        given = "Authorization" in request.headers
        return error_response(
            401, ("the bearer token is wrong" if given else "a bearer token is needed: Authorization: Bearer $(tacx token)"),
            **{"WWW-Authenticate": 'Bearer realm="tacx"'})

    return auth


class ApiServer:
    """The server of one coordinator: `await start()` (its URL), `await stop()`."""

    def __init__(self, coordinator: Coordinator, listener: Listener, *, limits: Limits | None = None) -> None:
        self.coordinator = coordinator
        self.listener = listener
        self.url = listener.url
        self.limits = limits or Limits()
        self.reader = StoreReader(coordinator.home.db_path)
        self.context = Context(coordinator, coordinator.home, self.reader, self.limits)
        self.fanout = streams.EventFanout()
        self.metrics = EngineMetrics(coordinator)
        self._runner: web.AppRunner | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.body,
                              middlewares=[_errors, _share, _auth(TokenCheck(self.coordinator.home))])
        app[CONTEXT] = self.context
        app[streams.FANOUT] = self.fanout
        app[observe.METRICS] = self.metrics
        for table in (observe.routes, api.routes, streams.routes, catalog.routes):
            app.add_routes(table)
        return app

    async def start(self) -> str:
        self.metrics.attach()
        self._unsubscribe = self.coordinator.bus.subscribe(self.fanout)
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_SECONDS)
        await self._runner.setup()
        await web.SockSite(self._runner, self.listener.sock).start()
        return self.url

    async def stop(self) -> None:
        """Streams end, requests in flight get a moment, then the socket closes."""
        self.context.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.metrics.detach()
        await self.reader.close()



def listening_line(url: str) -> str:
    return f"listening on {url} (token: tacx token)"
