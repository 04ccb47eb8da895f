"""The ``claims-pipeline`` command: demo, seed-demo, emulator, check-source, purge (and more as
they land)."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from typing import TYPE_CHECKING

from claims_pipeline.errors import ClaimsPipelineError

if TYPE_CHECKING:
    from claims_pipeline.components import ClaimsPractice
    from claims_pipeline.delivery.ledger import DeliveryLedger


def _seed_demo(args: argparse.Namespace) -> int:
    from claims_pipeline.demo.seed import seed_demo

    summary = seed_demo(args.url, days=args.days, encounters_per_day=args.encounters_per_day)
    print(
        f"Seeded {summary.billable_encounters} billable encounters "
        f"({summary.charge_lines} charge lines, {len(summary.defects)} with planted defects)."
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.practices:
        from claims_pipeline.demo.practices import run_practices_demo
        from claims_pipeline.demo.run import SEED_DAYS

        return run_practices_demo(
            args.practices, args.days, args.encounters_per_day, seed_days=SEED_DAYS
        )
    from claims_pipeline.demo.run import run_demo

    return run_demo(days=args.days, encounters_per_day=args.encounters_per_day)


def _emulator(args: argparse.Namespace) -> int:
    from claims_pipeline.emulator.__main__ import main as emulator_main

    return emulator_main(args.emulator_args, prog="claims-pipeline emulator") or 0


def _check_source(args: argparse.Namespace) -> int:
    from claims_pipeline import settings
    from claims_pipeline.sources.check import check_source

    if args.practice:
        practice = practice_named(args.practice)
        today = practice.practice.today()
        url = practice.resolved(practice.ehr_url_env) or practice.ehr_url or ""
        schema: str = practice.ehr_schema
        query_file = practice.path(practice.query_file)
    else:
        today = settings.today()
        url = settings.ehr_database_url()
        schema = settings.get(settings.EHR_SCHEMA) or "reference"
        query_file = settings.get(settings.EHR_QUERY_FILE)
    first = args.window_from or today - timedelta(days=7)
    last = args.window_to or today - timedelta(days=1)
    if first > last:
        print("error: --from is after --to.", file=sys.stderr)
        return 2
    report = check_source(url, schema, query_file, first, last + timedelta(days=1))
    print(f"EHR_SCHEMA={report.schema} EHR_DATABASE_URL={report.database}")
    print(f"window: dates of service {first} to {last}")
    for finding in report.findings:
        print(finding)
    if report.ok:
        print(
            f"ok: the {report.schema} adapter can read this database; "
            f"{report.encounter_count} billable encounter(s) in the window."
        )
        return 0
    sys.stdout.flush()  # the report first, then the verdict
    print(
        f"check-source found {len(report.problems)} problem(s): fix them and run "
        "claims-pipeline check-source again.",
        file=sys.stderr,
    )
    return 1


def _purge(args: argparse.Namespace) -> int:

    from claims_pipeline import settings
    from claims_pipeline.purge import describe, purge

    if args.practice:
        practice = practice_named(args.practice)
        today = practice.practice.today()
        data_dir = args.data_dir or practice.data_directory()
    else:
        today = settings.today()
        data_dir = args.data_dir or str(settings.data_dir())
    report = purge(data_dir, args.older_than, today, dry_run=args.dry_run)
    print(describe(report, args.older_than))
    return 0


CLAIM_ACTIONS = ("list", "show", "release", "resolve")


def _claim(args: argparse.Namespace) -> int:
    """List, show, release or resolve claims in the delivery ledger (no PHI is printed)."""
    from claims_pipeline import settings
    from claims_pipeline.delivery.ledger import DeliveryLedger

    if args.action not in CLAIM_ACTIONS:  # `claims-pipeline claim KEY`
        if args.key:
            raise ClaimsPipelineError(
                f"claims-pipeline claim: unknown action; use one of {', '.join(CLAIM_ACTIONS)}."
            )
        args.action, args.key = "show", args.action
    if args.practice:
        practice = practice_named(args.practice)
        tenant_id, ledger = practice.tenant_id, DeliveryLedger(practice.ledger_url())
    else:
        tenant_id = settings.get_int(settings.CLAIMS_TENANT_ID, minimum=1)
        ledger = DeliveryLedger(settings.ledger_url())
    try:
        if args.action == "list":
            entries = ledger.open_entries(tenant_id)
            unsent = ledger.unsent(tenant_id)
            if not entries and not unsent:
                print(f"No held, withdrawn, refused or pending claims for tenant {tenant_id}.")
            for u in unsent:
                print(
                    f"{u.claim_submitter_identifier}\t{u.outcome}\t{u.service_date}\t"
                    f"{u.attempts} attempt(s)\t{u.payer_name or ''}\t{u.billed_amount or ''}\t"
                    f"{u.reason or ''}"
                )
            for e in entries:
                print(
                    f"{e.claim_submitter_identifier}\t{e.state}\t{e.service_date}\t"
                    f"claim_id {e.claim_id}\tNPI {e.provider_npi}"
                    + (f" -> {e.held_npi}" if e.held_npi else "")
                    + f"\t{e.note or ''}"
                )
            return 0
        if not args.key:
            raise ClaimsPipelineError(f"claims-pipeline claim {args.action} needs a claim key.")
        if args.action == "release":
            entry = ledger.release(tenant_id, args.key)
            print(
                f"{args.key}: released; the next run sends it under NPI {entry.held_npi} (the "
                f"service still holds claim_id {entry.claim_id} under NPI {entry.provider_npi})."
            )
        elif args.action == "resolve":
            ledger.resolve(tenant_id, args.key)
            print(f"{args.key}: marked resolved; it is no longer reported or retried.")
        else:
            return _show_claim(ledger, tenant_id, args.key)
        return 0
    finally:
        ledger.dispose()


def _show_claim(ledger: DeliveryLedger, tenant_id: int, key: str) -> int:
    """One claim's story: what the service holds, then every attempt that did not land."""
    found = ledger.lookup(tenant_id, [key]).get(key)
    attempts = ledger.attempts(tenant_id, key)
    if found is None and not attempts:
        print(f"{key}: unknown to the ledger of tenant {tenant_id}.")
        return 1
    if found is None:
        print(f"{key}: never acknowledged by the service")
    else:
        print(
            f"{key}: {found.state}, date of service {found.service_date}, claim_id "
            f"{found.claim_id} under NPI {found.provider_npi}, content {found.content_hash[:12]}"
            + (f", held for NPI {found.held_npi}" if found.held_npi else "")
            + (f", released for NPI {found.released_npi}" if found.released_npi else "")
            + (f" ({found.note})" if found.note else "")
        )
    for a in attempts:
        print(
            f"  {a.attempted_at:%Y-%m-%d %H:%M:%S} run {a.run_id}: {a.outcome}"
            + (f" - {a.reason}" if a.reason else "")
        )
    return 0


def _age(text: str) -> timedelta:
    from claims_pipeline.purge import parse_age

    try:
        return parse_age(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claims-pipeline",
        description="EHR encounters -> validated claims -> the claims-import API.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="Seed the demo EHR, start the local API emulator, run claims_sync."
    )
    demo.add_argument("--days", type=int, default=7, help="days of service to sync (default 7)")
    demo.add_argument("--encounters-per-day", type=int, default=60)
    demo.add_argument(
        "--practices",
        type=int,
        metavar="N",
        help="N practices (1-3) in one deployment, each with its own EHR, tenant, key and "
        "time zone, from practice files (CLAIMS_PRACTICES_DIR)",
    )
    demo.set_defaults(handler=_demo)

    seed = commands.add_parser("seed-demo", help="Create and fill a demo EHR (reference schema).")
    seed.add_argument("--url", required=True, help="SQLAlchemy URL of the database to fill")
    seed.add_argument("--days", type=int, default=30)
    seed.add_argument("--encounters-per-day", type=int, default=60)
    seed.set_defaults(handler=_seed_demo)

    emulator = commands.add_parser(
        "emulator",
        help="Run the local claims-import API emulator (options: claims-pipeline emulator -h).",
        add_help=False,
    )
    emulator.set_defaults(handler=_emulator)

    check = commands.add_parser(
        "check-source",
        help="Check that EHR_SCHEMA's adapter can read EHR_DATABASE_URL and count a window's "
        "billable encounters (no patient data is printed). Exit code 1 on a problem.",
    )
    check.add_argument(
        "--from",
        dest="window_from",
        type=_iso_date,
        metavar="DATE",
        help="first date of service (default: 7 days ago)",
    )
    check.add_argument(
        "--to",
        dest="window_to",
        type=_iso_date,
        metavar="DATE",
        help="last date of service, inclusive (default: yesterday)",
    )
    _practice_option(check)
    check.set_defaults(handler=_check_source)

    purge = commands.add_parser(
        "purge",
        help="Delete stored encounters, claim payloads and rejections whose date of service is "
        "older than a retention period; the delivery ledger is kept (see README).",
    )
    purge.add_argument(
        "--older-than",
        required=True,
        type=_age,
        metavar="AGE",
        help="retention period, e.g. 90d or 12w",
    )
    purge.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    purge.add_argument("--data-dir", help="the data directory (default: CLAIMS_DATA_DIR)")
    _practice_option(purge)
    purge.set_defaults(handler=_purge)

    claim = commands.add_parser(
        "claim",
        help="Claims that need a person (docs/claim-lifecycle.md): list the held, withdrawn, "
        "refused and pending ones, show one's story, release a held claim, resolve a withdrawn "
        "or refused one.",
    )
    claim.add_argument(
        "action",
        metavar="{list,show,release,resolve,KEY}",
        help="what to do; a claim key alone means `show KEY`",
    )
    claim.add_argument("key", nargs="?", help="the claim_submitter_identifier")
    _practice_option(claim)
    claim.set_defaults(handler=_claim)
    return parser


def _practice_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--practice",
        metavar="NAME",
        help="the practice file NAME of CLAIMS_PRACTICES_DIR (its EHR, tenant, data, ledger, "
        "time zone) instead of the environment's practice",
    )


def practice_named(name: str) -> ClaimsPractice:
    from claims_pipeline.components.claims_practice import practice_named as named

    return named(name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "emulator":
        args.emulator_args = extra  # the emulator parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from claims_pipeline.storage import owner_only

    try:
        # Whatever a command creates (the demo's EHR and emulator databases, Dagster's
        # storage, the data directory) is the owner's alone: it may hold PHI.
        with owner_only():
            status: int = args.handler(args)  # each subcommand's handler returns its exit status
            return status
    except ClaimsPipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
