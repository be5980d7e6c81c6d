# Relay: build the wheel (Cython compiled) in one stage, run it in a slim image.
FROM python:3.11-slim-bookworm AS build
# libsrt-openssl-dev: headers and library for the cffi binding to libsrt (relay/srt/).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential make libsrt-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md Makefile ./
COPY native ./native
COPY relay ./relay
# The player's hls.js: the same pinned, checksummed npm tarball as `make run` uses.
RUN make relay/hls/static/hls.min.js PYTHON=python3 \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# libsrt for SRT ingest, ffmpeg-free: Relay repackages, it does not transcode.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsrt1.5-openssl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --uid 10001 relay \
 && mkdir -m 700 -p /data && chown relay:relay /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER relay
VOLUME ["/data"]
ENV RELAY_DATA_DIR=/data
# RTMP, RTMPS, SRT (UDP), HTTP (API, HLS, player), Prometheus metrics.
EXPOSE 5222 443 6001/udp 8080 9464
ENTRYPOINT ["relay"]
CMD ["serve"]
