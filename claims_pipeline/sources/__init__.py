"""EHR source adapters, picked by ``EHR_SCHEMA``."""

from __future__ import annotations

from claims_pipeline.errors import ConfigurationError
from claims_pipeline.sources.base import EncounterSource

SCHEMAS = ("reference", "openemr", "sql")


def get_source(schema: str, query_file: str | None = None) -> EncounterSource:
    """The adapter for ``EHR_SCHEMA``; ``query_file`` is the ``sql`` adapter's EHR_QUERY_FILE."""
    if schema == "reference":
        from claims_pipeline.sources.reference import ReferenceSource

        return ReferenceSource()
    if schema == "openemr":
        from claims_pipeline.sources.openemr import OpenEmrSource

        return OpenEmrSource()
    if schema == "sql":
        if not query_file:
            raise ConfigurationError("EHR_SCHEMA=sql needs EHR_QUERY_FILE (path of the query).")
        from claims_pipeline.sources.custom_sql import CustomSqlSource

        return CustomSqlSource(query_file)
    raise ConfigurationError(f"EHR_SCHEMA must be one of {', '.join(SCHEMAS)}; got {schema!r}.")
