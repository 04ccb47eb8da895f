"""HTTP client of the claims-import API: one pooled connection set, a client-side request cap,
retries with backoff and jitter that honour Retry-After, and errors that say what to fix.

The API documents only success. We classify the rest (docs/api-contract.md): 401/403 are
configuration errors; 408/425/429/5xx, timeouts and dropped connections are transient; a 422 (or
413, or a 4xx whose body names claims) refuses something in the batch; any other 4xx (404/405
from a wrong path or a gateway, a 400 without claim detail) and an answer that cannot be matched
to the batch's claims mean the endpoint is wrong: the run stops, naming CLAIMS_API_URL. An error
raised before a byte is sent (a header the key makes invalid) is a configuration error too.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import stamina

from claims_pipeline.contract import ImportResponse
from claims_pipeline.errors import AuthenticationError, ConfigurationError, DeliveryError
from claims_pipeline.phi import hide_url_password, protect_http_logs, scrub

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# Retry notices go through the standard logging module (stamina would otherwise pick structlog
# and print to stdout, outside the orchestrator's log capture). They name only the exception.
stamina.instrumentation.set_on_retry_hooks([stamina.instrumentation.LoggingOnRetryHook])


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: at most ``attempts`` tries and ``deadline_seconds`` per batch."""

    attempts: int = 8
    deadline_seconds: float = 180.0
    wait_initial: float = 0.25
    wait_max: float = 15.0
    wait_jitter: float = 0.5
    retry_after_cap: float = 60.0


class TransientApiError(DeliveryError):
    """A failure worth retrying: the same batch may succeed later."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ApiEndpointError(DeliveryError):
    """An answer that is not about claims (wrong URL, gateway page, unattributable body): no
    retry or bisection can help, so the run stops."""


class BatchRejectedError(DeliveryError):
    """The API refused something in the batch (a 4xx other than 401/403); message scrubbed."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.reason = message


@dataclass
class ClientStats:
    """What the client did, for materialization metadata. Thread-safe through its lock."""

    requests: int = 0
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def record(self, status: str, latency_ms: float) -> None:
        with self._lock:
            self.requests += 1
            self.statuses[status] += 1
            self.latencies_ms.append(latency_ms)

    def percentile(self, q: float) -> float | None:
        with self._lock:
            data = sorted(self.latencies_ms)
        if not data:
            return None
        return data[min(len(data) - 1, int(round(q * (len(data) - 1))))]


class Throttle:
    """Spaces requests at most ``per_second`` apart across threads (a client-side cap)."""

    def __init__(self, per_second: float):
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
        if slot > now:
            time.sleep(slot - now)


def check_base_url(base_url: str) -> str:
    """The URL without a trailing slash; plain http is refused except to loopback."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError("CLAIMS_API_URL must be an http(s) URL like https://host.")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            "CLAIMS_API_URL uses plain http to a non-loopback host: use https "
            "(claims carry PHI; http is allowed only to 127.0.0.1/localhost, e.g. the emulator)."
        )
    return base_url.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (where plain http is allowed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, min(seconds, cap))


def batch_body(payloads: list[str]) -> bytes:
    """The request body from claims already serialised as JSON text (no re-encoding)."""
    return ('{"claims":[' + ",".join(payloads) + "]}").encode()


def new_idempotency_key() -> str:
    """A key for one delivery attempt: the retries of that request reuse it; any other post,
    even of a byte-identical body (a fee going B -> C -> B, a forced re-send), gets its own, so
    the service applies it instead of replaying an old answer."""
    return uuid.uuid4().hex


# A refusal is about claims when its body points at them: a claim index or identifier, or a
# location such as claims[3] / claims.3 / ["claims", 3].
_CLAIM_KEYS = ("claim_index", "claim_submitter_identifier", "claim_indices")
_CLAIM_PATH = re.compile(r"claims(\[\d+\]|\.\d+)")


def names_claims(body: object) -> bool:
    """True when a refusal's JSON body carries claim-level detail."""
    if isinstance(body, dict):
        if any(body.get(key) is not None for key in _CLAIM_KEYS):
            return True
        location = body.get("loc")
        if isinstance(location, list) and location[:1] == ["claims"] and len(location) > 1:
            return True
        return any(names_claims(value) for value in body.values())
    if isinstance(body, list):
        return any(names_claims(value) for value in body)
    if isinstance(body, str):
        return bool(_CLAIM_PATH.search(body))
    return False


# Refusals worth bisecting even without detail: a claim's content (422) or the batch's size.
_CLAIM_REFUSALS = frozenset({413, 422})


class ImportApiClient:
    """Posts batches to ``POST {base_url}/claims-import?tenant_id=...``. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        tenant_id: int,
        *,
        max_connections: int = 4,
        max_requests_per_second: float = 10.0,
        timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        key_setting: str = "CLAIMS_API_KEY",
        tenant_setting: str = "CLAIMS_TENANT_ID",
    ):
        if not api_key:
            raise ConfigurationError(f"{key_setting} is empty: set the tenant's API key.")
        protect_http_logs(api_key)  # httpx/httpcore DEBUG logs never show the key
        self.tenant_id = tenant_id
        # What a refusal of the credentials names: where the key and the tenant id are set.
        self._settings = (key_setting, tenant_setting)
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._api_key = api_key
        self._throttle = Throttle(max_requests_per_second)
        self._http = httpx.Client(
            base_url=check_base_url(base_url),
            headers={"x-api-key": api_key, "content-type": "application/json"},
            timeout=httpx.Timeout(timeout_seconds, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            verify=True,
            transport=transport,
        )

    @property
    def _endpoint(self) -> str:
        """The import URL as an error may show it: a password in it is masked."""
        return hide_url_password(f"{self._http.base_url}claims-import")

    def __repr__(self) -> str:  # never show the key
        return f"ImportApiClient(base_url={str(self._http.base_url)!r}, tenant_id={self.tenant_id})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ImportApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post_batch(
        self, payloads: list[str], secrets: Callable[[], set[str]] | None = None
    ) -> list[int]:
        """Post claims (each already JSON text) and return their claim_ids in order.

        Retries transient failures within the policy; raises AuthenticationError (stop the
        run), BatchRejectedError (something in the batch is refused) or TransientApiError /
        httpx.TransportError once retries are spent. ``secrets`` gives the PHI strings of the
        batch (computed only when needed), scrubbed from any server message that is kept."""
        body = batch_body(payloads)
        key = new_idempotency_key()
        policy = self.retry
        first = True
        for attempt in stamina.retry_context(
            on=self._backoff_hook,
            attempts=policy.attempts,
            timeout=policy.deadline_seconds,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
        ):
            with attempt:
                if not first:
                    self.stats.count_retry()
                first = False
                return self._post_once(body, key, len(payloads), secrets)
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _backoff_hook(self, error: BaseException) -> bool | float:
        if isinstance(error, TransientApiError):
            return error.retry_after if error.retry_after is not None else True
        return isinstance(error, httpx.TransportError)

    def _post_once(
        self, body: bytes, key: str, count: int, secrets: Callable[[], set[str]] | None
    ) -> list[int]:
        self._throttle.wait()
        started = time.perf_counter()
        try:
            response = self._http.post(
                "/claims-import",
                params={"tenant_id": self.tenant_id},
                content=body,
                headers={"Idempotency-Key": key},
            )
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
            # Raised before a byte left: retrying cannot help; the usual cause is a key with a
            # newline or a space (read from a secret file) or a malformed CLAIMS_API_URL.
            raise ConfigurationError(
                f"The request could not be built ({type(error).__name__}): check that "
                "CLAIMS_API_KEY has no whitespace or control characters and CLAIMS_API_URL is "
                "a valid URL."
            ) from None
        except httpx.TransportError as error:
            self.stats.record(type(error).__name__, (time.perf_counter() - started) * 1000)
            raise
        self.stats.record(str(response.status_code), (time.perf_counter() - started) * 1000)
        status = response.status_code
        if status in (401, 403):
            key, tenant = self._settings
            setting = key if status == 401 else f"{key} or {tenant}"
            raise AuthenticationError(
                f"The claims-import API refused the credentials (HTTP {status}): check "
                f"{setting} (tenant {self.tenant_id})."
            )
        if status in TRANSIENT_STATUSES:
            raise TransientApiError(
                f"HTTP {status} from the claims-import API",
                status,
                retry_after_seconds(
                    response.headers.get("retry-after"), self.retry.retry_after_cap
                ),
            )
        if 400 <= status < 500:
            if status in _CLAIM_REFUSALS or names_claims(_json_or_none(response)):
                raise BatchRejectedError(status, self._server_message(response, secrets))
            raise ApiEndpointError(
                f"POST {self._endpoint} answered HTTP {status} without naming "
                "any claim: check CLAIMS_API_URL (a wrong path, or a gateway in front of the "
                "API). Nothing was recorded as delivered."
            )
        if status >= 300:
            raise TransientApiError(f"Unexpected HTTP {status} from the claims-import API", status)
        try:
            result = ImportResponse.model_validate_json(response.content)
        except ValueError:
            raise ApiEndpointError(
                f"The answer of POST {self._endpoint} (HTTP {status}) is not "
                "the claims-import response: check CLAIMS_API_URL."
            ) from None
        if not result.success:
            raise TransientApiError(
                "The claims-import API did not acknowledge the batch (success=false).", status
            )
        if len(result.claim_ids) != count:
            raise ApiEndpointError(
                f"The claims-import API acknowledged {len(result.claim_ids)} claim_ids for "
                f"{count} claims: the answer cannot be matched to the claims (check "
                "CLAIMS_API_URL). Nothing was recorded as delivered."
            )
        return result.claim_ids

    def _server_message(
        self, response: httpx.Response, secrets: Callable[[], set[str]] | None
    ) -> str:
        try:
            body = response.json()
            text = json.dumps(body, sort_keys=True) if not isinstance(body, str) else body
        except ValueError:
            text = response.text
        return scrub(text, (secrets() if secrets else set()) | {self._api_key})


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None
