# One image for every mirrorplane role in docker-compose.yml (and Kubernetes): the control plane
# (`serve`), the Envoy bootstrap init step (`bootstrap`) and the echo backends (`echo`).
#   docker build -t mirrorplane .
#   docker run --rm -v "$PWD/manifests/local:/config:ro" -p 18000:18000 -p 19001:19001 mirrorplane
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
COPY envoy ./envoy
# A regular (not editable) install: the bootstrap template ships inside the package.
# /bootstrap belongs to the unprivileged user, so a fresh volume mounted there is writable
# by the init step that renders Envoy's bootstrap into it.
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home mirrorplane \
    && mkdir /bootstrap \
    && chown mirrorplane /bootstrap

WORKDIR /
USER mirrorplane
# 18000: ADS + admin API + reflection + health (gRPC); 19001: /metrics /healthz /readyz.
EXPOSE 18000 19001
ENTRYPOINT ["mirrorplane"]
CMD ["serve", "/config"]
