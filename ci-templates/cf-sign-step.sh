#!/usr/bin/env bash
# cf-sign-step.sh [BUILD_DIR]
#
# Sign the recipe variant's outputs (CF_SIGN_OUTPUTS) that conda-build left in
# BUILD_DIR/<subdir>/ (default: build_artifacts), right before the upload. For pipelines
# that upload in a step of their own; conda-forge's feedstocks sign inside upload_package
# (ci-templates/conda-forge-ci-setup/output-signing.patch) instead. Shared by the Azure Pipelines template, the GitHub Action and the
# conda-smithy snippets, so every CI runs exactly these lines.
#
# Environment:
#   CF_SIGN_OUTPUTS    the package names this build makes, space-separated (required)
#   CF_SIGN_KEY_VAR    name of the secret variable holding the key (default CF_SIGN_KEY)
#   CF_SIGN_FEEDSTOCK  feedstock name (default: $FEEDSTOCK_NAME, else the repository name)
#   CF_SIGN_CHANNEL    target channel (default https://conda.anaconda.org/conda-forge)
#   CF_SIGN_REQUIRED   true (default): a build that would upload but has no key fails;
#                      false: it skips signing with a warning
#   CF_SIGN            the cf-sign command (default: cf-sign)
#   CF_SIGN_INSTALL    pip requirement installed when the command is missing (default cf-sign)
#   CF_SIGN_SERVICE_URL  the trust service: the signed outputs' attestations are submitted
#                      there (`cf-sign submit`); unset: they are not
#   conda-smithy's upload condition: UPLOAD_PACKAGES, IS_PR_BUILD; and the providers' own
#   BUILD_REASON (Azure) and GITHUB_EVENT_NAME (GitHub Actions).
#
# The key is handed to cf-sign by name (--key env:VAR): its value is never expanded on a
# command line, traced or printed.

set -euo pipefail
{ set +x; } 2>/dev/null  # conda-smithy's scripts run with `set -x`: never trace past here

say() { echo "cf-sign-step: $*" >&2; }

build_dir="${1:-${CF_SIGN_BUILD_DIR:-build_artifacts}}"
key_var="${CF_SIGN_KEY_VAR:-CF_SIGN_KEY}"
channel="${CF_SIGN_CHANNEL:-https://conda.anaconda.org/conda-forge}"
required="${CF_SIGN_REQUIRED:-true}"
cf_sign="${CF_SIGN:-cf-sign}"

# Pull-request builds neither upload nor sign (fork PRs get no secrets): conda-smithy's
# IS_PR_BUILD, or the provider's own marker when the step runs outside its scripts.
is_pr="False"
if [[ "${IS_PR_BUILD:-False}" == [Tt]rue ]]; then is_pr="True"; fi
if [[ "${BUILD_REASON:-}" == "PullRequest" ]]; then is_pr="True"; fi
case "${GITHUB_EVENT_NAME:-}" in pull_request | pull_request_target) is_pr="True" ;; esac
if [[ "${is_pr}" == "True" ]]; then
    say "pull-request build: not signing (conda-forge does not upload PR builds)"
    exit 0
fi
upload="${UPLOAD_PACKAGES:-True}"
if [[ "${upload,,}" == "false" ]]; then
    say "UPLOAD_PACKAGES=${upload}: not signing (nothing is uploaded)"
    exit 0
fi

if [[ ! "${key_var}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    say "CF_SIGN_KEY_VAR is not a variable name"
    exit 2
fi
key_value="${!key_var:-}"
# Azure leaves an undefined secret as the literal macro text "$(NAME)".
if [[ -z "${key_value}" || "${key_value}" == "\$(${key_var})" ]]; then
    unset key_value
    if [[ "${required,,}" == "false" ]]; then
        say "WARNING: no signing key in \$${key_var}; packages are uploaded unsigned"
        exit 0
    fi
    say "no signing key in \$${key_var}: add it as a CI secret (and to conda-forge.yml's" \
        "secrets list so that it reaches the build container)"
    exit 1
fi
unset key_value

feedstock="${CF_SIGN_FEEDSTOCK:-${FEEDSTOCK_NAME:-}}"
if [[ -z "${feedstock}" ]]; then
    repo="${GITHUB_REPOSITORY:-${BUILD_REPOSITORY_NAME:-}}"
    feedstock="${repo##*/}"
fi
feedstock="${feedstock%-feedstock}"
if [[ -z "${feedstock}" ]]; then
    say "cannot tell the feedstock name: set CF_SIGN_FEEDSTOCK or FEEDSTOCK_NAME"
    exit 2
fi

if ! command -v "${cf_sign}" > /dev/null 2>&1; then
    say "installing ${CF_SIGN_INSTALL:-cf-sign}"
    python -m pip install --quiet --disable-pip-version-check "${CF_SIGN_INSTALL:-cf-sign}"
    cf_sign="cf-sign"
fi

read -r -a names <<< "${CF_SIGN_OUTPUTS:-}"
if [[ "${#names[@]}" -eq 0 ]]; then
    say "CF_SIGN_OUTPUTS is empty: name the package(s) this build makes"
    exit 2
fi
output_args=()
for name in "${names[@]}"; do output_args+=(--output "${name}"); done

say "signing ${names[*]} in ${build_dir} for feedstock ${feedstock} (key from \$${key_var})"
marker="$(mktemp)"  # sidecars written from now on are newer (nanosecond mtimes)
trap 'rm -f "${marker}"' EXIT
"${cf_sign}" sign --build-dir "${build_dir}" "${output_args[@]}" --feedstock "${feedstock}" \
    --key "env:${key_var}" --channel "${channel}"

service="${CF_SIGN_SERVICE_URL:-}"
if [[ -z "${service}" ]]; then
    say "CF_SIGN_SERVICE_URL is not set: sidecars stay next to the packages (not submitted)"
    exit 0
fi
# Submit exactly what this step signed: the sidecars newer than the marker.
signed=()
while IFS= read -r -d '' sidecar; do
    signed+=("${sidecar%.sig.json}")
done < <(find "${build_dir}" -mindepth 2 -maxdepth 2 -name '*.sig.json' -newer "${marker}" -print0)
say "submitting ${#signed[@]} attestation(s) to ${service}"
"${cf_sign}" submit "${signed[@]}" --service "${service}"
