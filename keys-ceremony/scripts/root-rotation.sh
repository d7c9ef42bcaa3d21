#!/usr/bin/env bash
# Runbooks 02 (root rotation) and 03 (adding/removing an admin), the non-interactive steps.
#   root-rotation.sh propose PREV_ROOT EVENT_DIR THRESHOLD new:NAME=PUB... [old:NAME=PUB...]
#       new: the keys of root N+1 (all of them; a key kept from root N is listed again);
#       old: holders of root N's keys, so that status names who still has to sign.
#       KEY_MGR_PUB=FILE in the environment replaces the key_mgr key (runbook 04).
#   root-rotation.sh finish PREV_ROOT EVENT_DIR OUT_DIR
# Between the two, a threshold of root N's holders AND of root N+1's holders each run
# `cf-sign ceremony sign EVENT_DIR --key KEYREF`.
source "$(dirname "$0")/common.sh"

propose() {
    [[ $# -ge 4 ]] || die "usage: root-rotation.sh propose PREV_ROOT EVENT_DIR THRESHOLD new:NAME=PUB..."
    local prev="$1" event="$2" threshold="$3"
    shift 3
    local args=() item pair
    for item in "$@"; do
        pair="${item#*:}"
        [[ "$pair" == *=* ]] || die "expected new:NAME=PUB or old:NAME=PUB, got $item"
        case "$item" in
            new:*) args+=(--root-key "${pair#*=}" --holder "$pair") ;;
            old:*) args+=(--holder "$pair") ;;
            *) die "expected new:NAME=PUB or old:NAME=PUB, got $item" ;;
        esac
    done
    if [[ -n "${KEY_MGR_PUB:-}" ]]; then
        args+=(--key-mgr-key "$KEY_MGR_PUB")
    fi
    say "proposing the root after $prev"
    cfsign ceremony propose root --from "$prev" "${args[@]}" --threshold "$threshold" -o "$event"
    cfsign ceremony status "$event"
}

finish() {
    [[ $# -eq 3 ]] || die "usage: root-rotation.sh finish PREV_ROOT EVENT_DIR OUT_DIR"
    local prev="$1" event="$2"
    local version
    version="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["signed"]["version"])' \
        "$event/proposed.json")"
    local out="$3/$version.root.json"
    say "checking the transcript and the signatures"
    cfsign ceremony verify "$event"
    cfsign ceremony status "$event"
    say "assembling $out"
    mkdir -p "$3"
    cfsign ceremony assemble "$event" -o "$out"
    cfsign metadata verify "$out" --trusted "$prev"
    judge_roots "$prev" "$out"
    cfsign ceremony verify "$event"
}

[[ $# -ge 1 ]] || die "usage: root-rotation.sh propose|finish ..."
cmd="$1"; shift
case "$cmd" in
    propose) propose "$@" ;;
    finish) finish "$@" ;;
    *) die "unknown step $cmd (propose or finish)" ;;
esac
