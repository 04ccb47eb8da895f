"""How one emulator instance is set up: its database, its tenant, its key, its faults."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from claims_pipeline.emulator.faults import FaultConfig


class EmulatorConfig(BaseModel):
    """The emulator serves one tenant with one API key, like a tenant's real account, plus
    any ``other_tenants`` (tenant id -> its own key), as the multi-tenant service does: a key
    is accepted only with its own tenant id.

    ``api_key`` is a ``SecretStr`` so that printing or logging the config never shows it.
    ``seed`` makes the injected faults reproducible.
    """

    model_config = ConfigDict(frozen=True)

    db_path: Path
    api_key: SecretStr
    tenant_id: int
    faults: FaultConfig = FaultConfig()
    seed: int | None = None
    other_tenants: dict[int, SecretStr] = {}

    def tenant_keys(self) -> dict[int, SecretStr]:
        """Every tenant served, with its key."""
        return {**self.other_tenants, self.tenant_id: self.api_key}

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the API key must not be empty")
        return value
