# The Conveyor agent as a container image. How to run it: docs/operations.md ("As a container").
#
#   docker build -t conveyor-agent .
#   docker run -d --name conveyor-agent --restart unless-stopped \
#     --stop-timeout 3720 \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/conveyor:/var/lib/conveyor \
#     -v /var/cache/conveyor:/var/cache/conveyor \
#     --env-file /etc/conveyor/agent.env \
#     conveyor-agent daemon --queue default
#
# Task containers are started as SIBLINGS through the mounted docker socket: the docker engine
# resolves bind-mount sources on the HOST. So the data and cache dirs must be mounted at the same
# path on both sides (-v /var/lib/conveyor:/var/lib/conveyor), never as anonymous volumes.
#
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv module (python3-venv on
# Debian); CI builds it on a debootstrapped Debian bookworm (scripts/base-image, no registry).
# When the base sets SSL_CERT_FILE (an intercepting proxy's CA), pip uses that bundle too.

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# The agent's user; match it to the owner of the host dirs you mount (see docs/operations.md).
ARG CONVEYOR_UID=10001
ARG CONVEYOR_GID=10001

# git: the source stage clones task repositories (ca-certificates: over HTTPS; already in most
# bases, then left as it is, with any CA the base added). tini: PID 1 that reaps orphaned
# grandchildren of tasks and forwards SIGTERM to the agent alone (the agent stops its tasks).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        git ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

# HOME is the data dir, so caches tasks keep in ~ (Hugging Face, torch hub) live on the volume.
RUN groupadd --system --gid "${CONVEYOR_GID}" conveyor \
    && useradd --system --uid "${CONVEYOR_UID}" --gid conveyor \
        --home-dir /var/lib/conveyor --shell /usr/sbin/nologin conveyor \
    && install -d -o conveyor -g conveyor -m 0750 /var/lib/conveyor /var/cache/conveyor

# The agent in its own venv (the same path as the systemd units use), apart from the base
# interpreter that task venvs are made from. Two layers: the dependencies (and the build
# backend) as pyproject.toml lists them, rebuilt only when it changes; then the package itself,
# built without isolation, so a change of the agent's code alone needs no download.
COPY pyproject.toml /src/
RUN python3 -m venv /opt/conveyor \
    && python3 -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb")); \
print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' \
        > /src/requirements.txt \
    && /opt/conveyor/bin/pip install --no-cache-dir --disable-pip-version-check \
        ${SSL_CERT_FILE:+--cert "$SSL_CERT_FILE"} -r /src/requirements.txt
# Only what the package needs is in the context (.dockerignore).
COPY README.md /src/
COPY agent /src/agent
RUN /opt/conveyor/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-build-isolation /src \
    && /opt/conveyor/bin/conveyor --help >/dev/null \
    && rm -rf /src

# The entry point. Docker mode from this container: task containers are siblings, and the engine
# resolves their bind-mount sources on the HOST, where the agent's uv (/opt/conveyor/bin/uv, which
# docker mode mounts into every task container) does not exist. So it is copied to the cache dir
# (mounted at the same path on both sides) and docker_uv points there, unless CONVEYOR_DOCKER_UV
# names a uv already. Then the agent, as tini's child.
RUN printf '%s\n' \
    '#!/bin/sh' \
    'set -eu' \
    'cache="${CONVEYOR_CACHE_DIR:-}"' \
    'if [ -z "${CONVEYOR_DOCKER_UV:-}" ] && [ -n "$cache" ] && [ -w "$cache" ]; then' \
    '  if ! cmp -s /opt/conveyor/bin/uv "$cache/bin/uv"; then' \
    '    mkdir -p "$cache/bin"' \
    '    cp /opt/conveyor/bin/uv "$cache/bin/uv.$$"' \
    '    mv -f "$cache/bin/uv.$$" "$cache/bin/uv"' \
    '  fi' \
    '  export CONVEYOR_DOCKER_UV="$cache/bin/uv"' \
    'fi' \
    'exec /opt/conveyor/bin/conveyor "$@"' \
    > /usr/local/bin/conveyor-entrypoint \
    && chmod 0755 /usr/local/bin/conveyor-entrypoint

ENV PATH=/opt/conveyor/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    CONVEYOR_DATA_DIR=/var/lib/conveyor \
    CONVEYOR_CACHE_DIR=/var/cache/conveyor \
    CONVEYOR_LOG_FORMAT=json
VOLUME ["/var/lib/conveyor", "/var/cache/conveyor"]

USER conveyor
WORKDIR /var/lib/conveyor

# First SIGTERM drains (running tasks may finish for up to CONVEYOR_DRAIN_TIMEOUT, default
# 3600 s). `docker stop` waits only 10 s before SIGKILL unless told otherwise: run with
# --stop-timeout (or `docker stop -t`) above drain_timeout + abort_grace + a minute.
STOPSIGNAL SIGTERM
# No HEALTHCHECK: the agent has no cheap liveness probe yet (a CLI call costs a Python start
# and a server round trip every interval); --restart covers a crashed agent.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/conveyor-entrypoint"]
CMD ["daemon"]
