# One image for every role: `docker run IMAGE api|worker|sandbox|demo`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY consumers ./consumers
COPY schemas ./schemas
COPY sandbox ./sandbox
RUN python -m venv /opt/bcsync && /opt/bcsync/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app bcsync && mkdir -p /app && chown bcsync /app
COPY --from=build /opt/bcsync /opt/bcsync
ENV PATH=/opt/bcsync/bin:$PATH PYTHONUNBUFFERED=1 BCSYNC_HOST=0.0.0.0
WORKDIR /app
USER bcsync
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"BCSYNC_PORT\",\"8000\")}/healthz', timeout=2)" || exit 1
ENTRYPOINT ["bcsync"]
CMD ["api"]
