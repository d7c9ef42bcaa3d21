#!/usr/bin/env bash
# Set the pkg_mgr keys (runbook 04): pkg-mgr-keys.sh THRESHOLD KEYREF...
#   Overlap: list the old and the new key with threshold 1; retire: list only the new one.
source "$(dirname "$0")/common.sh"
[[ $# -ge 2 ]] || die "usage: pkg-mgr-keys.sh THRESHOLD KEYREF..."
body="$(mktemp)"
trap 'rm -f "$body"' EXIT
python3 -c 'import json,sys; print(json.dumps({"threshold": int(sys.argv[1]), "keyrefs": sys.argv[2:]}))' \
    "$@" > "$body"
"$(dirname "$0")/admin-api.sh" PUT /v1/admin/pkg-mgr-keys "$body"
