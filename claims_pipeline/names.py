"""Names that are part of the public interface, defined once: asset keys, check names, the
directories of stored data, and the Dagster run tags this project reads or writes (their
values are Dagster's documented tag names, spelled here so no private Dagster module is
imported)."""

# Asset keys (docs/architecture.md): the data flow, in order.
ENCOUNTERS = "ehr_encounters"
CLAIMS = "claims"
REJECTIONS = "claim_rejections"
IMPORT = "claims_import"

# Directory of a dry run's payloads under CLAIMS_DATA_DIR.
DRY_RUN_DIR = f"{IMPORT}_dry_run"

# Dagster run tags: a run over a range of partitions, one partition.
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_NAME_TAG = "dagster/partition"
# Set on a failed run that the run-retry daemon will retry.
WILL_RETRY_TAG = "dagster/will_retry"

# Asset checks, by the asset they check.
RATE_CHECK = "rejection_rate_within_limit"  # claims (blocking)
UNIQUE_CHECK = "claim_keys_unique"  # claims (blocking)
CONSERVED_CHECK = "encounters_conserved"  # claims and claims_import
ACKED_CHECK = "valid_claims_acknowledged"  # claims_import
PROVIDER_CHECK = "no_provider_changes_held"  # claims_import
WITHDRAWN_CHECK = "no_withdrawn_claims"  # claims_import
FILING_CHECK = "filing_deadlines_ahead"  # claims_import

# Jobs and schedules.
SYNC_JOB = "claims_sync"
NIGHTLY_SCHEDULE = "nightly_claims_sync"
