#!/usr/bin/env bash
# Rehearsal stand-in for a hardware key: a SoftHSM2 token with one ed25519 key.
# usage: rehearsal-token.sh TOKEN_LABEL KEY_LABEL KEY_ID_HEX
#   needs SOFTHSM2_CONF, CF_SIGN_PKCS11_PIN (the user PIN) and SO_PIN in the environment;
#   PKCS11_MODULE defaults to Debian's SoftHSM2 library. Prints the pkcs11: KEYREF.
source "$(dirname "$0")/common.sh"
[[ $# -eq 3 ]] || die "usage: rehearsal-token.sh TOKEN_LABEL KEY_LABEL KEY_ID_HEX"
: "${SOFTHSM2_CONF:?set SOFTHSM2_CONF}" "${CF_SIGN_PKCS11_PIN:?set CF_SIGN_PKCS11_PIN}" "${SO_PIN:?set SO_PIN}"
module="${PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
if ! softhsm2-util --show-slots 2>/dev/null | grep -q "Label:.*\b$1\b"; then
    softhsm2-util --init-token --free --label "$1" --pin "$CF_SIGN_PKCS11_PIN" --so-pin "$SO_PIN" >/dev/null
fi
pkcs11-tool --module "$module" --token-label "$1" --login --pin "$CF_SIGN_PKCS11_PIN" \
    --keypairgen --key-type EC:edwards25519 --label "$2" --id "$3" >/dev/null
printf 'pkcs11:token=%s;object=%s?module-path=%s\n' "$1" "$2" "$module"
