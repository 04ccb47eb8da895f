# The code-location image of claims_pipeline, for Kubernetes (Dagster's Helm chart, user-code
# deployment; the K8sRunLauncher starts runs from it) and Dagster+ Hybrid agents
# (docs/deploying.md, "The code-location image"). It holds no secret and no setting: every
# EHR_*/CLAIMS_* variable, CLAIMS_API_KEY and database passwords come from the environment the
# deployment gives the container (Kubernetes Secrets), never from this file.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/dagster/app

# Only what the package needs (.dockerignore keeps tests, data and virtualenvs out). The extras
# bring the executors that run steps in pods (k8s) or on Celery workers (celery). Installed in
# place (--editable): the definitions are found through pyproject.toml beside the package
# (dg's load_from_defs_folder), which a copy in site-packages would not have.
COPY pyproject.toml README.md ./
COPY claims_pipeline ./claims_pipeline
RUN pip install --no-cache-dir --editable './[k8s,celery]' \
    && useradd --create-home --uid 10001 --user-group dagster \
    && mkdir -p "$DAGSTER_HOME" \
    && chown dagster:dagster "$DAGSTER_HOME"

# Not root: the code server and the runs need no privilege.
USER 10001:10001

# The gRPC code server the webserver and daemon load definitions from; the Helm chart and
# Dagster+ may replace this command with their own (same module).
EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "claims_pipeline.definitions", "--location-name", "claims_pipeline"]
