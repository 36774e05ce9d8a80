#!/usr/bin/env bash
# `dsv3 serve` driven by the official `openai` Python package (server/tests/openai_client.py): streaming and
# not, usage and cache-hit fields, errors, on the built-in model. Installs python3-venv (apt, as root) when
# missing and the openai package into a private venv. Under CI=true anything missing fails the run;
# elsewhere it says loudly that the check did not run.
set -euo pipefail
cd "$(dirname "$0")/.."

not_run() {
    echo "ci/openai-client.sh: WARNING: the openai client check did not run: $1" >&2
    if [ "${CI:-}" = true ]; then exit 1; fi
    exit 0
}

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    else
        not_run "python3 with venv is not installed"
    fi
fi
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv" || not_run "python3 -m venv failed"
# The version the check was written against.
"$venv/bin/pip" install -q openai==3.63.0 || not_run "pip install openai failed (no PyPI?)"

cargo build --quiet
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/debug/dsv3 serve --port "$port" -q &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$venv"' EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health")
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit("ci/openai-client.sh: dsv3 serve did not answer /health within 150 s")
PY
"$venv/bin/python" server/tests/openai_client.py --base-url "http://127.0.0.1:$port/v1" --model dsv3-builtin
kill -TERM "$server"
wait "$server"
echo "ci/openai-client.sh: passed"
