#!/usr/bin/env bash
# Build the Vigil image and check that it really serves: liveness, readiness (database and
# alarm ticker), Prometheus metrics behind their token, the sign-in page, API sign-in with
# a first admin made by the image's CLI, the Dockerfile's HEALTHCHECK, and a clean stop.
# Needs Docker (Linux engine: host networking) and curl. scripts/test.sh runs it when
# `docker info` answers.
#
#   scripts/docker_check.sh [PORT]   # PORT for the first checks, default 18080
#
# The HEALTHCHECK probes port 8000 inside the container, so that check runs the image's
# default command on host port 8000, which must be free too. Containers and the volume
# made here are removed on exit; the image `vigil` is kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

port=${1:-18080}
image=vigil
name=vigil-check
volume=vigil-check-data
base=http://127.0.0.1:$port

curl() { command curl --max-time 10 "$@"; }
ok() { echo "  ok: $*"; }
fail() {
  echo "FAIL: $*" >&2
  if docker container inspect "$name" >/dev/null 2>&1; then
    echo "--- last log lines of $name:" >&2
    docker logs --tail 30 "$name" >&2 || true
  fi
  exit 1
}
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker volume rm "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
metrics_token=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
run() {
  docker run -d --network host --name "$name" -v "$volume:/var/lib/vigil" \
    -e VIGIL_METRICS_TOKEN="$metrics_token" "$image" "$@"
}

# Stop the container; it must exit 0 without a traceback.
stop_cleanly() {
  docker stop "$name" >/dev/null
  local code; code=$(docker inspect --format '{{.State.ExitCode}}' "$name")
  [ "$code" = 0 ] || fail "docker stop: exit code $code"
  if docker logs "$name" 2>&1 | grep -q Traceback; then fail "traceback in docker logs"; fi
  ok "docker stop: exit code 0, no traceback"
  docker rm "$name" >/dev/null
}

command -v curl >/dev/null || fail "curl is needed"
cleanup
for p in "$port" 8000; do port_free "$p" || fail "port $p is in use on this machine"; done

echo "== build"
start=$SECONDS
docker build --network host -t "$image" . || fail "docker build"
size=$(docker image inspect --format '{{.Size}}' "$image")
ok "built $image in $((SECONDS - start)) s, $((size / 1000000)) MB"

echo "== 1. server on $base"
run vigil serve --host 127.0.0.1 --port "$port" >/dev/null
for _ in $(seq 60); do curl -fs "$base/healthz" >/dev/null && break; sleep 1; done
health=$(curl -s -w ' HTTP %{http_code}' "$base/healthz") || fail "no answer on $base/healthz"
echo "  /healthz: $health"
[[ $health == *'"status":"ok"'*'"database":"sqlite"'*' HTTP 200' ]] || fail "/healthz: $health"
ok "/healthz 200, status ok, database sqlite"
ready=""
for _ in $(seq 20); do
  ready=$(curl -s -w ' HTTP %{http_code}' "$base/readyz") || true
  [[ $ready == *' HTTP 200' ]] && break
  sleep 0.5
done
[[ $ready == *'"status":"ready"'*'"database":{"ok":true'*'"alarm_tick":{"ok":true'*' HTTP 200' ]] ||
  fail "/readyz: $ready"
ok "/readyz 200: database and alarm ticker up"
code=$(status "$base/metrics"); [ "$code" = 401 ] || fail "/metrics without the token: HTTP $code"
scraped=$(curl -s -H "Authorization: Bearer $metrics_token" "$base/metrics")
grep -q '^vigil_database_up 1.0$' <<<"$scraped" || fail "/metrics: no vigil_database_up 1.0"
grep -q '^vigil_alarm_tick_age_seconds ' <<<"$scraped" || fail "/metrics: no alarm tick age"
ok "/metrics: 401 without the token; with it, database up and the alarm tick age"
docker exec "$name" test -s /var/lib/vigil/vigil.sqlite || fail "no database in /var/lib/vigil"
ok "database file /var/lib/vigil/vigil.sqlite (volume $volume)"
user=$(docker exec "$name" stat -c %U /proc/1)
uid=$(docker exec "$name" id -u)
[[ $user == vigil && $uid == 10001 ]] || fail "server runs as '$user' ($uid), not vigil (10001)"
ok "server process runs as vigil (uid 10001)"

echo "== 2. sign-in page and API guard"
code=$(status "$base/login"); [ "$code" = 200 ] || fail "/login: HTTP $code"
curl -s "$base/login" | grep -qi 'sign in' || fail "/login is not the sign-in page"
ok "/login 200 (sign-in page)"
code=$(status "$base/api/v1/sites"); [ "$code" = 401 ] || fail "/api/v1/sites without a token: HTTP $code"
ok "/api/v1/sites without a token: 401"

echo "== 3. first admin from the CLI, then an API token"
password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
echo "$password" | docker run --rm -i --network host -v "$volume:/var/lib/vigil" "$image" \
  vigil user create check-admin --role admin --all-sites --password-stdin ||
  fail "vigil user create"
answer=$(curl -s -H 'Content-Type: application/json' \
  -d "{\"username\":\"check-admin\",\"password\":\"$password\"}" "$base/api/v1/auth/token")
token=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$answer")
[ -n "$token" ] || fail "POST /api/v1/auth/token gave no token: $answer"
ok "POST /api/v1/auth/token: token issued"
me=$(curl -s -w ' HTTP %{http_code}' -H "Authorization: Bearer $token" "$base/api/v1/auth/me")
[[ $me == *'"username":"check-admin"'*' HTTP 200' ]] || fail "/api/v1/auth/me: $me"
ok "GET /api/v1/auth/me with the token: 200, check-admin"

echo "== 5. clean stop"
stop_cleanly

echo "== 4. HEALTHCHECK, default command (port 8000)"
run >/dev/null
health=starting
for _ in $(seq 60); do
  health=$(docker inspect --format '{{.State.Health.Status}}' "$name")
  [ "$health" = starting ] || break
  sleep 2
done
[ "$health" = healthy ] || fail "health status: $health"
ok "health status: healthy"
stop_cleanly

echo "PASS: the image builds, serves, signs in and stops cleanly"
