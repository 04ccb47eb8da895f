"""Dagster component types of this project: one YAML file per instance (docs/practices.md)."""

from claims_pipeline.components.claims_practice import ClaimsPractice

__all__ = ["ClaimsPractice"]
