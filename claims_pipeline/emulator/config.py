"""How one emulator instance is set up: its database, its tenant, its key, its faults."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from claims_pipeline.emulator.faults import FaultConfig


class EmulatorConfig(BaseModel):
    """The emulator accepts exactly one tenant and one API key, like a tenant's real account.

    ``api_key`` is a ``SecretStr`` so that printing or logging the config never shows it.
    ``seed`` makes the injected faults reproducible.
    """

    model_config = ConfigDict(frozen=True)

    db_path: Path
    api_key: SecretStr
    tenant_id: int
    faults: FaultConfig = FaultConfig()
    seed: int | None = None

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the API key must not be empty")
        return value
