"""The claims-import API emulator: the documented contract, plus read-only views for tests.

``POST /claims-import?tenant_id=N`` takes ``{"claims": [...]}`` with header ``x-api-key`` and
upserts each claim by (tenant_id, provider_npi, claim_submitter_identifier). Beside it, under
``/_emulator/``: the stored claims, counters, and the fault configuration (all need the key,
since claims are PHI), and an unauthenticated health check.

An import request meets, in order: the key (401) and tenant (403); the random faults (see
``faults.py``); a committed Idempotency-Key (the stored answer, or 422 if the body differs);
JSON (400); the contract models, duplicate keys and ``reject_claims`` (422, nothing stored);
the upsert, one transaction; then possibly a dropped connection.

Error bodies are ``{"error": code, "message": text}`` and never repeat the key or a submitted
value (unless the ``echo_phi`` fault is on); a 422 adds ``"errors"``: one entry per problem,
naming the claim and the field.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from claims_pipeline.contract import (
    ImportRequest,
    ImportResponse,
    canonical_hash,
    canonical_json,
)
from claims_pipeline.emulator.config import EmulatorConfig
from claims_pipeline.emulator.connection import ConnectionDropMiddleware, drop_connection
from claims_pipeline.emulator.faults import Fault, FaultConfig, FaultInjector
from claims_pipeline.emulator.problems import (
    Problem,
    duplicate_problems,
    echo_detail,
    validation_problems,
    with_echoed_phi,
)
from claims_pipeline.emulator.store import ClaimStore, IdempotencyConflict, IncomingClaim

API_KEY_HEADER = "x-api-key"
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
_IDEMPOTENCY_KEY_MAX_LENGTH = 255


def create_app(config: EmulatorConfig) -> Starlette:
    """A Starlette app serving the emulator for ``config``; its state lives in ``config.db_path``.

    The database is opened here and closed at application shutdown.
    """
    emulator = _Emulator(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        emulator.store.close()

    return Starlette(
        routes=[
            Route("/claims-import", emulator.import_claims, methods=["POST"]),
            Route("/_emulator/claims", emulator.list_claims, methods=["GET"]),
            Route("/_emulator/stats", emulator.stats, methods=["GET"]),
            Route("/_emulator/faults", emulator.faults, methods=["GET", "PUT"]),
            Route("/_emulator/health", _health, methods=["GET"]),
        ],
        # Outermost of our own middleware: it needs the server's untouched ``receive``.
        middleware=[Middleware(ConnectionDropMiddleware)],
        lifespan=lifespan,
    )


class _Refused(Exception):
    """Ends a request early with ``response``; raised by the checks below, caught per endpoint."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _error(status: int, error: str, message: str, **extra: Any) -> _Refused:
    headers = extra.pop("headers", None)
    return _Refused(JSONResponse({"error": error, "message": message, **extra}, status, headers))


def _invalid(message: str, problems: list[Problem], error: str = "invalid_claims") -> _Refused:
    return _error(422, error, message, errors=problems)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


class _Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = ClaimStore(config.db_path)
        self.injector = FaultInjector(config.faults, config.seed)

    # --- the import API -------------------------------------------------------------------

    async def import_claims(self, request: Request) -> Response:
        tally: Counter[str] = Counter(requests_total=1)
        drop = False
        try:
            response, drop = await self._import(request, tally)
        except _Refused as refused:
            response = refused.response
        if drop:
            tally[f"fault.{Fault.DROP_AFTER_COMMIT}"] += 1
        else:
            tally[f"status.{response.status_code}"] += 1
        await run_in_threadpool(self.store.add_to_counters, tally)
        if drop:
            await drop_connection(request.scope)
        return response

    async def _import(self, request: Request, tally: Counter[str]) -> tuple[Response, bool]:
        tenant_id = self._authorize(request, tenant_scoped=True)
        plan = self.injector.plan()
        try:
            body = await request.body()
        except ClientDisconnect:
            # nginx's "client closed request": nobody reads it, but stats show it.
            raise _Refused(Response(status_code=499)) from None
        if plan.delay_seconds:
            # The body is in hand, so a client that gives up waiting still gets its claims
            # processed, as with a real server: a timeout never says whether they were stored.
            tally[f"fault.{Fault.SLOW}"] += 1
            await asyncio.sleep(plan.delay_seconds)
        if plan.response is not None:
            tally[f"fault.{plan.response}"] += 1
            raise self._fault_response(plan.response)

        idempotency = self._idempotency(request, body)
        if idempotency is not None:
            replay = await self._find_idempotent(tenant_id, idempotency)
            if replay is not None:
                tally["idempotent_replays"] += 1
                return JSONResponse(_success(replay)), plan.drop_after_commit

        incoming = self._accepted_claims(body, tally)
        try:
            outcome = await run_in_threadpool(
                self.store.import_claims, tenant_id, incoming, idempotency
            )
        except IdempotencyConflict:
            raise self._idempotency_conflict() from None
        if outcome.replayed:
            tally["idempotent_replays"] += 1
        return JSONResponse(_success(outcome.claim_ids)), plan.drop_after_commit

    def _accepted_claims(self, body: bytes, tally: Counter[str]) -> list[IncomingClaim]:
        """The claims of ``body`` ready to store, or _Refused: 400, or 422 naming each problem."""
        raw = self._parse(body)
        claims = self._validate(body, raw)
        keys = [(claim.provider_npi, claim.claim_submitter_identifier) for claim in claims]
        duplicates = duplicate_problems(keys)
        if duplicates:
            raise self._invalid_claims(
                "claims repeat a key within the request; nothing was stored", duplicates, raw
            )
        rejected = self.injector.rejected(key for _, key in keys)
        if rejected:
            tally[f"fault.{Fault.REJECT_CLAIMS}"] += 1
            raise self._invalid_claims(
                "claims rejected by payer rules; nothing was stored",
                [_payer_rejection(index, keys[index][1]) for index in rejected],
                raw,
                error="rejected_claims",
            )
        # Stored as posted (the parsed JSON), so a test compares exactly what the client sent.
        incoming = []
        for (npi, key), raw_claim in zip(keys, raw["claims"], strict=True):
            content = canonical_json(raw_claim)  # serialised once: stored and hashed
            incoming.append(
                IncomingClaim(
                    provider_npi=npi,
                    claim_submitter_identifier=key,
                    content=content,
                    content_hash=canonical_hash(content),
                )
            )
        return incoming

    def _fault_response(self, fault: Fault) -> _Refused:
        if fault is Fault.STATUS_429:
            seconds = self.injector.config.retry_after_seconds
            return _error(
                429,
                "rate_limited",
                f"too many requests; retry after {seconds} seconds",
                headers={"Retry-After": str(seconds)},
            )
        if fault is Fault.STATUS_500:
            return _error(500, "internal_error", "the service failed (injected fault)")
        if fault is Fault.STATUS_503:
            return _error(503, "unavailable", "the service is unavailable (injected fault)")
        # success_false: a 200 that accepted nothing, which a client must not take as delivery.
        body = ImportResponse(success=False, claim_ids=[], total_claims=0).model_dump()
        return _Refused(JSONResponse(body))

    @staticmethod
    def _idempotency(request: Request, body: bytes) -> tuple[str, str] | None:
        key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
        if key is None:
            return None
        if not 1 <= len(key) <= _IDEMPOTENCY_KEY_MAX_LENGTH:
            raise _error(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {_IDEMPOTENCY_KEY_MAX_LENGTH} characters",
            )
        return key, hashlib.sha256(body).hexdigest()

    async def _find_idempotent(
        self, tenant_id: int, idempotency: tuple[str, str]
    ) -> list[int] | None:
        # Looked up before validation and payer rules: a committed request is answered as it
        # was, even if the fault configuration changed since.
        try:
            outcome = await run_in_threadpool(self.store.find_idempotent, tenant_id, *idempotency)
        except IdempotencyConflict:
            raise self._idempotency_conflict() from None
        return None if outcome is None else outcome.claim_ids

    @staticmethod
    def _idempotency_conflict() -> _Refused:
        return _error(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
        )

    @staticmethod
    def _parse(body: bytes) -> Any:
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except ValueError:
            raise _error(400, "invalid_json", "the request body is not valid JSON") from None

    def _validate(self, body: bytes, raw: Any) -> list[Any]:
        try:
            return ImportRequest.model_validate_json(body).claims
        except ValidationError as exc:
            problems = validation_problems(exc, raw)
            claims = {p["claim_index"] for p in problems if p["claim_index"] is not None}
            raise self._invalid_claims(
                f"{len(problems)} problem(s) in {len(claims)} claim(s); nothing was stored",
                problems,
                raw,
            ) from None

    def _invalid_claims(
        self, message: str, problems: list[Problem], raw: Any, error: str = "invalid_claims"
    ) -> _Refused:
        """A 422 naming ``problems``. With the echo_phi fault, it quotes the patients of their
        claims too: in each problem's message, and all together in ``detail``."""
        if not self.injector.config.echo_phi:
            return _invalid(message, problems, error)
        echoed = with_echoed_phi(problems, raw)
        return _error(422, error, message, errors=echoed, detail=echo_detail(problems, raw))

    # --- views for tests and users ---------------------------------------------------------

    async def list_claims(self, request: Request) -> Response:
        try:
            tenant_id = self._authorize(request, tenant_scoped=True)
            after_id = _int_param(request, "after_id", 0)
            limit = _int_param(request, "limit", None)
        except _Refused as refused:
            return refused.response
        claims = await run_in_threadpool(self.store.list_claims, tenant_id, after_id, limit)
        return JSONResponse({"tenant_id": tenant_id, "claims": claims})

    async def stats(self, request: Request) -> Response:
        try:
            self._authorize(request, tenant_scoped=False)
        except _Refused as refused:
            return refused.response
        counters = await run_in_threadpool(self.store.counters)
        stored = await run_in_threadpool(self.store.claim_count)
        return JSONResponse(
            {
                "requests_total": counters.get("requests_total", 0),
                "requests_by_status": _prefixed(counters, "status."),
                "claims_received": counters.get("claims_received", 0),
                "claims_stored": stored,
                "idempotent_replays": counters.get("idempotent_replays", 0),
                "faults_fired": {fault.value: counters.get(f"fault.{fault}", 0) for fault in Fault},
            }
        )

    async def faults(self, request: Request) -> Response:
        try:
            self._authorize(request, tenant_scoped=False)
            if request.method == "PUT":
                await self._configure_faults(request)
        except _Refused as refused:
            return refused.response
        return JSONResponse(self.injector.config.model_dump(mode="json"))

    async def _configure_faults(self, request: Request) -> None:
        try:
            given = json.loads(await request.body())
        except ValueError:
            raise _error(400, "invalid_json", "the request body is not valid JSON") from None
        if not isinstance(given, dict):
            raise _error(400, "invalid_faults", "the body must be a JSON object of fault settings")
        seed = given.pop("seed", None)
        try:
            config = FaultConfig.model_validate(given)
            if seed is not None and not isinstance(seed, int):
                raise ValueError("seed must be an integer")
        except (ValidationError, ValueError) as exc:
            raise _error(422, "invalid_faults", _fault_error_text(exc)) from None
        self.injector.configure(config, seed)

    # --- checks ----------------------------------------------------------------------------

    def _authorize(self, request: Request, *, tenant_scoped: bool) -> int:
        """The tenant id of the request, or _Refused: 401 for a key no tenant has, 403 for a
        tenant id that is not the key's own."""
        given = request.headers.get(API_KEY_HEADER, "").encode()
        owners = [
            tenant
            for tenant, key in self.config.tenant_keys().items()
            if hmac.compare_digest(given, key.get_secret_value().encode())
        ]
        if not owners:
            raise _error(401, "unauthorized", f"missing or invalid {API_KEY_HEADER} header")
        if not tenant_scoped:
            return owners[0]
        tenant = request.query_params.get("tenant_id", "")
        if not (tenant.isascii() and tenant.isdigit() and int(tenant) in owners):
            raise _error(
                403,
                "forbidden",
                "the tenant_id query parameter must be the integer tenant id of this API key",
            )
        return int(tenant)


def _success(claim_ids: list[int]) -> dict[str, Any]:
    return ImportResponse(
        success=True, claim_ids=claim_ids, total_claims=len(claim_ids)
    ).model_dump()


def _payer_rejection(index: int, key: str) -> Problem:
    return Problem(
        claim_index=index,
        claim_submitter_identifier=key,
        field=None,
        code="payer_rule",
        message="claim rejected by payer rules",
    )


_Default = TypeVar("_Default", int, None)


def _int_param(request: Request, name: str, default: _Default) -> int | _Default:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()):
        raise _error(400, "invalid_parameter", f"{name} must be a non-negative integer")
    return int(value)


def _prefixed(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {
        name.removeprefix(prefix): value
        for name, value in sorted(counters.items())
        if name.startswith(prefix)
    }


def _fault_error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "faults"
        return f"{where}: {first['msg']}"
    return str(exc)


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})
