#!/usr/bin/env bash
# A feedstock's keys in the service (runbooks 05 and 06):
#   feedstock-key.sh show NAME
#   feedstock-key.sh add NAME PUB_FILE        the .pub that `cf-sign feedstock provision` wrote
#   feedstock-key.sh revoke NAME KEYID        never comes back; see runbook 06 for what it does
source "$(dirname "$0")/common.sh"
api="$(dirname "$0")/admin-api.sh"
[[ $# -ge 2 ]] || die "usage: feedstock-key.sh show|add|revoke NAME ..."
cmd="$1" name="$2"
case "$cmd" in
    show)
        [[ $# -eq 2 ]] || die "usage: feedstock-key.sh show NAME"
        "$api" GET "/v1/admin/feedstocks/$name" ;;
    add)
        [[ $# -eq 3 ]] || die "usage: feedstock-key.sh add NAME PUB_FILE"
        body="$(mktemp)"
        trap 'rm -f "$body"' EXIT
        python3 -c 'import json,sys; print(json.dumps({"key": json.load(open(sys.argv[1]))}))' \
            "$3" > "$body"
        "$api" POST "/v1/admin/feedstocks/$name/keys" "$body" ;;
    revoke)
        [[ $# -eq 3 ]] || die "usage: feedstock-key.sh revoke NAME KEYID"
        "$api" DELETE "/v1/admin/feedstocks/$name/keys/$3" ;;
    *) die "unknown action $cmd (show, add or revoke)" ;;
esac
