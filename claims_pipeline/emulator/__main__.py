"""``python -m claims_pipeline.emulator``: serve the claims-import emulator.

The API key is read from ``CLAIMS_API_KEY`` (``--api-key`` exists, but a command line is
visible to every user of the machine); the tenant from ``--tenant-id`` or ``CLAIMS_TENANT_ID``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from claims_pipeline import settings
from claims_pipeline.emulator.config import EmulatorConfig
from claims_pipeline.emulator.faults import add_fault_arguments, faults_from_arguments
from claims_pipeline.emulator.server import DEFAULT_PORT, run_server


def build_parser(prog: str = "python -m claims_pipeline.emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local claims-import API that stores claims in SQLite.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"0 picks a free port (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--db",
        type=Path,
        help="SQLite file of the emulator (default: emulator.sqlite in CLAIMS_DATA_DIR)",
    )
    parser.add_argument(
        "--api-key",
        help=f"the accepted API key; prefer the {settings.CLAIMS_API_KEY.name} variable",
    )
    parser.add_argument("--tenant-id", help=f"default: {settings.CLAIMS_TENANT_ID.name}")
    parser.add_argument(
        "--other-tenant",
        action="append",
        default=[],
        metavar="ID=VARIABLE",
        help="serve tenant ID too, with the key held by environment variable VARIABLE",
    )
    parser.add_argument("--seed", type=int, help="seed of the random faults")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="shut down when standard input closes"
    )
    parser.add_argument("--no-access-log", action="store_true")
    add_fault_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv``, then serve until interrupted. Exits 2 on a bad option or setting.

    ``prog`` is the command name shown in usage and errors (e.g. "claims-pipeline emulator").
    """
    parser = build_parser(prog) if prog else build_parser()
    args = parser.parse_args(argv)
    api_key = args.api_key or settings.get(settings.CLAIMS_API_KEY)
    if not api_key:
        parser.error(f"set {settings.CLAIMS_API_KEY.name} (or pass --api-key)")
    tenant = args.tenant_id or settings.get(settings.CLAIMS_TENANT_ID)
    if tenant is None or not tenant.strip().isdigit():
        parser.error(f"--tenant-id or {settings.CLAIMS_TENANT_ID.name} must be an integer")
    try:
        faults = faults_from_arguments(args)
    except ValueError as exc:
        parser.error(str(exc))
    other_tenants = {}
    for given in args.other_tenant:
        tenant_text, _, variable = given.partition("=")
        key = os.environ.get(variable, "") if variable else ""
        if not tenant_text.isdigit() or not key.strip():
            parser.error(f"--other-tenant {given}: write ID=VARIABLE, VARIABLE holding its key")
        other_tenants[int(tenant_text)] = key
    config = EmulatorConfig(
        db_path=args.db or settings.data_dir() / "emulator.sqlite",
        api_key=api_key,
        tenant_id=int(tenant),
        faults=faults,
        seed=args.seed,
        other_tenants=other_tenants,
    )
    run_server(
        config,
        args.host,
        args.port,
        port_file=args.port_file,
        exit_with_parent=args.exit_with_parent,
        access_log=not args.no_access_log,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
