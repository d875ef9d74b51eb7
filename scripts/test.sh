#!/usr/bin/env bash
# Lint, type-check and run the whole test suite (unit + end-to-end with real processes).
# Run `bash scripts/setup.sh` first.  Exits non-zero if any step fails; pytest collecting no
# test at all (exit code 5) counts as a failure.
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 1

failed=()

run() {
    local name="$1"; shift
    echo "==> $*"
    "$@"
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "==> $name failed (exit code $rc)"
        failed+=("$name")
    fi
    return 0
}

run ruff python3 -m ruff check sidecar tests benchmarks
run mypy python3 -m mypy sidecar

echo "==> python3 -m pytest -q -ra --timeout=600 tests"
python3 -m pytest -q -ra --timeout=600 tests
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "==> pytest collected no tests: failing"
    failed+=("pytest (no tests)")
elif [ "$rc" -ne 0 ]; then
    echo "==> pytest failed (exit code $rc)"
    failed+=("pytest")
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "==> FAILED: ${failed[*]}"
    exit 1
fi
echo "==> all checks passed"
