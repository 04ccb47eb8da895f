"""The project's exceptions. Messages name the setting, claim key or source table at fault,
never patient data or the API key."""


class ClaimsPipelineError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(ClaimsPipelineError):
    """A setting is missing or wrong; the message names the setting."""


class SourceError(ClaimsPipelineError):
    """The EHR source cannot be read as configured (missing table/column, bad query file)."""


class DeliveryError(ClaimsPipelineError):
    """Claims could not be delivered to the import API."""


class AuthenticationError(DeliveryError, ConfigurationError):
    """The API refused the credentials (401/403): names CLAIMS_API_KEY or CLAIMS_TENANT_ID."""


class StorageError(ClaimsPipelineError):
    """Stored data (CLAIMS_DATA_DIR) could not be written or read: disk full, permissions."""
