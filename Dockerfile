# The Licet image used by docker-compose.prod.yml (`licet migrate`, `licet serve`). Two stages: the
# first builds the dashboard's frontend and the wheels from this checkout and exports the lock with
# hashes; the second installs exactly that, and holds no source tree, Node or build tools.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy
RUN pip install "uv==0.13.10"
WORKDIR /src
COPY . .
RUN uv sync --frozen --no-dev --group build \
    && .venv/bin/python -m licet.dashboard.build \
    && uv build --all-packages --wheel -o /wheels \
    && uv export --frozen --no-dev --no-emit-workspace --format requirements-txt -o /wheels/requirements.txt

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LICET_DATA_DIR=/var/lib/licet
COPY --from=build /wheels /wheels
# Third-party packages exactly as uv.lock pins them (hashes checked), then Licet's own wheels.
RUN pip install --no-deps --require-hashes -r /wheels/requirements.txt \
    && pip install --no-deps /wheels/*.whl \
    && rm -r /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/licet --no-create-home licet \
    && mkdir -p /var/lib/licet && chown licet /var/lib/licet

USER 10001
WORKDIR /var/lib/licet
EXPOSE 8000
CMD ["licet", "serve", "--host", "0.0.0.0", "--port", "8000"]
