# The Licet image used by docker-compose.prod.yml (`licet migrate`, `licet serve`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LICET_DATA_DIR=/var/lib/licet

WORKDIR /app
# Only what the distribution needs: never the build context's .venv, data directories or keys.
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY kernel ./kernel
COPY server ./server
COPY licet ./licet
COPY dashboard ./dashboard
COPY sdk ./sdk
COPY mcp_server ./mcp_server

# Installed in place (-e): server/migrations.py reads alembic.ini and alembic/ next to the packages,
# and a plain wheel install leaves both out, so `licet migrate` would find no migrations.
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /var/lib/licet --no-create-home licet \
    && mkdir -p /var/lib/licet && chown licet /var/lib/licet

USER 10001
EXPOSE 8000
CMD ["licet", "serve", "--host", "0.0.0.0", "--port", "8000"]
