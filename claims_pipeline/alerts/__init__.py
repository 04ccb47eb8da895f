"""Telling an operator: what went wrong in an unattended night, sent where they will see it.

- :mod:`claims_pipeline.alerts.messages` builds an :class:`Alert` from plain figures (counts,
  claim keys, day, run id): no PHI can enter, because nothing patient-related is accepted.
- :mod:`claims_pipeline.alerts.destinations` sends it to Slack and Microsoft Teams (through
  Dagster's own integrations), e-mail over SMTP and a generic JSON webhook, chosen by
  ``CLAIMS_ALERT_*`` environment variables; none set means alerts are off.

The sensors that call these live in ``claims_pipeline/defs/alerts/sensors.py``.
"""

from claims_pipeline.alerts.destinations import (
    AlertDeliveryError,
    Destination,
    destinations_from_environment,
    send_alert,
    ui_base_url,
)
from claims_pipeline.alerts.messages import (
    ATTENTION_OUTCOMES,
    Alert,
    check_failed_alert,
    claims_need_attention_alert,
    run_failed_alert,
    run_url,
)

__all__ = [
    "ATTENTION_OUTCOMES",
    "Alert",
    "AlertDeliveryError",
    "Destination",
    "check_failed_alert",
    "claims_need_attention_alert",
    "destinations_from_environment",
    "run_failed_alert",
    "run_url",
    "send_alert",
    "ui_base_url",
]
