# One gateway node (docs/operations.md). Debian base, the gateway installed with its runtime dependencies (PyAV's
# wheel bundles FFmpeg: no system ffmpeg is needed), run as a non-root user.
#   docker build -t media-gateway .
#   docker run -p 8080:8080 -p 1935:1935 -v /mnt/media:/media media-gateway
# deploy/compose.yaml runs two nodes behind nginx on one shared volume.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY packagers packagers
COPY gateway gateway
COPY delivery_profiles delivery_profiles
COPY rtmp rtmp
COPY fixtures fixtures
RUN pip install . && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/gateway --create-home gateway \
    && mkdir -p /media /etc/gateway && chown gateway:gateway /media

USER gateway
WORKDIR /var/lib/gateway
VOLUME ["/media"]
EXPOSE 8080 1935
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=2)"]
# one worker per core: set --workers (or `workers` in a --config file mounted at /etc/gateway/gateway.toml)
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080", "--rtmp-port", "1935", "--store", "/media"]
