#!/bin/bash
# Builds every image docker-compose.yaml uses without any container registry: a Debian bookworm
# base from `debootstrap` (`docker import` -> hfc-base:bookworm), the Python requirements from a
# wheelhouse built on this host (`pip wheel`, the host's pip configuration and CA trust; the
# builds themselves never reach PyPI), Debian packages through apt inside `docker build
# --network host` (the engine may run without a bridge NAT).
#
#   DOCKER_HOST=unix:///path/docker.sock docker/build-local-images.sh
#
# Images (compose: -f docker-compose.yaml -f docker/local/docker-compose.local.yaml):
#   hfc-base:bookworm            debootstrap --variant=minbase bookworm
#   hfc-airflow-base:3.3.2       stand-in for apache/airflow:3.3.2-python3.11 (docker/local/airflow-base)
#   hfc-airflow:latest           the project's Dockerfile on top of it (FROM line replaced in a copy)
#   hfc-postgres:local           stand-in for postgres:16 (Debian's PostgreSQL 15)
#   hfc-redis:local              stand-in for redis:7.2-bookworm (Debian's redis 7.0)
#   hfc-statsd-exporter:local    stand-in for prom/statsd-exporter (Debian's package)
#   hfc-site:latest              docker/site on hfc-base:bookworm
# Needs root (debootstrap), Debian's debootstrap, a host Python 3.11 with pip (PYTHON), docker.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${HFC_LOCAL_BUILD_DIR:-/tmp/hfc-local-images}
py=${PYTHON:-python3}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export DOCKER_BUILDKIT=0  # the classic builder: --network host for RUN, no buildx needed
mkdir -p "$work"
step() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
build() { docker build -q --network host "$@" >/dev/null; }

if ! docker image inspect hfc-base:bookworm >/dev/null 2>&1; then
  if [ ! -x "$work/rootfs/bin/bash" ]; then
    step "debootstrap bookworm -> $work/rootfs"
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log"
  fi
  step "docker import -> hfc-base:bookworm"
  tar -C "$work/rootfs" -c . | docker import - hfc-base:bookworm >/dev/null
fi

# The wheels are built for the image's Python (Debian bookworm: 3.11) on this host.
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"{sys.executable} is {sys.version}, need 3.11"'
step "pip wheel (requirements.txt -c constraints.txt) -> $work/wheels"
"$py" -m pip wheel -q -w "$work/wheels" -r "$repo/requirements.txt" -c "$repo/constraints.txt" 2>&1 | grep -v '^WARNING: Location' >&2 || true
# setuptools: the project's build backend; async-timeout: redis' dependency below Python 3.11.3
# (Debian's is 3.11.2, this host's may be newer and not have fetched it).
"$py" -m pip download -q --no-deps -d "$work/wheels" 'setuptools>=68' wheel 'async-timeout>=4.0.3' 2>&1 | grep -v '^WARNING: Location' >&2 || true

ctx="$work/ctx-airflow-base"
rm -rf "$ctx" && cp -r "$repo/docker/local/airflow-base" "$ctx" && cp -r "$work/wheels" "$ctx/wheels"
cp "$repo/requirements.txt" "$repo/constraints.txt" "$ctx/"
step "build hfc-airflow-base:3.3.2"
build -t hfc-airflow-base:3.3.2 "$ctx"

for name in postgres redis statsd-exporter; do
  step "build hfc-$name:local"
  build -t "hfc-$name:local" "$repo/docker/local/$name"
done
step "build hfc-site:latest"
build --build-arg BASE=hfc-base:bookworm -t hfc-site:latest "$repo/docker/site"

# The project's Dockerfile, unchanged but for its base, in a context of just what it copies.
ctx="$work/ctx-airflow"
rm -rf "$ctx" && mkdir -p "$ctx"
cp -r "$repo/requirements.txt" "$repo/constraints.txt" "$repo/pyproject.toml" "$repo/hfc_tasks" "$repo/config" "$ctx/"
find "$ctx/hfc_tasks" -name __pycache__ -prune -exec rm -rf {} +
sed 's|^FROM apache/airflow:3.3.2-python3.11$|FROM hfc-airflow-base:3.3.2|' "$repo/Dockerfile" > "$ctx/Dockerfile"
grep -q '^FROM hfc-airflow-base:3.3.2$' "$ctx/Dockerfile" || { echo "Dockerfile: no FROM apache/airflow:3.3.2-python3.11 line to replace" >&2; exit 1; }
step "build hfc-airflow:latest (the project's Dockerfile)"
build -t hfc-airflow:latest "$ctx"
step "done: run docker-compose.yaml with docker/local/docker-compose.local.yaml as a second -f file"
