"""The ``claims-pipeline`` command: demo, seed-demo, emulator (and more as they land)."""

from __future__ import annotations

import argparse
import sys

from claims_pipeline.errors import ClaimsPipelineError


def _seed_demo(args: argparse.Namespace) -> int:
    from claims_pipeline.demo.seed import seed_demo

    summary = seed_demo(args.url, days=args.days, encounters_per_day=args.encounters_per_day)
    print(
        f"Seeded {summary.billable_encounters} billable encounters "
        f"({summary.charge_lines} charge lines, {len(summary.defects)} with planted defects)."
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from claims_pipeline.demo.run import run_demo

    return run_demo(days=args.days, encounters_per_day=args.encounters_per_day)


def _emulator(args: argparse.Namespace) -> int:
    from claims_pipeline.emulator.__main__ import main as emulator_main

    return emulator_main(args.emulator_args, prog="claims-pipeline emulator") or 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "emulator":
        args.emulator_args = extra  # the emulator parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except ClaimsPipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
