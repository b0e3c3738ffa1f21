# runbox app image: one image for every role; RUNBOX_ROLES picks gateway and/or executor.
#
#   docker build -t runbox/app:dev .
#   gateway:  docker run -e RUNBOX_ROLES=gateway -e RUNBOX_AMQP_URL=... -p 8080:8080 runbox/app:dev
#   executor: docker run -e RUNBOX_ROLES=executor -e RUNBOX_AMQP_URL=... \
#               -v /var/run/docker.sock:/var/run/docker.sock \
#               --group-add "$(stat -c %g /var/run/docker.sock)" runbox/app:dev
#
# The executor drives the host's Docker engine through the socket, so it must be able to open
# it: either as the image's user with the socket's group added (--group-add, preferred) or as
# root (--user 0). Access to the socket is root-equivalent on the host either way, which is why
# only executors get it. It never needs, and must never get, --privileged: sandboxes are
# sibling containers made by the engine, not nested ones.
FROM debian:bookworm-slim

# Debian's own Python 3.11 (matches requires-python) in a venv, so pip never touches the
# system site-packages.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/runbox \
 && groupadd --gid 10000 runbox \
 && useradd --uid 10000 --gid 10000 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin runbox

ENV PATH=/opt/runbox/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, from pyproject.toml alone with a stub package, so editing app/ does not
# re-download them; only [project].dependencies are installed (no dev/infra/load extras).
# EXTRA_CA_CERTS (PEM, optional): CA certificates to trust for this step only, for hosts whose
# egress goes through a TLS-intercepting proxy. Empty in a normal deployment; the certificates
# are public but do show in `docker history`, and no file of them is left in the image.
ARG EXTRA_CA_CERTS=""
WORKDIR /src
COPY pyproject.toml ./
RUN set -e; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        cat "$(python -c 'import pip._vendor.certifi as c; print(c.where())')" > /tmp/ca.pem; \
        printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi; \
    mkdir app && touch app/__init__.py; \
    pip install "setuptools>=68"; \
    pip install --no-build-isolation .; \
    pip uninstall -y runbox; \
    rm -rf app build ./*.egg-info /tmp/ca.pem

# The package itself: no network needed (build backend already in the venv, deps present).
COPY app ./app
RUN pip install --no-deps --no-build-isolation . \
 && rm -rf /src

# In a container the app must listen on every interface (its default, 127.0.0.1, suits a bare
# host). Without RUNBOX_ROLES the image is a gateway: the executor role needs the Docker socket,
# so it has to be asked for explicitly.
ENV RUNBOX_HOST=0.0.0.0 \
    RUNBOX_PORT=8080 \
    RUNBOX_PROBE_PORT=8081 \
    RUNBOX_ROLES=gateway
WORKDIR /
USER runbox:runbox
EXPOSE 8080

# Liveness only (/healthz on the probe port, answered outside the event loop, so a busy
# gateway is not restarted, and failing when the loop stalls): readiness depends on the
# broker and on executors elsewhere.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('RUNBOX_PROBE_PORT') or os.environ.get('RUNBOX_PORT', '8080')), timeout=2)"]

# SIGTERM drains: running jobs finish (up to 30 s) and the executor removes its sandboxes.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "app"]
CMD ["serve"]
LABEL org.opencontainers.image.title="runbox" \
      org.opencontainers.image.description="runbox gateway and executor"
