"""A local claims-import API: the documented contract over real HTTP, state in SQLite, and
injectable faults, for the demo and the tests. Imports nothing from Dagster."""

from claims_pipeline.emulator.app import create_app
from claims_pipeline.emulator.config import EmulatorConfig
from claims_pipeline.emulator.faults import Fault, FaultConfig
from claims_pipeline.emulator.server import (
    DEFAULT_PORT,
    EmulatorError,
    RunningEmulator,
    running_emulator,
    serve,
)

__all__ = [
    "DEFAULT_PORT",
    "EmulatorConfig",
    "EmulatorError",
    "Fault",
    "FaultConfig",
    "RunningEmulator",
    "create_app",
    "running_emulator",
    "serve",
]
