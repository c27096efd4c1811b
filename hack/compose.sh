#!/usr/bin/env bash
# `docker compose` for the distributed-llm project with the right project name,
# files and resolved image names:  hack/compose.sh ps | logs -f | down ...
set -euo pipefail
. "$(dirname "$0")/lib.sh"
dc "$@"
