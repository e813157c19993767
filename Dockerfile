# dynamem operator image: `docker build -t dynamem:dev .` from the repository root.
#
# Stage 1 builds one wheel for dynamem and one for each dependency; stage 2 installs them into a venv
# without pip, on the same pinned base, and runs as a numeric non-root user. Nothing is written outside /tmp
# at run time, so the pod runs with readOnlyRootFilesystem and an emptyDir at /tmp (see manifests/).
# The base is pinned by tag; tests/unit/test_packaging.py checks that both stages use the same pinned tag.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# README* rather than README.md: pyproject names it, and the glob keeps COPY from failing while it is absent.
COPY pyproject.toml README* ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/dynamem/bin:$PATH \
    HOME=/tmp
# The wheels are bind-mounted from stage 1 (BuildKit, the default builder), so no layer keeps them. The venv
# has no pip; the base image's pip installs into it. Installing compiles the .pyc files now, none at run time.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/dynamem \
    && pip --python /opt/dynamem/bin/python install --no-cache-dir --no-index --find-links /wheels \
        /wheels/dynamem-*.whl \
    && /opt/dynamem/bin/dynamem --version
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["dynamem"]
CMD ["run", "-A"]
