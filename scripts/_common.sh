# Shared by scripts/demo.sh and scripts/test.sh: find Python 3.11+, make .venv, install Vigil.
# Safe to run again: an existing .venv is reused and pip only installs what changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: '$*' needs root (or sudo) on this machine" >&2; return 1; fi
}

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "error: please install $* with your package manager" >&2; return 1
  fi
  if [ ! -f /tmp/.vigil-apt-updated ]; then as_root apt-get update -qq && touch /tmp/.vigil-apt-updated; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Vigil needs Python 3.11 or newer (python3 --version says: $(python3 --version 2>&1))" >&2
  return 1
}

ensure_venv() {
  local extras="$1"
  local python; python=$(find_python)
  if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      apt_install python3-venv
      "$python" -m venv .venv
    fi
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
}
