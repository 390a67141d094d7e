#!/usr/bin/env bash
# `make run`: a coordinator on the embedded SQLite, one local shell agent, and
# the example pipeline in examples/hello run with live logs. The coordinator
# and agent keep running afterwards until Ctrl-C (a clean stop: exit 0).
# OSPREY_PORT chooses the coordinator's port (default 8710).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${OSPREY_BIN:-$root/target/release}"
state="$root/.osprey-run"
port=${OSPREY_PORT:-8710}
url="http://127.0.0.1:$port"
token=${OSPREY_REGISTRATION_TOKEN:-demo-registration-token}

port_taken() {
    echo "port $port is already in use (another coordinator?); stop it, or pick another port:" \
        "OSPREY_PORT=8711 make run" >&2
    exit 1
}
# Something already listening there would answer in place of our coordinator.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then port_taken; fi

rm -rf "$state" && mkdir -p "$state"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
# Ctrl-C (or make passing it on as TERM) is the way to stop: a clean exit.
trap 'cleanup; exit 0' INT TERM

# The example becomes a real git repository with one commit on master.
repo="$state/hello"
cp -r "$root/examples/hello" "$repo"
git -C "$repo" init -q -b master
git -C "$repo" -c user.name=osprey -c user.email=osprey@localhost add -A
git -C "$repo" -c user.name=osprey -c user.email=osprey@localhost commit -qm "example pipeline"

"$bin/osprey-coordinator" serve --listen "127.0.0.1:$port" --data-dir "$state/coordinator" \
    --registration-token "$token" --repo-allow "$state/*" 2>"$state/coordinator.log" &
pids+=($!)
for _ in $(seq 100); do
    curl -sf "$url/healthz" >/dev/null && break
    kill -0 "${pids[0]}" 2>/dev/null || break
    sleep 0.1
done
if ! curl -sf "$url/healthz" >/dev/null; then
    grep -q "Address already in use" "$state/coordinator.log" && port_taken
    echo "the coordinator did not start; see $state/coordinator.log" >&2
    exit 1
fi

"$bin/osprey-agent" run --url "$url" --registration-token "$token" --name local-shell \
    --executor shell --concurrency 2 --work-dir "$state/agent" 2>"$state/agent.log" &
pids+=($!)

export OSPREY_URL="$url"
# The coordinator generated the admin API token on its first start.
export OSPREY_TOKEN
OSPREY_TOKEN=$(cat "$state/coordinator/admin.token")
json_field() { grep -o "\"$1\": *\"\{0,1\}[a-z0-9]*" | head -n1 | sed 's/.*[": ]//'; }
# The example is a project: its pipelines are numbered, and a forge's push
# webhook could start them (`osprey project show hello` prints its URL).
"$bin/osprey" project add hello --repo "$repo" --default-branch master >/dev/null
id=$("$bin/osprey" pipeline run --project hello --ref master --json | json_field id)
echo "pipeline $id created; following its logs"
"$bin/osprey" logs --pipeline "$id" -f &
follower=$!
status=0
while :; do
    state_now=$("$bin/osprey" pipeline show "$id" --json | json_field status)
    case "$state_now" in success|failed|canceled) break ;; esac
    sleep 0.5
done
wait "$follower" || true
echo
"$bin/osprey" pipeline show "$id" || status=$?
echo
echo "coordinator: $url (logs in $state; admin token in $state/coordinator/admin.token)"
echo "web UI: $url/pipelines/$id (sign in with the admin token); press Ctrl-C to stop"
wait "${pids[0]}"
exit $status
