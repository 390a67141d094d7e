#!/usr/bin/env bash
# Installs what `make run` and `make test` need on a fresh Debian machine:
# git and curl, busybox-static, the PostgreSQL server binaries (the tests start
# their own throwaway servers from /usr/lib/postgresql/*/bin as `nobody`, see
# test-support/src/postgres.rs; the package's own cluster is never used)
# and the Docker test images (built FROM scratch, since no registry
# is reachable). Idempotent and quiet when all is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

missing=()
command -v git >/dev/null || missing+=(git)
command -v curl >/dev/null || missing+=(curl)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
installed busybox-static || missing+=(busybox-static)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql-15)
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get install -y "${missing[@]}" >/dev/null 2>&1 || {
        $sudo_cmd apt-get update >/dev/null
        $sudo_cmd apt-get install -y "${missing[@]}" >/dev/null
    }
fi

if docker info >/dev/null 2>&1; then
    "$root/scripts/build-test-images.sh"
else
    echo "install-deps: the Docker engine is not reachable; Docker executor tests will fail" >&2
fi
