#!/usr/bin/env bash
# Runs a command inside the built workspace: scripts/with_env.sh <command> [args...]
set -eo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
exec "$@"
