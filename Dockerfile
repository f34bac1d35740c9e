# One image for the lab: db-service, cache-service and the chaos CLI (herds, outages).
#
#   docker build -t herdlab:local .
#       on the official python:3.11-slim base, dependencies from the package index;
#   docker build --build-arg BASE=IMAGE -t herdlab:local .
#       on any Debian-like base whose python3 (3.11) has its venv module (Debian: python3-venv).
#
# With a wheelhouse/ folder at the root of the build context (the dependencies as wheels, with
# setuptools>=69 and wheel to build the project: `pip wheel --wheel-dir wheelhouse .
# 'setuptools>=69' wheel`), the build installs from it alone and needs no network at all.
#
# Containers stop cleanly on SIGTERM: the servers drain for HERDLAB_GRACE, then exit 0. Run them
# under an init (`init: true` in compose, `docker run --init`) so PID 1 forwards signals and
# reaps. The healthcheck asks grpc.health.v1 at HERDLAB_HEALTH_TARGET (host:port), which each
# server's container sets; containers without a gRPC server disable it.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/herdlab
COPY . /src
RUN if [ -d /src/wheelhouse ]; then \
        /opt/herdlab/bin/pip install --no-index --find-links /src/wheelhouse /src; \
    else \
        /opt/herdlab/bin/pip install /src; \
    fi

FROM ${BASE}
RUN groupadd --gid 10001 herdlab \
    && useradd --uid 10001 --gid herdlab --create-home --home-dir /home/herdlab \
        --shell /usr/sbin/nologin herdlab
COPY --from=build /opt/herdlab /opt/herdlab
ENV PATH=/opt/herdlab/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HERDLAB_GRACE=2s
USER herdlab:herdlab
WORKDIR /home/herdlab
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
    CMD ["python", "-m", "herdlab.healthcheck", "--timeout", "2s"]
CMD ["chaos", "--help"]
