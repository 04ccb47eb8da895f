"""Candidate optimisations, applied by monkeypatching inside the benchmark's own processes.

Nothing here changes ``claims_pipeline/``: ``python -m benchmarks.e2e --experiment NAME``
puts ``benchmarks/_site`` on PYTHONPATH and names the experiments in ``BENCH_EXPERIMENTS``;
its ``sitecustomize`` calls :func:`apply` at interpreter start in every child (the pipeline
process and the emulator process), so the real assets run with the patched functions. Each
experiment is the change recommended in docs/performance.md, written as small as possible;
the figures with and without it are the measured gain.

Experiments (comma-separated in BENCH_EXPERIMENTS). Those since applied to the code
(``ledger_lookup``, ``ledger_upsert``, ``batch_fast``: commits a3c7571 and 370801d) were
removed; check out a4c4556 to re-measure them against the code before.

- ``icd_compact``: diagnosis-code verdicts from two frozensets (billable, header) derived once
  from simple_icd_10_cm and cached in a text file, instead of importing the library's tree
  (1.9 s and about 180 MiB per process).
- ``ledger_bulk``: deliver() records acknowledgements from the consuming thread, many batches
  per transaction (at least ``BULK_ACKS``), before it yields their SENT results; the HTTP
  worker threads only post.
- ``rows_fast``: claims' ``_encounter_rows`` builds row dicts from ``Array.to_pylist`` columns
  zipped, not ``RecordBatch.to_pylist``.
- ``emulator_fast`` (emulator process): one JSON parse per request (pydantic validates the
  parsed object), canonical JSON and its hash computed once per claim, and the idempotency
  check, upsert and counters in one thread hop and one transaction.
- ``orjson``: canonical_json through orjson (sort keys; same bytes for this data) in the
  pipeline and the emulator; needs orjson importable (BENCH_EXTRA_PATH).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

BULK_ACKS = 2_000
ICD_CACHE = Path(
    os.environ.get("BENCH_ICD_CACHE")
    or Path(tempfile.gettempdir()) / f"claims-bench-icd10cm-{os.getuid()}.txt"
)
KNOWN = {
    "icd_compact",
    "ledger_bulk",
    "rows_fast",
    "emulator_fast",
    "orjson",
}


def apply(names: str) -> list[str]:
    """Apply the named experiments in this process; returns those applied."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = set(wanted) - KNOWN
    if unknown:
        raise SystemExit(f"unknown experiments: {', '.join(sorted(unknown))}")
    emulator = "claims_pipeline.emulator" in " ".join(sys.argv) or any(
        "claims_pipeline.emulator" in a for a in sys.orig_argv
    )
    for name in wanted:
        if name == "emulator_fast":
            if emulator:
                _emulator_fast()
        elif name == "orjson":
            _orjson()
        elif not emulator:
            globals()[f"_{name}"]()
    return wanted


# --- icd_compact ---------------------------------------------------------------------------


def _icd_sets() -> tuple[frozenset[str], frozenset[str]]:
    if not ICD_CACHE.exists():
        # Derived in a child process, so this one never imports the library's tree.
        script = (
            "from claims_pipeline.rules.code_sets import load_icd_code_set\n"
            "icd = load_icd_code_set()\n"
            "codes = [c for c in icd.get_all_codes(True) if icd.is_category_or_subcategory(c)]\n"
            "lines = [('B ' if icd.is_leaf(c) else 'H ') + c for c in codes]\n"
            f"open({str(ICD_CACHE)!r} + '.tmp', 'w').write('\\n'.join(lines))\n"
        )
        # Without BENCH_EXPERIMENTS: the child must not apply the experiments (and recurse).
        environment = {k: v for k, v in os.environ.items() if k != "BENCH_EXPERIMENTS"}
        subprocess.run([sys.executable, "-c", script], check=True, env=environment)  # noqa: S603
        os.replace(f"{ICD_CACHE}.tmp", ICD_CACHE)
    billable, header = set(), set()
    for line in ICD_CACHE.read_text().splitlines():
        (billable if line[0] == "B" else header).add(line[2:])
    return frozenset(billable), frozenset(header)


def _icd_compact() -> None:
    from claims_pipeline.rules import validation
    from claims_pipeline.rules.code_sets import IcdStatus

    billable, header = _icd_sets()

    def icd_status(code: str) -> IcdStatus:
        if code in billable:
            return IcdStatus.BILLABLE
        return IcdStatus.HEADER if code in header else IcdStatus.UNKNOWN

    validation.icd_status = icd_status


# --- the ledger ----------------------------------------------------------------------------


def _ledger_bulk() -> None:
    import json
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    import httpx

    from claims_pipeline.defs import claims_import as asset_module
    from claims_pipeline.delivery import sink
    from claims_pipeline.delivery.client import BatchRejectedError, TransientApiError, batch_body
    from claims_pipeline.delivery.ledger import Acknowledgement
    from claims_pipeline.errors import AuthenticationError
    from claims_pipeline.phi import scrub, sensitive_values

    Outcome, DeliveryResult = sink.Outcome, sink.DeliveryResult

    def send(self, batch):
        """As _Batcher.send, but leaves the ledger to the consuming thread."""
        if self.abort.is_set():
            return [DeliveryResult(c, Outcome.PENDING, reason="run stopped") for c in batch]
        try:
            claim_ids = self.client.post_batch(
                [c.payload for c in batch],
                secrets=lambda: sensitive_values(json.loads(c.payload) for c in batch),
            )
        except AuthenticationError:
            self.abort.set()
            raise
        except BatchRejectedError as error:
            if len(batch) == 1:
                reason = scrub(error.reason, sensitive_values([json.loads(batch[0].payload)]))
                return [DeliveryResult(batch[0], Outcome.REJECTED, reason=reason)]
            middle = len(batch) // 2
            return send(self, batch[:middle]) + send(self, batch[middle:])
        except (TransientApiError, httpx.TransportError) as error:
            reason = str(error) if isinstance(error, TransientApiError) else type(error).__name__
            return [DeliveryResult(c, Outcome.PENDING, reason=reason) for c in batch]
        return [
            DeliveryResult(c, Outcome.SENT, cid) for c, cid in zip(batch, claim_ids, strict=True)
        ]

    def deliver(
        claims,
        *,
        ledger,
        tenant_id,
        run_id,
        client,
        options=sink.DeliveryOptions(),  # noqa: B008 - as the original
        dry_run_sink=None,
    ):
        batcher = sink._Batcher(ledger, tenant_id, run_id, client)
        executor = ThreadPoolExecutor(max_workers=max(1, options.max_in_flight))
        in_flight: set = set()
        settled = False
        held: list = []  # SENT results whose acknowledgements are not in the ledger yet

        def record_held():
            acks = [
                Acknowledgement(
                    r.claim.provider_npi,
                    r.claim.claim_submitter_identifier,
                    r.claim.content_hash,
                    r.claim_id,
                    r.claim.partition_key,
                )
                for r in held
                if r.outcome is Outcome.SENT
            ]
            ledger.record(tenant_id, acks, run_id)
            out = list(held)
            held.clear()
            return out

        def settle(done):
            for future in done:
                held.extend(future.result())
            if len(held) >= BULK_ACKS:
                yield from record_held()

        try:
            for chunk in sink._chunks(claims, options.lookup_chunk):
                known = (
                    {}
                    if options.force_resend
                    else ledger.lookup(
                        tenant_id, [(c.provider_npi, c.claim_submitter_identifier) for c in chunk]
                    )
                )
                to_send = []
                for claim in chunk:
                    entry = known.get((claim.provider_npi, claim.claim_submitter_identifier))
                    if entry is not None and entry.content_hash == claim.content_hash:
                        yield DeliveryResult(claim, Outcome.UNCHANGED, entry.claim_id)
                    else:
                        to_send.append(claim)
                for batch in sink._chunks(to_send, options.batch_size):
                    if options.dry_run:
                        if dry_run_sink is not None:
                            dry_run_sink(batch_body([c.payload for c in batch]))
                        for claim in batch:
                            yield DeliveryResult(claim, Outcome.DRY_RUN)
                        continue
                    while in_flight and len(in_flight) >= (options.max_in_flight if settled else 1):
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        settled = True
                        yield from settle(done)
                    in_flight.add(executor.submit(send, batcher, batch))
            while in_flight:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                yield from settle(done)
            yield from record_held()
        finally:
            batcher.abort.set()
            executor.shutdown(wait=True, cancel_futures=True)
            if held:  # an error in flight: what was acknowledged still goes in the ledger
                record_held()

    sink.deliver = deliver
    asset_module.deliver = deliver


# --- claims and extraction -----------------------------------------------------------------


def _rows_fast() -> None:
    from claims_pipeline.defs import claims as claims_module

    encounters_asset = claims_module.ENCOUNTERS

    def _encounter_rows(store, day):
        for batch in store.read_batches(encounters_asset, day):
            names = batch.schema.names
            columns = [column.to_pylist() for column in batch.columns]
            for values in zip(*columns, strict=True):
                yield dict(zip(names, values, strict=True))

    claims_module._encounter_rows = _encounter_rows


# --- JSON ----------------------------------------------------------------------------------


def _orjson() -> None:
    import orjson

    from claims_pipeline import contract

    def canonical_json(payload):
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()

    contract.canonical_json = canonical_json
    for module_name in ("claims_pipeline.defs.claims", "claims_pipeline.emulator.app"):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, "canonical_json"):
            module.canonical_json = canonical_json
    # modules imported later bind the patched function through `from ... import`


# --- the emulator --------------------------------------------------------------------------


def _emulator_fast() -> None:
    import hashlib
    import json
    from datetime import UTC, datetime

    from pydantic import ValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response

    from claims_pipeline import contract
    from claims_pipeline.emulator import app as app_module
    from claims_pipeline.emulator import store as store_module
    from claims_pipeline.emulator.faults import Fault
    from claims_pipeline.emulator.problems import duplicate_problems, validation_problems

    Emulator, Refused = app_module._Emulator, app_module._Refused

    def accepted_claims(self, body, tally):
        raw = self._parse(body)
        try:
            claims = contract.ImportRequest.model_validate(raw).claims
        except ValidationError as exc:
            problems = validation_problems(exc, raw)
            indexes = {p["claim_index"] for p in problems if p["claim_index"] is not None}
            raise app_module._invalid(
                f"{len(problems)} problem(s) in {len(indexes)} claim(s); nothing was stored",
                problems,
            ) from None
        keys = [(claim.provider_npi, claim.claim_submitter_identifier) for claim in claims]
        duplicates = duplicate_problems(keys)
        if duplicates:
            raise app_module._invalid(
                "claims repeat a key within the request; nothing was stored", duplicates
            )
        rejected = self.injector.rejected(key for _, key in keys)
        if rejected:
            tally[f"fault.{Fault.REJECT_CLAIMS}"] += 1
            raise app_module._invalid(
                "claims rejected by payer rules; nothing was stored",
                [app_module._payer_rejection(index, keys[index][1]) for index in rejected],
                error="rejected_claims",
            )
        incoming = []
        for (npi, key), raw_claim in zip(keys, raw["claims"], strict=True):
            content = contract.canonical_json(raw_claim)
            incoming.append(
                store_module.IncomingClaim(
                    npi, key, content, hashlib.sha256(content.encode()).hexdigest()
                )
            )
        return incoming

    def import_all(self, tenant_id, claims, idempotency, tally):
        """Idempotency check, upsert and counters: one lock, one transaction."""
        now = datetime.now(UTC).isoformat()
        with self._lock, self._transaction() as connection:
            if idempotency is not None:
                committed = self._find_idempotent(tenant_id, *idempotency)
                if committed is not None:
                    tally["idempotent_replays"] += 1
                    tally["status.200"] += 1
                    connection.executemany(store_module._ADD_TO_COUNTER, tally.items())
                    return committed
            connection.executemany(
                store_module._UPSERT,
                [
                    (tenant_id, c.provider_npi, c.claim_submitter_identifier, c.content,
                     c.content_hash, now, now)
                    for c in claims
                ],
            )  # fmt: skip
            keys = json.dumps([[c.provider_npi, c.claim_submitter_identifier] for c in claims])
            claim_ids = [
                row[0] for row in connection.execute(store_module._IDS_IN_ORDER, (keys, tenant_id))
            ]
            if idempotency is not None:
                connection.execute(
                    "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
                    (tenant_id, idempotency[0], idempotency[1], json.dumps(claim_ids), now),
                )
            tally["claims_received"] += len(claims)
            tally["status.200"] += 1
            connection.executemany(store_module._ADD_TO_COUNTER, tally.items())
            return store_module.ImportOutcome(claim_ids=claim_ids)

    original_import = Emulator.import_claims

    async def import_claims(self, request):
        # Only a plain request takes the fast path: faults keep the original behaviour.
        plan_config = self.injector.config
        if plan_config != type(plan_config)():
            return await original_import(self, request)
        from collections import Counter

        tally: Counter = Counter(requests_total=1)
        try:
            tenant_id = self._authorize(request, tenant_scoped=True)
            try:
                body = await request.body()
            except ClientDisconnect:
                raise Refused(Response(status_code=499)) from None
            idempotency = self._idempotency(request, body)
            incoming = self._accepted_claims(body, tally)
            try:
                outcome = await run_in_threadpool(
                    import_all, self.store, tenant_id, incoming, idempotency, tally
                )
            except store_module.IdempotencyConflict:
                raise self._idempotency_conflict() from None
            return JSONResponse(app_module._success(outcome.claim_ids))
        except Refused as refused:
            tally[f"status.{refused.response.status_code}"] += 1
            await run_in_threadpool(self.store.add_to_counters, tally)
            return refused.response

    Emulator._accepted_claims = accepted_claims
    Emulator.import_claims = import_claims
