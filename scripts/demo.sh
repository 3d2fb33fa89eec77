#!/usr/bin/env bash
# Install Vigil and start the demo clinic: embedded SQLite, 8 simulated chairs, the nurse station.
# Extra arguments go to `vigil demo` (e.g. --port 8080 --chairs 12).
source "$(dirname "$0")/_common.sh"
ensure_venv ""
exec .venv/bin/vigil demo "$@"
