# One image for every role: `docker run IMAGE api|worker|sandbox|demo|setup|status`.
FROM python:3.11-slim AS build
WORKDIR /src
# The versions of requirements.lock (the tested ones), without its hashes: as constraints they pin whatever
# the runtime needs, and leave the lock's dev tools out of the image (checked by hand: the constraints
# install cleanly into a fresh venv; no Docker engine here to build the image).
COPY pyproject.toml README.md requirements.lock ./
RUN sed -e '/--hash=/d' -e 's/ *\\$//' requirements.lock > constraints.txt \
 && python -m venv /opt/bcsync
COPY service ./service
COPY consumers ./consumers
COPY schemas ./schemas
COPY sandbox ./sandbox
# pip compiles every module to .pyc here, so the final image runs on a read-only root filesystem.
RUN /opt/bcsync/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim
# A numeric user and group (10001) so that Kubernetes' runAsNonRoot can verify the image without a
# runAsUser of its own. /app/ca exists in the image, owned by that user, so that a named volume mounted
# there (compose.yaml shares the sandbox's CA through one) starts writable by it.
RUN groupadd --system --gid 10001 bcsync \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home bcsync \
 && mkdir -p /app/ca && chown -R 10001:10001 /app
COPY --from=build /opt/bcsync /opt/bcsync
ENV PATH=/opt/bcsync/bin:$PATH PYTHONUNBUFFERED=1 BCSYNC_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9464
# The api's liveness. A worker serves its /healthz on BCSYNC_WORKER_METRICS_PORT and the sandbox none:
# compose.yaml gives both their own checks, and Kubernetes ignores HEALTHCHECK (deploy/k8s has probes).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BCSYNC_PORT', '8000') + '/healthz', timeout=2)"]
ENTRYPOINT ["bcsync"]
CMD ["api"]
