#!/usr/bin/env bash
# Installs what `make run` and `make test` need on a fresh Debian machine:
# git and curl, busybox-static, the PostgreSQL server binaries (the tests start
# their own throwaway servers from /usr/lib/postgresql/*/bin as `nobody`, see
# test-support/src/postgres.rs; the package's own cluster is never used),
# python3-venv, the SMTP test server (aiosmtpd, see test-support/src/smtp.rs),
# Chromium and its WebDriver (the web UI's browser tests, see
# test-support/src/browser.rs),
# the S3 test server (moto, from PyPI, in a venv) and the
# Docker test images (built FROM scratch, since no registry is reachable).
# Idempotent and quiet when all is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

missing=()
command -v git >/dev/null || missing+=(git)
command -v curl >/dev/null || missing+=(curl)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
installed busybox-static || missing+=(busybox-static)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql-15)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# Debian's interpreter, not a python3 earlier on PATH (pyenv): the package is its.
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
installed chromium || missing+=(chromium)
installed chromium-driver || missing+=(chromium-driver)
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

# The S3-compatible server of the artifact store tests (test-support/src/s3.rs
# looks for it here first). Re-created if a broken venv lacks it.
moto_venv=${OSPREY_MOTO_VENV:-/var/cache/osprey-test/moto-venv}
if [ ! -x "$moto_venv/bin/moto_server" ]; then
    echo "install-deps: installing moto[server] into $moto_venv" >&2
    mkdir -p "$(dirname "$moto_venv")"
    python3 -m venv --clear "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi

if docker info >/dev/null 2>&1; then
    "$root/scripts/build-test-images.sh"
else
    echo "install-deps: the Docker engine is not reachable; Docker executor tests will fail" >&2
fi
