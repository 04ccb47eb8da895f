"""Alerts as data: what happened, on which day, in which run, with counts and claim keys.

Builders take only figures an operator may see (job, step and check names, counts, claim keys,
dates of service, run ids) and text that has gone through :func:`claims_pipeline.phi.scrub`;
an :class:`Alert` renders itself as plain text (e-mail, Slack, Teams) and as JSON (webhook).
Imports nothing from Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from claims_pipeline.phi import scrub

PRODUCT = "claims_pipeline"
#: Claims a day's delivery did not settle, by the name of the ``claims_import`` metadata entry
#: that counts them -> the ``outcome`` the stored delivery results give them.
ATTENTION_OUTCOMES: dict[str, str] = {
    "rejected_by_api": "rejected",
    "pending": "pending",
    "held": "held",
    "withdrawn": "withdrawn",
}
#: How each count reads in a sentence.
ATTENTION_LABELS: dict[str, str] = {
    "rejected_by_api": "refused by the service",
    "pending": "pending",
    "held": "held",
    "withdrawn": "withdrawn",
}
#: At most this many claim keys per outcome in one message; the count says how many there are.
MAX_CLAIM_KEYS = 20

RUN_FAILED = "run_failed"
CHECK_FAILED = "asset_check_failed"
CLAIMS_NEED_ATTENTION = "claims_need_attention"


@dataclass(frozen=True)
class Alert:
    """One notification. ``day`` is a date of service or a range ``first...last``."""

    event: str
    title: str
    summary: str
    day: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    claim_keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    details: Mapping[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """The alert for people: title, summary, figures, claim keys and the run's link."""
        lines = [self.title, self.summary]
        if self.counts:
            lines.append(", ".join(f"{name}: {count}" for name, count in self.counts.items()))
        for outcome, keys in self.claim_keys.items():
            shown = ", ".join(keys)
            more = self.counts.get(_count_name(outcome), len(keys)) - len(keys)
            lines.append(f"{outcome}: {shown}" + (f" (and {more} more)" if more > 0 else ""))
        for name, value in self.details.items():
            lines.append(f"{name}: {value}")
        if self.run_url:
            lines.append(f"Run: {self.run_url}")
        elif self.run_id:
            lines.append(f"Run id: {self.run_id} (set CLAIMS_UI_BASE_URL for a link)")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The body of the generic webhook: every field, plus ``text``."""
        return {
            "source": PRODUCT,
            "event": self.event,
            "title": self.title,
            "summary": self.summary,
            "day": self.day,
            "run_id": self.run_id,
            "run_url": self.run_url,
            "counts": dict(self.counts),
            "claim_keys": {outcome: list(keys) for outcome, keys in self.claim_keys.items()},
            "details": dict(self.details),
            "text": self.text(),
        }


def _count_name(outcome: str) -> str:
    for name, value in ATTENTION_OUTCOMES.items():
        if value == outcome:
            return name
    return outcome


def run_url(ui_base_url: str | None, run_id: str | None) -> str | None:
    """The run's page in the Dagster UI, when the UI's base URL is known."""
    if not ui_base_url or not run_id:
        return None
    return f"{ui_base_url.rstrip('/')}/runs/{run_id}"


def _day_range(first: str | None, last: str | None) -> str | None:
    if not first:
        return last
    if not last or last == first:
        return first
    return f"{first}...{last}"


def run_failed_alert(
    *,
    job_name: str,
    run_id: str,
    first_day: str | None,
    last_day: str | None,
    failed_steps: Sequence[str],
    error: str | None,
    ui_base_url: str | None,
    secrets: Iterable[str] = (),
    will_retry: bool = False,
) -> Alert:
    """A run of ``job_name`` failed (``will_retry``: Dagster's run retries will launch it
    again). ``error`` is the first failed step's message: it is scrubbed of ``secrets`` (the
    API key) and of anything date-shaped before it is shown."""
    day = _day_range(first_day, last_day)
    steps = ", ".join(failed_steps) or "no step (the run itself)"
    details = {"job": job_name, "failed steps": steps}
    if error:
        details["error"] = scrub(error, secrets)
    return Alert(
        event=RUN_FAILED,
        title=f"[{PRODUCT}] Run of {job_name} failed" + (f" ({day})" if day else ""),
        summary=f"Run {run_id[:8]} of {job_name} failed in: {steps}."
        + (" It will be retried automatically." if will_retry else ""),
        day=day,
        run_id=run_id,
        run_url=run_url(ui_base_url, run_id),
        details=details,
    )


def check_failed_alert(
    *,
    asset: str,
    check_name: str,
    severity: str,
    blocking: bool,
    day: str | None,
    run_id: str | None,
    figures: Mapping[str, int | float],
    description: str | None,
    ui_base_url: str | None,
) -> Alert:
    """An asset check did not pass. ``figures`` are the check's numeric metadata only."""
    kind = "blocking check" if blocking else "check"
    details = {"asset": asset, "check": check_name, "severity": severity}
    if description:
        details["check description"] = scrub(description)
    return Alert(
        event=CHECK_FAILED,
        title=f"[{PRODUCT}] {asset}: {kind} {check_name} failed" + (f" ({day})" if day else ""),
        summary=(
            f"The {kind} {check_name} on {asset} did not pass ({severity})"
            + (f" for {day}." if day else ".")
            + (" Downstream steps of that run did not run." if blocking else "")
        ),
        day=day,
        run_id=run_id,
        run_url=run_url(ui_base_url, run_id),
        counts={name: value for name, value in figures.items() if isinstance(value, int)},
        details=details
        | {name: str(value) for name, value in figures.items() if not isinstance(value, int)},
    )


def claims_need_attention(counts: Mapping[str, Any]) -> dict[str, int]:
    """The non-zero counts of unsettled claims in a day's ``claims_import`` metadata; a
    missing entry counts as 0."""
    found = {}
    for name in ATTENTION_OUTCOMES:
        value = counts.get(name, 0)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found[name] = value
    return found


def claims_need_attention_alert(
    *,
    day: str,
    run_id: str | None,
    counts: Mapping[str, int],
    claim_keys: Mapping[str, Sequence[str]],
    ui_base_url: str | None,
) -> Alert:
    """A day's delivery ended with claims refused by the service, pending, held or withdrawn.
    ``counts`` by metadata name (``rejected_by_api``...), ``claim_keys`` by outcome."""
    shown = {outcome: sorted(keys)[:MAX_CLAIM_KEYS] for outcome, keys in claim_keys.items() if keys}
    total = sum(counts.values())
    parts = ", ".join(
        f"{count} {ATTENTION_LABELS.get(name, name)}" for name, count in counts.items()
    )
    return Alert(
        event=CLAIMS_NEED_ATTENTION,
        title=f"[{PRODUCT}] {total} claim(s) of {day} need attention",
        summary=f"Delivery of {day}: {parts}.",
        day=day,
        run_id=run_id,
        run_url=run_url(ui_base_url, run_id),
        counts=dict(counts),
        claim_keys=shown,
    )
