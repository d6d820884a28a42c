#!/usr/bin/env bash
# drg 0.11.0 access-token management: create (needs HTTP 200 + {"prefix","token"}), list,
# log in with the new token, delete, and the deleted token stops working.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_drover
ALICE_TOKEN="$(create_user alice)"
drg_login alice "$ALICE_TOKEN"

step "create a token"
run_ok "drg create token --description" drg create token --description "interop token"
new_token="$(printf '%s\n' "$LAST_OUTPUT" | grep -E '^drg_' | head -n 1 || true)"
[[ -n "$new_token" ]] || fail "drg create token printed no drg_ token"
check_drg_token "$new_token" || fail "the created token is not in drg format"
ok "the new token has the drg format and a valid checksum"
prefix="${new_token:0:10}"

step "list tokens"
run_ok "drg get tokens -o json" drg get tokens -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_get "[t.get('description') for t in d if t['prefix'] == '$prefix']")" \
    '["interop token"]' "the new token is listed once, with its description"
assert_not_contains "$LAST_OUTPUT" "$new_token" "the list does not reveal the token itself"
run_ok "drg get tokens (table)" drg get tokens
assert_contains "$LAST_OUTPUT" "$prefix" "the table shows the prefix"

step "the new token works"
run_ok "login with the new token (context t2)" \
    drg login "$DROVER_URL" --access-token "alice:$new_token" --context t2 -k
run_ok "get apps with the new token" drg get apps --context t2

step "delete the token"
run_ok "drg delete token $prefix" drg delete token "$prefix"
assert_contains "$LAST_OUTPUT" "Access token deleted" "delete token message"
run_ok "drg get tokens -o json" drg get tokens -o json
assert_not_contains "$LAST_OUTPUT" "\"$prefix\"" "the deleted token is no longer listed"
run_fail "the deleted token is refused" drg get apps --context t2
run_fail "deleting it again fails" drg delete token "$prefix"
run_ok "the original token still works" drg get apps

echo
echo "test_drg_tokens: all checks passed"
