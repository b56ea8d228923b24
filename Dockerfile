# The qmlops image: the CLI, with `qmlops operator` as the default command (deploy/deployment.yaml).
#   docker build -t ghcr.io/qmlops/qmlops:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# git and ssh: the operator clones and pushes the GitOps repository (SSH key or token from a Secret).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 qmlops \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin qmlops
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/.cache MPLCONFIGDIR=/tmp/matplotlib
USER 65532:65532
EXPOSE 8080 8081 9443
ENTRYPOINT ["/usr/bin/tini", "--", "qmlops"]
CMD ["operator", "--all-namespaces"]
