#!/usr/bin/env bash
# Builds the images the Docker executor tests run, with no registry: both are
# FROM scratch and hold only files taken from this machine.
#
#   osprey-test/busybox:latest     Debian's busybox-static, its applets linked into /bin
#   osprey-test/docker-cli:latest  the busybox image plus a docker CLI at /usr/local/bin/docker
#                                  (built only when a working client is found; see below)
#
# Idempotent: an image that is already there is kept (OSPREY_REBUILD_TEST_IMAGES=1 rebuilds).
# Installs busybox-static with apt-get when it is missing. Needs a running Docker engine.
set -euo pipefail

BUSYBOX_IMAGE=osprey-test/busybox:latest
DOCKER_CLI_IMAGE=osprey-test/docker-cli:latest

log() { printf 'build-test-images: %s\n' "$*" >&2; }

if ! docker info >/dev/null 2>&1; then
    log "the Docker engine is not reachable (docker info failed)"
    exit 1
fi

have_image() {
    [ "${OSPREY_REBUILD_TEST_IMAGES:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1
}

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

# --- busybox -------------------------------------------------------------
if have_image "$BUSYBOX_IMAGE"; then
    log "$BUSYBOX_IMAGE already present"
else
    busybox=/bin/busybox
    # Debian's busybox-static installs /bin/busybox; the dynamic `busybox` package
    # installs the same path, so check the package, not the file.
    if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
        log "installing busybox-static"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y busybox-static >/dev/null 2>&1 || {
            apt-get update >/dev/null
            apt-get install -y busybox-static >/dev/null
        }
    fi
    mkdir -p "$workdir/busybox/bin"
    cp "$busybox" "$workdir/busybox/bin/busybox"
    cat >"$workdir/busybox/Dockerfile" <<'EOF'
FROM scratch
COPY bin/busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/root", "/etc", "/usr/local/bin"]
RUN ["/bin/busybox", "sh", "-c", "echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group && chmod 1777 /tmp"]
ENV PATH=/usr/local/bin:/bin
CMD ["sh"]
EOF
    log "building $BUSYBOX_IMAGE"
    DOCKER_BUILDKIT=0 docker build -q -t "$BUSYBOX_IMAGE" "$workdir/busybox" >/dev/null
fi

# --- docker CLI ------------------------------------------------------------
# Route: a static docker client runs as is in the scratch image (the rust-docker
# machine ships one at /usr/local/bin/docker). Otherwise Debian's dynamically
# linked client (docker.io, /usr/bin/docker) goes in with the shared libraries
# `ldd` lists, at the same paths. The image is kept only if `docker --version`
# runs inside it.
if have_image "$DOCKER_CLI_IMAGE"; then
    log "$DOCKER_CLI_IMAGE already present"
else
    ctx="$workdir/docker-cli"
    mkdir -p "$ctx/root/usr/local/bin"
    client=""
    for candidate in /usr/local/bin/docker /usr/bin/docker $(command -v docker || true); do
        [ -x "$candidate" ] || continue
        client=$candidate
        cp "$candidate" "$ctx/root/usr/local/bin/docker"
        # `ldd` prints "not a dynamic executable" (exit 1) for a static binary.
        if ldd "$candidate" >/dev/null 2>&1; then
            ldd "$candidate" | grep -o '/[^ ]*' | while read -r lib; do
                mkdir -p "$ctx/root$(dirname "$lib")"
                cp -L "$lib" "$ctx/root$lib"
            done
        fi
        break
    done
    if [ -z "$client" ]; then
        log "no docker client on this machine: $DOCKER_CLI_IMAGE not built"
        exit 0
    fi
    cat >"$ctx/Dockerfile" <<EOF
FROM $BUSYBOX_IMAGE
COPY root/ /
EOF
    log "building $DOCKER_CLI_IMAGE with $client"
    DOCKER_BUILDKIT=0 docker build -q -t "$DOCKER_CLI_IMAGE" "$ctx" >/dev/null
    if ! docker run --rm "$DOCKER_CLI_IMAGE" docker --version >/dev/null 2>&1; then
        log "the docker client from $client does not run in the image: $DOCKER_CLI_IMAGE removed"
        docker image rm -f "$DOCKER_CLI_IMAGE" >/dev/null
        exit 0
    fi
fi

log "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}}' 'osprey-test/*' | tr '\n' ' ')"
