#!/usr/bin/env bash
# run-all.sh - build telgate if needed and run the whole process set on this
# host under supervisord (deploy/supervisord.conf), in the foreground.
# With no Telnyx account configured it runs a local demo against the stand-in.
#
# Usage: [VERIFIERS=N] [DATA_DIR=DIR] [TEL_CONFIG=FILE] ./run-all.sh [--no-demo-call]
set -eu

usage() {
    cat <<'EOF'
usage: [VERIFIERS=N] [DATA_DIR=DIR] [TEL_CONFIG=FILE] ./run-all.sh [--no-demo-call]

Builds telgate (installing missing Debian packages first) and runs spine,
actuator, N verifiers (default 2) and ingress under supervisord until Ctrl-C.

Real mode: TEL_CONFIG (or ./tel.conf) sets telnyx_public_key (or the
environment sets TEL_TELNYX_PUBLIC_KEY).  Otherwise DEMO mode: a local Telnyx
stand-in signs webhooks and takes the commands, and one demo call is placed
(skip it with --no-demo-call).
EOF
}

DEMO_CALL=1
for arg in "$@"; do
    case "$arg" in
        --no-demo-call) DEMO_CALL=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run-all.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")" && pwd -P)
cd "$ROOT"
PY=/usr/bin/python3
STANDIN="$ROOT/tests/telnyx_standin.py"
STANDIN_PORT=3100
DEMO_FROM=+13125550100
DEMO_TO=+13125550199
ALICE_FROM=+13125550142

VERIFIERS=${VERIFIERS:-2}
case "$VERIFIERS" in
    ''|*[!0-9]*) echo "run-all.sh: VERIFIERS must be a number, got '$VERIFIERS'" >&2; exit 2 ;;
esac
if [ "$VERIFIERS" -lt 1 ] || [ "$VERIFIERS" -gt 64 ]; then
    echo "run-all.sh: VERIFIERS must be 1..64, got $VERIFIERS" >&2
    exit 2
fi

say() { printf 'run-all: %s\n' "$*"; }
die() { printf 'run-all: %s\n' "$*" >&2; exit 1; }

# conf_get FILE KEY: the value of "KEY = value" in FILE (last one wins), or "".
conf_get() {
    [ -f "$1" ] || return 0
    sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" |
        sed 's/[[:space:]]#.*$//; s/[[:space:]]*$//' | tail -n 1
}

abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$ROOT" "${1#./}" ;;
    esac
}

# --- 1. packages and build -------------------------------------------------
say "checking packages (make deps)"
make --no-print-directory deps
say "building (make)"
make --no-print-directory

# --- 2. configuration: real account or demo -----------------------------------
CONFIG=""
if [ -n "${TEL_CONFIG:-}" ]; then
    [ -f "$TEL_CONFIG" ] || die "TEL_CONFIG=$TEL_CONFIG: no such file"
    CONFIG=$(abspath "$TEL_CONFIG")
elif [ -f "$ROOT/tel.conf" ]; then
    CONFIG="$ROOT/tel.conf"
fi
PUBKEY=${TEL_TELNYX_PUBLIC_KEY:-}
if [ -z "$PUBKEY" ] && [ -n "$CONFIG" ]; then
    PUBKEY=$(conf_get "$CONFIG" telnyx_public_key)
fi

# The data directory: in real mode TEL_DATA_DIR, else the config's data_dir,
# else DATA_DIR, else ./var; in demo mode DATA_DIR, else ./var.  It is
# exported as TEL_DATA_DIR below, so every stage uses the one announced here.
CONF_DATA=$(conf_get "$CONFIG" data_dir)
if [ -n "$PUBKEY" ]; then
    MODE=real
    DATA=$(abspath "${TEL_DATA_DIR:-${CONF_DATA:-${DATA_DIR:-./var}}}")
    LISTEN=${TEL_HTTP_LISTEN:-$(conf_get "$CONFIG" http_listen)}
    LISTEN=${LISTEN:-127.0.0.1:3000}
    STANDIN_AUTOSTART=false
    if [ -z "$CONFIG" ]; then
        # Everything comes from TEL_* variables; give the processes an empty file.
        mkdir -p "$DATA"
        CONFIG="$DATA/env-only.conf"
        echo "# telgate configured from TEL_* environment variables (run-all.sh)" > "$CONFIG"
    fi
    say "real mode: config $CONFIG, data $DATA"
else
    MODE=demo
    DATA=$(abspath "${DATA_DIR:-./var}")
    LISTEN=127.0.0.1:3000
    STANDIN_AUTOSTART=true
    [ -n "$CONFIG" ] && say "$CONFIG has no telnyx_public_key: running the local DEMO instead"
    mkdir -p "$DATA/log"
    STANDIN_PUB=$("$PY" "$STANDIN" pubkey --key-file "$DATA/standin.key") ||
        die "cannot create the stand-in key $DATA/standin.key"
    printf '%s label=demo\n' "$DEMO_TO" > "$DATA/numbers.conf"
    CONFIG="$DATA/demo.conf"
    cat > "$CONFIG" <<EOF
# telgate DEMO configuration, written by run-all.sh: webhooks come from the
# local Telnyx stand-in (tests/telnyx_standin.py), commands go back to it.
http_listen = $LISTEN
data_dir = $DATA
telnyx_public_key = $STANDIN_PUB
telnyx_api_url = http://127.0.0.1:$STANDIN_PORT/v2
telnyx_api_key = demo-key
numbers_file = $DATA/numbers.conf
EOF
    say "DEMO mode (no Telnyx account configured): config $CONFIG"
fi
mkdir -p "$DATA/log"

HOST=${LISTEN%:*}
PORT=${LISTEN##*:}
case "$HOST" in ''|0.0.0.0|'*'|'[::]') HOST=127.0.0.1 ;; esac
HEALTH_URL="http://$HOST:$PORT/health"
export TEL_DATA_DIR="$DATA"     # every stage, and ctl, use $DATA whatever $CONFIG says
CTL="bin/telctl -c $CONFIG"      # as shown to the operator
if [ "$MODE" = real ] && [ "$(abspath "${CONF_DATA:-./var}")" != "$DATA" ]; then
    CTL="TEL_DATA_DIR=$DATA $CTL"   # $CONFIG alone names another data directory
fi
ctl() { "$ROOT/bin/telctl" -c "$CONFIG" "$@"; }

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
SOCK="$DATA/supervisord.sock"
if [ -S "$SOCK" ] && supervisorctl -s "unix://$SOCK" pid >/dev/null 2>&1; then
    die "a supervisord already runs for $DATA (supervisorctl -s unix://$SOCK status)"
fi
port_busy "$HOST" "$PORT" && die "$HOST:$PORT is already in use (another ingress?)"
if [ "$MODE" = demo ] && port_busy 127.0.0.1 "$STANDIN_PORT"; then
    die "127.0.0.1:$STANDIN_PORT (the stand-in's port) is already in use"
fi

# --- 3. supervisord in the foreground ----------------------------------------------
export TELGATE_ROOT="$ROOT" TEL_CONFIG="$CONFIG" TELGATE_DATA="$DATA" \
    VERIFIERS STANDIN_AUTOSTART
say "starting supervisord: spine, actuator, $VERIFIERS verifier(s), ingress$([ "$MODE" = demo ] && echo ', Telnyx stand-in')"
supervisord -n -c "$ROOT/deploy/supervisord.conf" &
SUP_PID=$!

stop() {
    trap '' INT TERM
    echo
    say "stopping (supervisord stops every stage with SIGTERM)"
    kill -TERM "$SUP_PID" 2>/dev/null || true
    wait "$SUP_PID" 2>/dev/null || true
    say "stopped"
    exit 0
}
trap stop INT TERM

alive() { kill -0 "$SUP_PID" 2>/dev/null; }

say "waiting for $HEALTH_URL"
i=0
until curl -fsS -o /dev/null --max-time 2 "$HEALTH_URL" 2>/dev/null; do
    alive || die "supervisord exited; see $DATA/log/supervisord.log"
    i=$((i + 1))
    if [ "$i" -ge 120 ]; then
        echo "run-all: ingress not healthy after 60 s; logs in $DATA/log/" >&2
        curl -sS --max-time 2 "$HEALTH_URL" >&2 || true
        kill -TERM "$SUP_PID" 2>/dev/null || true
        wait "$SUP_PID" 2>/dev/null || true
        exit 1
    fi
    sleep 0.5
done
say "ingress is healthy at $HEALTH_URL"

SUPCTL="supervisorctl -c deploy/supervisord.conf"
[ "$DATA" = "$ROOT/var" ] || SUPCTL="supervisorctl -s unix://$SOCK"

if [ "$MODE" = demo ] && [ "$DEMO_CALL" = 1 ]; then
    say "placing a demo call from $DEMO_FROM (nobody vouches for it) to $DEMO_TO"
    if HIST=$("$PY" "$STANDIN" call --control "http://127.0.0.1:$STANDIN_PORT" \
            --from "$DEMO_FROM" --to "$DEMO_TO" --attestation A --wait 30); then
        printf '%s\n' "$HIST" | "$PY" -c '
import json, sys
h = json.load(sys.stdin)
print("  the stand-in saw (call %s):" % h["call_control_id"][:20])
for w in h["webhooks"]:
    print("    webhook  %-20s -> ingress answered %s" % (w["event_type"], w["status"]))
for c in h["commands"]:
    print("    command  %-20s <- actuator, answered %s" % (c["action"], c["status"]))'
    else
        echo "run-all: the demo call did not complete; see $DATA/log/" >&2
    fi
    # The actuator's outcome of the last command lands just after the hangup.
    i=0
    while [ "$i" -lt 20 ] && ! ctl events --type tel.command --json 2>/dev/null | grep -q '"hangup"'; do
        i=$((i + 1))
        sleep 0.25
    done
    # Then a caller who holds a certificate: alice.x, with a token in the SIP
    # header, from a caller-ID nobody vouches for (attestation C).
    say "issuing alice.x a certificate and placing a call with her X-Namespace-Token"
    ctl issuer init >/dev/null
    rm -f "$DATA/alice.key"           # alice's key pair is made afresh for each demo
    ALICE_PUB=$(ctl keygen "$DATA/alice.key")
    ctl cert issue --namespace alice.x --pubkey "$ALICE_PUB" --phone "$ALICE_FROM" \
        --days 30 --out "$DATA/alice.cert.json" >/dev/null
    TOKEN=$(ctl token --key "$DATA/alice.key" --cert "$DATA/alice.cert.json" --from "$ALICE_FROM" --to "$DEMO_TO")
    if "$PY" "$STANDIN" call --control "http://127.0.0.1:$STANDIN_PORT" --from "$ALICE_FROM" \
            --to "$DEMO_TO" --attestation C --token "$TOKEN" --hangup-after 2 --wait 30 >/dev/null; then
        say "alice.x was verified by token, answered, and hung up after 2 s"
    else
        echo "run-all: the verified demo call did not complete; see $DATA/log/" >&2
    fi
    i=0
    while [ "$i" -lt 20 ] && ! ctl events --type tel.call_hangup --json 2>/dev/null | grep -q "$ALICE_FROM"; do
        i=$((i + 1))
        sleep 0.25
    done
    echo
    say "the spine's event log ($CTL events):"
    ctl events || true
    cat <<EOF

What you just saw
  The stand-in played Telnyx: it sent a signed call.initiated webhook for a
  call from $DEMO_FROM to $DEMO_TO.  The ingress checked the signature and
  journaled it; a verifier found no namespace certificate for the caller and
  rejected the call (reason no_namespace); the actuator answered it, spoke the
  announcement and hung up, each command confirmed by the stand-in's webhooks.
  Then the operator issued alice.x a certificate (ns.cert_issued); her call
  carried a signed X-Namespace-Token and was verified by it (method token)
  although its caller-ID had only attestation C, and it was answered.
  Every step is an event in the hash-chained spine ($CTL verify checks it).

EOF
fi

cat <<EOF
telgate is running ($MODE mode, $VERIFIERS verifiers); logs in $DATA/log/.
  status:         $SUPCTL status
  live events:    $CTL tail
  query events:   $CTL events
EOF
if [ "$MODE" = demo ]; then
    cat <<EOF
  another call:   $PY tests/telnyx_standin.py call --control http://127.0.0.1:$STANDIN_PORT --from $DEMO_FROM --to $DEMO_TO --attestation A
  certificates:   $CTL cert list        (see README: "Issuing a certificate to a caller")
  a token call:   TOKEN=\$($CTL token --key $DATA/alice.key --cert $DATA/alice.cert.json --from $ALICE_FROM --to $DEMO_TO)
                  $PY tests/telnyx_standin.py call --control http://127.0.0.1:$STANDIN_PORT --from $ALICE_FROM --to $DEMO_TO --token "\$TOKEN" --hangup-after 2
EOF
fi
echo "Ctrl-C stops everything."

while alive; do
    wait "$SUP_PID" || true
done
trap - INT TERM
say "supervisord exited"
