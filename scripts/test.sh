#!/usr/bin/env bash
# The README's test command (`npm test`): build, make the brokers reachable, run every test.
# In CI (CI=true) a broker that cannot be started fails the run, and so does every broker test;
# elsewhere the broker tests skip with a notice when a broker is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

npm run --silent build
if ! bash scripts/brokers.sh up; then
  if [ "${CI:-}" = "true" ] || [ "${PAYQ_REQUIRE_BROKERS:-}" = "1" ]; then
    echo "test: brokers could not be started and brokers are required" >&2
    exit 1
  fi
  echo "test: some brokers are not available; their tests will be skipped (see scripts/brokers.sh status)" >&2
fi
exec npx vitest run "$@"
