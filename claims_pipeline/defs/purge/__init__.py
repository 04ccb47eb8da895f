"""Retention: the purge of stored PHI as a job with a schedule."""
