#!/usr/bin/env bash
# Sets up what is missing, then starts livecast on embedded defaults (SQLite
# and HLS files in ./livecast-data) with a demo room, and prints how to
# stream and watch. Extra arguments go to `livecast serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/livecast serve --demo "$@"
