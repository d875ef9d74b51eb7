# hls-sidecar: the packager that runs beside each media-server node.
#   docker build -t hls-sidecar .
#   docker run --rm -p 8080:8080 -v sidecar-data:/var/lib/sidecar hls-sidecar
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg: command-line tools for operators and probes (PyAV wheels bundle their own libraries).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . /src
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/sidecar --shell /usr/sbin/nologin sidecar \
    && mkdir -p /var/lib/sidecar \
    && chown sidecar:sidecar /var/lib/sidecar

USER sidecar
WORKDIR /var/lib/sidecar
VOLUME ["/var/lib/sidecar"]
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"

ENTRYPOINT ["sidecar"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/sidecar"]
