# Shared by the runbook scripts: strict mode, the cf-sign command, optional client checks.
set -euo pipefail

# The cf-sign command; may carry arguments (e.g. "python -m signer.cli.main").
CF_SIGN="${CF_SIGN:-cf-sign}"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }
run() { printf '+ %s\n' "$*"; "$@"; }
# shellcheck disable=SC2086  # word-split on purpose: CF_SIGN may be a command and arguments
cfsign() { run $CF_SIGN "$@"; }

# libmamba's own verdict on a root chain, when the judge is built (CF_SIGN_LIBMAMBA_JUDGE).
judge_roots() {
    local judge="${CF_SIGN_LIBMAMBA_JUDGE:-}"
    if [[ -z "$judge" ]]; then
        echo "(libmamba judge not set: CF_SIGN_LIBMAMBA_JUDGE; skipping mamba's check)"
        return 0
    fi
    local out
    if [[ $# -eq 1 ]]; then
        out="$("$judge" root "$1")"
    else
        out="$("$judge" root-update "$@")"
    fi
    echo "libmamba: $out"
    [[ "$out" == *'"ok":true'* ]] || die "libmamba refuses the root"
}
