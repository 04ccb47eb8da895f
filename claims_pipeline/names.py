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
