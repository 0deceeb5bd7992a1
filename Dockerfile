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

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# The agent's user; match it to the owner of the host dirs you mount (see docs/operations.md).
ARG CONVEYOR_UID=10001
ARG CONVEYOR_GID=10001

# git: the source stage clones task repositories. tini: PID 1 that reaps orphaned grandchildren
# of tasks and forwards SIGTERM to the agent alone (the agent stops its tasks itself).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

# HOME is the data dir, so caches tasks keep in ~ (Hugging Face, torch hub) live on the volume.
RUN groupadd --system --gid "${CONVEYOR_GID}" conveyor \
    && useradd --system --uid "${CONVEYOR_UID}" --gid conveyor \
        --home-dir /var/lib/conveyor --shell /usr/sbin/nologin conveyor \
    && install -d -o conveyor -g conveyor -m 0750 /var/lib/conveyor /var/cache/conveyor

# The agent in its own venv (the same path as the systemd units use), apart from the base
# interpreter that task venvs are made from. Only what the package needs is in the context
# (.dockerignore).
COPY pyproject.toml README.md /src/
COPY agent /src/agent
RUN python -m venv /opt/conveyor \
    && /opt/conveyor/bin/pip install --no-cache-dir /src \
    && rm -rf /src

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
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/conveyor/bin/conveyor"]
CMD ["daemon"]
