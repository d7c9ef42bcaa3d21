#!/usr/bin/env bash
# Publish root N+1 from a signing event: publish-root.sh N+1.root.json [KEY_MGR_KEYREF...]
#   With KEYREFs (the new root's key_mgr keys, runbook 04), the service re-signs everything
#   the key_mgr keys sign in the same publication. The service checks the chain itself.
source "$(dirname "$0")/common.sh"
[[ $# -ge 1 ]] || die "usage: publish-root.sh N+1.root.json [KEY_MGR_KEYREF...]"
body="$(mktemp)"
trap 'rm -f "$body"' EXIT
python3 - "$@" > "$body" <<'PY'
import json, sys
root, *keyrefs = sys.argv[1:]
body = {"root": open(root, encoding="utf-8").read()}
if keyrefs:
    body["key_mgr_keyrefs"] = keyrefs
print(json.dumps(body))
PY
"$(dirname "$0")/admin-api.sh" POST /v1/admin/roots "$body"
