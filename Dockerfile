# The managed-secrets operator image: `docker build -t managed-secrets:VERSION .` (pyproject.toml's version)
# Stage 1 builds the wheel and installs it, with its runtime dependencies only (all four backends), into a
# virtual environment; the final stage is a clean slim Python with that environment, run as a fixed
# non-root UID (65532, the chart's runAsUser) on a read-only root filesystem.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/managed-secrets \
    && wheel="$(find /wheels -name 'managed_secrets-*.whl')" \
    && /opt/managed-secrets/bin/pip install "${wheel}[all]" \
    && /opt/managed-secrets/bin/pip uninstall --yes pip setuptools \
    && /opt/managed-secrets/bin/managed-secrets --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="managed-secrets" \
      org.opencontainers.image.description="Kubernetes operator: Secrets synced from Vault, AWS, GCP and Azure" \
      org.opencontainers.image.licenses="Apache-2.0"
# No pip in the final image: nothing is installed at run time.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
COPY --from=build /opt/managed-secrets /opt/managed-secrets
ENV PATH="/opt/managed-secrets/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["managed-secrets", "run"]
CMD ["--health-port=8080", "--metrics-port=9090"]
