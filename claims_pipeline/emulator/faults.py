"""Fault injection: the failures a real claims-import API can produce, on demand and seeded.

Rates are probabilities per import request. ``status_429``, ``status_500``, ``status_503`` and
``success_false`` replace the response before anything is processed, so at most one of them
fires per request (their rates add up to at most 1). ``slow`` delays a request before it is
processed. ``drop_after_commit`` stores the claims and then closes the connection without an
answer. ``reject_claims`` is not random: every request holding one of those
``claim_submitter_identifier`` values is refused with a 422. ``echo_phi`` is not random either:
it makes every 422 quote the patient data of the claims it names (name, member id, date of
birth, reformatted), as a careless real API might; off by default, for tests of scrubbing.

Every request draws the same three random numbers from a generator seeded by ``seed``, so a
sequence of requests sent one at a time meets the same faults on every run. Concurrent
requests draw in arrival order, which only the scheduler decides.

The option names of the command line are derived from the field names here
(``status_429`` -> ``--fault-status-429``), so this module is their one home.
"""

from __future__ import annotations

import argparse
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class Fault(StrEnum):
    """A fault the emulator can inject; the values are the keys of ``stats()["faults_fired"]``."""

    STATUS_429 = "status_429"
    STATUS_500 = "status_500"
    STATUS_503 = "status_503"
    SUCCESS_FALSE = "success_false"
    SLOW = "slow"
    DROP_AFTER_COMMIT = "drop_after_commit"
    REJECT_CLAIMS = "reject_claims"


# The faults that stand in for the whole response, in the order their rates are stacked.
RESPONSE_FAULTS: tuple[Fault, ...] = (
    Fault.STATUS_429,
    Fault.STATUS_500,
    Fault.STATUS_503,
    Fault.SUCCESS_FALSE,
)


class FaultConfig(BaseModel):
    """Which faults to inject and how. All zero (the default) means a well-behaved API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status_429: Rate = 0.0
    status_500: Rate = 0.0
    status_503: Rate = 0.0
    success_false: Rate = 0.0
    slow: Rate = 0.0
    drop_after_commit: Rate = 0.0
    reject_claims: tuple[str, ...] = ()
    echo_phi: bool = False
    retry_after_seconds: int = Field(default=1, ge=0)
    slow_seconds: float = Field(default=2.0, ge=0.0)
    # Lets a test say "fail the first request, then behave" without a race against the client.
    max_faults: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _response_rates_fit(self) -> FaultConfig:
        if sum(getattr(self, fault.value) for fault in RESPONSE_FAULTS) > 1.0 + 1e-9:
            names = ", ".join(fault.value for fault in RESPONSE_FAULTS)
            raise ValueError(f"the rates of {names} add up to more than 1")
        return self


@dataclass(frozen=True)
class FaultPlan:
    """What one request will meet: a replaced response, a delay, a drop after commit."""

    response: Fault | None = None
    delay_seconds: float = 0.0
    drop_after_commit: bool = False


class FaultInjector:
    """Draws a :class:`FaultPlan` per request from the current config; safe across threads."""

    def __init__(self, config: FaultConfig, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._default_seed = seed
        self.configure(config)

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig, seed: int | None = None) -> None:
        """Replace the config, restart the random sequence and the ``max_faults`` budget.

        Without ``seed``, the seed given at construction is used again, so setting the same
        config twice replays the same faults.
        """
        with self._lock:
            self._config = config
            self._random = random.Random(self._default_seed if seed is None else seed)
            self._fired = 0

    def plan(self) -> FaultPlan:
        """The random faults for the next request (``reject_claims`` is checked separately)."""
        with self._lock:
            config = self._config
            # Always three draws, whatever fires: the sequence stays reproducible.
            response_draw, slow_draw, drop_draw = (self._random.random() for _ in range(3))
            response = None
            threshold = 0.0
            for fault in RESPONSE_FAULTS:
                threshold += getattr(config, fault.value)
                if response_draw < threshold:
                    response = fault if self._take() else None
                    break
            slow = slow_draw < config.slow and self._take()
            drop = drop_draw < config.drop_after_commit and self._take()
            return FaultPlan(
                response=response,
                delay_seconds=config.slow_seconds if slow else 0.0,
                drop_after_commit=drop,
            )

    def rejected(self, claim_submitter_identifiers: Iterable[str | None]) -> list[int]:
        """Indexes of the claims whose identifier is listed in ``reject_claims``."""
        listed = set(self._config.reject_claims)
        return [i for i, key in enumerate(claim_submitter_identifiers) if key in listed]

    def _take(self) -> bool:
        limit = self._config.max_faults
        if limit is not None and self._fired >= limit:
            return False
        self._fired += 1
        return True


FLAG_PREFIX = "--fault-"
_RATE_FIELDS = frozenset(fault.value for fault in Fault) - {Fault.REJECT_CLAIMS.value}


def _flag(field: str) -> str:
    return FLAG_PREFIX + field.replace("_", "-")


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--fault-<field>`` option per :class:`FaultConfig` field to ``parser``."""
    group = parser.add_argument_group("fault injection")
    for name, field in FaultConfig.model_fields.items():
        if name == "reject_claims":
            help_text = "comma-separated claim_submitter_identifiers to refuse with a 422"
        elif name == "echo_phi":
            help_text = "true: 422 refusals quote the patient's name, member id and birth date"
        elif name in _RATE_FIELDS:
            help_text = f"rate 0..1 of {name} faults"
        else:
            help_text = f"default {field.default}"
        group.add_argument(_flag(name), dest=f"fault_{name}", metavar="VALUE", help=help_text)


def faults_from_arguments(namespace: argparse.Namespace) -> FaultConfig:
    """The :class:`FaultConfig` given by the options of :func:`add_fault_arguments`.

    Raises ``ValueError`` naming the option at fault.
    """
    given: dict[str, Any] = {}
    for name in FaultConfig.model_fields:
        value = getattr(namespace, f"fault_{name}", None)
        if value is None:
            continue
        if name == "reject_claims":
            value = tuple(key.strip() for key in value.split(",") if key.strip())
        given[name] = value
    try:
        return FaultConfig.model_validate(given)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        where = _flag(str(first["loc"][0])) if first["loc"] else "fault options"
        raise ValueError(f"{where}: {first['msg']}") from None


def fault_arguments(config: FaultConfig) -> list[str]:
    """Command-line options that reproduce ``config`` (only the fields that differ from default)."""
    args: list[str] = []
    for name, value in config.model_dump(exclude_defaults=True).items():
        if name == "reject_claims":
            value = ",".join(value)
        # "--flag=value": a value may start with "-", which argparse would take for an option.
        args.append(f"{_flag(name)}={value}")
    return args
