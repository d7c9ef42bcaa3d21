#!/usr/bin/env bash
# Runbook 01 (initial root), the non-interactive steps.
#   initial-root.sh propose EVENT_DIR THRESHOLD KEY_MGR_PUB NAME=PUB...
#   initial-root.sh finish  EVENT_DIR OUT_DIR
# Between the two, each admin runs `cf-sign ceremony sign EVENT_DIR --key KEYREF` (step 5).
source "$(dirname "$0")/common.sh"

propose() {
    [[ $# -ge 4 ]] || die "usage: initial-root.sh propose EVENT_DIR THRESHOLD KEY_MGR_PUB NAME=PUB..."
    local event="$1" threshold="$2" key_mgr="$3"
    shift 3
    local args=() pair
    for pair in "$@"; do
        [[ "$pair" == *=* ]] || die "expected NAME=PUB, got $pair"
        args+=(--root-key "${pair#*=}" --holder "$pair")
    done
    say "proposing root v1: $threshold of $# admins"
    cfsign ceremony propose root "${args[@]}" --threshold "$threshold" \
        --key-mgr-key "$key_mgr" -o "$event"
    cfsign ceremony status "$event"
}

finish() {
    [[ $# -eq 2 ]] || die "usage: initial-root.sh finish EVENT_DIR OUT_DIR"
    local event="$1" out="$2/1.root.json"
    say "checking the transcript and the signatures"
    cfsign ceremony verify "$event"
    cfsign ceremony status "$event"
    say "assembling $out"
    mkdir -p "$2"
    cfsign ceremony assemble "$event" -o "$out"
    cfsign metadata verify "$out"
    judge_roots "$out"
    cfsign ceremony verify "$event"
}

[[ $# -ge 1 ]] || die "usage: initial-root.sh propose|finish ..."
cmd="$1"; shift
case "$cmd" in
    propose) propose "$@" ;;
    finish) finish "$@" ;;
    *) die "unknown step $cmd (propose or finish)" ;;
esac
