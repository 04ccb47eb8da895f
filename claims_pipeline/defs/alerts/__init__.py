"""Alerts: sensors that tell someone when a night needs attention."""
