"""The executor, picked by CLAIMS_EXECUTOR so that the same code runs its steps in processes,
in Kubernetes pods or on Celery workers (docs/deploying.md)."""

from __future__ import annotations

import dagster as dg

from claims_pipeline import settings
from claims_pipeline.errors import ConfigurationError

EXECUTORS = ("multiprocess", "in_process", "k8s", "celery")


def executor_from_environment() -> dg.ExecutorDefinition:
    """The executor CLAIMS_EXECUTOR names; k8s and celery need the extra of that name."""
    name = settings.require(settings.CLAIMS_EXECUTOR)
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "in_process":
        return dg.in_process_executor
    if name in ("k8s", "celery"):
        try:
            if name == "k8s":
                from dagster_k8s import k8s_job_executor

                executor: dg.ExecutorDefinition = k8s_job_executor
                return executor
            from dagster_celery import celery_executor

            executor = celery_executor
            return executor
        except ImportError:
            raise ConfigurationError(
                f"CLAIMS_EXECUTOR={name} needs its integration: pip install "
                f"'claims_pipeline[{name}]' (dagster-{name} 0.29, paired with dagster 1.13)."
            ) from None
    raise ConfigurationError(
        f"CLAIMS_EXECUTOR must be one of {', '.join(EXECUTORS)}; got {name!r}."
    )
