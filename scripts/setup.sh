#!/usr/bin/env bash
# Install everything the tests need on Debian 12 (bookworm). Idempotent; quick when all is present.
#
#   bash scripts/setup.sh           # install what is missing
#   bash scripts/setup.sh --force   # always run apt-get, pip and npm
#
# 1. Debian packages (apt): ffmpeg, nginx + libnginx-mod-rtmp, haproxy, redis-server, chromium,
#    wrk (the load generator of benchmarks/vod)
#    (+ nodejs/npm only when `node` is absent).  Skipped when every binary is already there.
#    The system services these packages start are stopped again: tests run their own instances
#    on random 127.0.0.1 ports with their own configuration files.
# 2. The Python package in editable mode with its test extras (pip install -e '.[test]').
# 3. The browser test dependencies (hls.js, dashjs, playwright-core) in tests/browser/ with npm.
#    No browser is downloaded: Playwright drives Debian's /usr/bin/chromium.
set -euo pipefail

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $arg (use --force or --help)" >&2; exit 2 ;;
    esac
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "setup.sh: must run as root (or have sudo) to install Debian packages" >&2
    exit 1
fi
as_root() { "${SUDO[@]}" "$@"; }

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------------
APT_PACKAGES=(ca-certificates ffmpeg nginx libnginx-mod-rtmp haproxy redis-server redis-tools chromium wrk)
NEEDED_BINARIES=(ffmpeg ffprobe nginx haproxy redis-server redis-cli chromium wrk node npm)
RTMP_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing=()
for b in "${NEEDED_BINARIES[@]}"; do
    have "$b" || missing+=("$b")
done
[ -f "$RTMP_MODULE" ] || missing+=("$RTMP_MODULE")

if ! have node; then
    # Debian's nodejs (18.x) and npm; playwright-core is pinned to a release that supports it.
    APT_PACKAGES+=(nodejs npm)
elif ! have npm; then
    # A node without npm (e.g. a nodesource build missing its npm) cannot be fixed with Debian's
    # npm package, which depends on Debian's nodejs.
    echo "setup.sh: 'node' is installed but 'npm' is not; install npm for that node" >&2
    exit 1
fi

if [ "$FORCE" -eq 1 ] || [ "${#missing[@]}" -gt 0 ]; then
    if [ "${#missing[@]}" -gt 0 ]; then log "missing: ${missing[*]}"; fi
    log "apt-get install ${APT_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${APT_PACKAGES[@]}"
    for b in "${NEEDED_BINARIES[@]}"; do
        have "$b" || { echo "setup.sh: '$b' still missing after apt-get install" >&2; exit 1; }
    done
    [ -f "$RTMP_MODULE" ] || { echo "setup.sh: $RTMP_MODULE missing" >&2; exit 1; }
else
    log "Debian packages present (use --force to run apt-get anyway)"
fi

# Package installation starts the distribution's services (nginx on :80, redis on :6379, ...).
# Stop them: tests start private instances and must not depend on or collide with them.
stop_service() {
    local svc="$1"
    if command -v service >/dev/null 2>&1 && [ -e "/etc/init.d/$svc" ]; then
        if as_root service "$svc" status >/dev/null 2>&1; then
            log "stopping system service $svc"
            as_root service "$svc" stop >/dev/null 2>&1 || true
        fi
    fi
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        if systemctl is-active --quiet "$svc" 2>/dev/null; then
            log "stopping systemd unit $svc"
            as_root systemctl stop "$svc" || true
        fi
        as_root systemctl disable --quiet "$svc" >/dev/null 2>&1 || true
    fi
}
stop_service nginx
stop_service redis-server
stop_service haproxy

# ---------------------------------------------------------------------------------------------
# 2. Python package (editable) with test extras
# ---------------------------------------------------------------------------------------------
PIP_ARGS=()
if ! python3 -m pip --version >/dev/null 2>&1; then
    log "python3 has no pip: installing python3-pip"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        python3-pip python3-venv
fi
# Debian's own python3 is "externally managed" (PEP 668); on a throw-away test machine we install
# into it anyway.  Interpreters from pyenv or python.org images are not affected.
if python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    PIP_ARGS+=(--break-system-packages)
fi

STAMP_DIR="$REPO_ROOT/build"
PY_STAMP="$STAMP_DIR/.setup-python.stamp"
py_fingerprint() {
    {
        echo "repo=$REPO_ROOT"
        echo "python=$(command -v python3) $(python3 -c 'import sys; print(sys.version)')"
        sha256sum pyproject.toml
    } | sha256sum | cut -d' ' -f1
}
py_installed_here() {
    # The editable install must point at *this* checkout (CI clones into another folder).
    python3 - "$REPO_ROOT" <<'EOF' >/dev/null 2>&1
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("sidecar")
ok = spec is not None and spec.origin is not None
ok = ok and pathlib.Path(spec.origin).resolve().is_relative_to(pathlib.Path(sys.argv[1]).resolve())
import pytest, pytest_timeout, mypy, ruff, av, httpx, redis  # noqa: F401
sys.exit(0 if ok else 1)
EOF
}
fp="$(py_fingerprint)"
if [ "$FORCE" -eq 0 ] && [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$fp" ] && py_installed_here; then
    log "Python package already installed in editable mode (pyproject.toml unchanged)"
else
    log "python3 -m pip install -e '.[test]'"
    python3 -m pip install -q "${PIP_ARGS[@]}" -e '.[test]'
    mkdir -p "$STAMP_DIR"
    echo "$fp" > "$PY_STAMP"
fi

# ---------------------------------------------------------------------------------------------
# 3. Browser test dependencies (npm, no browser download)
# ---------------------------------------------------------------------------------------------
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
BROWSER_DIR="$REPO_ROOT/tests/browser"
NPM_STAMP="$BROWSER_DIR/node_modules/.setup.stamp"
npm_fingerprint() {
    {
        node --version
        sha256sum "$BROWSER_DIR/package.json"
        if [ -f "$BROWSER_DIR/package-lock.json" ]; then sha256sum "$BROWSER_DIR/package-lock.json"; fi
    } | sha256sum | cut -d' ' -f1
}
nfp="$(npm_fingerprint)"
if [ "$FORCE" -eq 0 ] && [ -f "$NPM_STAMP" ] && [ "$(cat "$NPM_STAMP")" = "$nfp" ]; then
    log "npm packages in tests/browser already installed"
else
    log "npm ci in tests/browser"
    (
        cd "$BROWSER_DIR"
        npm ci --no-audit --no-fund || npm install --no-audit --no-fund
    )
    echo "$nfp" > "$NPM_STAMP"
fi

log "done"
