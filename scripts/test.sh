#!/usr/bin/env bash
# Install Vigil with its test tools and run everything CI runs: ruff, mypy, import-linter and
# the pytest suite (SQLite file and the local PostgreSQL, real uvicorn, websockets and
# headless Chromium).
# A missing PostgreSQL or Chromium is a failure, never a skip.
source "$(dirname "$0")/_common.sh"
ensure_venv "[test]"

# Chromium for the browser tests: Debian's package, driven by Playwright (no browser download).
if ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium for the browser tests…"
  apt_install chromium fonts-dejavu-core
fi
export VIGIL_TEST_CHROMIUM="${VIGIL_TEST_CHROMIUM:-$(command -v chromium)}"

# The single sign-on tests start a real OpenID Connect provider, panva's oidc-provider, on
# Node.js: installed from the committed lock file (again only when the lock file changed).
oidc_dir=tests/oidc_provider
if ! command -v node >/dev/null || ! command -v npm >/dev/null ||
  ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "error: the single sign-on tests need Node.js 20.19 or newer with npm" >&2
  echo "       (found: $(node --version 2>/dev/null || echo 'no node')); install it and run again." >&2
  exit 1
fi
if ! cmp -s "$oidc_dir/package-lock.json" "$oidc_dir/node_modules/.vigil-installed-lock"; then
  echo "installing the test OpenID provider (npm ci in $oidc_dir)…"
  npm ci --prefix "$oidc_dir" --no-audit --no-fund --loglevel=error
  cp "$oidc_dir/package-lock.json" "$oidc_dir/node_modules/.vigil-installed-lock"
fi

# PostgreSQL: the suite runs every storage test against it as well as SQLite.
export VIGIL_TEST_POSTGRES_URL="${VIGIL_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting the local PostgreSQL…"
    for version in /etc/postgresql/*; do
      as_root pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
    done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
if ! .venv/bin/python -c "import sqlalchemy as sa, sys; sa.create_engine(sys.argv[1]).connect().close()" \
  "$VIGIL_TEST_POSTGRES_URL" 2>/dev/null; then
  echo "error: PostgreSQL is not reachable at $VIGIL_TEST_POSTGRES_URL." >&2
  echo "       Install and start it (Debian: apt-get install postgresql), or point" >&2
  echo "       VIGIL_TEST_POSTGRES_URL at a server where that user may create databases." >&2
  exit 1
fi

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
# The walls between packages (the contracts in pyproject.toml); run from the repository root,
# which lint-imports puts on the import path.
echo "== import-linter"; .venv/bin/lint-imports
# The image, built and checked end to end, where a Docker engine answers. The one step that
# may be skipped: no engine runs on the development machines; CI runners with Docker run it.
echo "== docker"
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ./scripts/docker_check.sh
else
  echo "docker check skipped: no Docker engine is available here (docker info failed)"
fi
echo "== pytest"; .venv/bin/pytest "$@"
