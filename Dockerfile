# The tswarm service: `tswarm serve` on port 8080, journal in /data (a volume). See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY firmware ./firmware
RUN pip install . \
    && useradd --system --home-dir /data --shell /usr/sbin/nologin tswarm \
    && mkdir -p /data && chown tswarm /data

USER tswarm
ENV TSWARM_DATA_DIR=/data \
    TSWARM_HOST=0.0.0.0 \
    TSWARM_PORT=8080
VOLUME ["/data"]
EXPOSE 8080
CMD ["tswarm", "serve"]
