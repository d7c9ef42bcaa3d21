#!/usr/bin/env bash
# One call of the service's admin API: admin-api.sh METHOD PATH [BODY_FILE]
#   SERVICE: the service's base URL; CF_SIGN_ADMIN_TOKEN: an admin bearer token. The token
#   goes to curl on stdin, never on its command line (where `ps` would show it).
source "$(dirname "$0")/common.sh"
[[ $# -ge 2 && $# -le 3 ]] || die "usage: admin-api.sh METHOD PATH [BODY_FILE]"
: "${SERVICE:?set SERVICE to the service URL}" "${CF_SIGN_ADMIN_TOKEN:?set CF_SIGN_ADMIN_TOKEN}"
body=()
if [[ $# -eq 3 ]]; then
    body=(-H 'Content-Type: application/json' --data-binary "@$3")
fi
printf '+ curl -X %s %s%s\n' "$1" "$SERVICE" "$2" >&2
response="$(printf 'Authorization: Bearer %s\n' "$CF_SIGN_ADMIN_TOKEN" |
    curl -sS -X "$1" -H @- "${body[@]}" -w '\n%{http_code}' "$SERVICE$2")"
code="${response##*$'\n'}"
printf '%s\n' "${response%$'\n'*}"
[[ "$code" == 2* ]] || { echo "error: HTTP $code" >&2; exit 1; }
