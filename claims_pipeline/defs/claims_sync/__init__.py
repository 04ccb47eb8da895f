"""The claims domain: extract, validate and deliver claims per date of service."""
