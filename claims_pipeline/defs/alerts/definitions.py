"""One unsettled-day alert sensor per practice (each reads its own practice's stored delivery
results); the run-failure and failed-check sensors of sensors.py cover every practice."""

import dagster as dg

from claims_pipeline.components.claims_practice import served_practices
from claims_pipeline.defs.alerts.sensors import unsettled_day_alert


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[unsettled_day_alert(p) for p in served_practices()])
