#!/bin/sh
# The service container's entrypoint (also what tests run directly when no Docker engine is
# there): apply migrations, then serve. Settings come from the environment:
#   CF_SIGN_DB            database URL (PostgreSQL in production)
#   CF_SIGN_PUBLISH_DIR   the service's own publish directory (default /data/trust)
#   CF_SIGN_PUBLISH_TO    azblob://account/container[/prefix] (optional)
#   CF_SIGN_PORT, CF_SIGN_WORKERS   listen port (8000) and worker processes (2)
# Any arguments replace `serve ...` (e.g. `service init ...`, `service refresh`).
set -eu
: "${CF_SIGN_PUBLISH_DIR:=/data/trust}"
export CF_SIGN_PUBLISH_DIR
cf_sign="${CF_SIGN_COMMAND:-cf-sign}"
if [ "$#" -gt 0 ]; then
    exec $cf_sign "$@"
fi
$cf_sign db upgrade
exec $cf_sign serve --host "${CF_SIGN_HOST:-0.0.0.0}" --port "${CF_SIGN_PORT:-8000}" \
    --workers "${CF_SIGN_WORKERS:-2}"
