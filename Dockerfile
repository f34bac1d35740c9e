# One image for the lab: db-service, cache-service and the chaos CLI (herds, outages).
#
#   docker build -t herdlab:local .
#       on the official python:3.11-slim base, dependencies from the package index;
#   docker build --build-arg BASE=IMAGE -t herdlab:local .
#       on any Debian-like base whose python3 (3.11) has its venv module (Debian: python3-venv);
#   docker build --build-arg EXTRAS=docker -t herdlab-chaos:local .
#       with extras of the project (here the Docker SDK, for the chaos container's
#       `--backend docker`). The services' image has none: no plotting, no Docker SDK.
#
# Versions come from constraints.txt, as for the Makefile and CI. With a wheelhouse/ folder at the
# root of the build context (the dependencies as wheels, with setuptools>=77 and wheel to build
# the project: `pip wheel -c constraints.txt --wheel-dir wheelhouse '.[docker]' 'setuptools>=77'
# wheel`), the build installs from it alone and needs no network at all.
#
# Containers stop cleanly on SIGTERM: the servers drain for HERDLAB_GRACE, then exit 0. Run them
# under an init (`init: true` in compose, `docker run --init`) so PID 1 forwards signals and
# reaps. The healthcheck asks grpc.health.v1 at HERDLAB_HEALTH_TARGET (host:port), which each
# server's container sets; containers without a gRPC server disable it. The check is a small
# standard-library client (herdlab/healthcheck.py), cheap enough to run every 2 s.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/herdlab
COPY . /src
RUN spec=/src${EXTRAS:+[$EXTRAS]}; \
    if [ -d /src/wheelhouse ]; then \
        /opt/herdlab/bin/pip install --no-index --find-links /src/wheelhouse \
            -c /src/constraints.txt "$spec"; \
    else \
        /opt/herdlab/bin/pip install -c /src/constraints.txt "$spec"; \
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
