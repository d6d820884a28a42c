#!/usr/bin/env bash
# drg 0.11.0 application members (GET + PUT of the whole members document) and the roles they
# grant; ownership transfer through the admin API with curl, because `drg transfer` is broken
# in drg 0.11.0 (it fails locally with "Matching variant not found" and sends nothing).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APP=shared-app

start_drover
ALICE_TOKEN="$(create_user alice)"
BOB_TOKEN="$(create_user bob)"
create_user carol >/dev/null
run_ok "drg login as alice (context alice)" \
    drg login "$DROVER_URL" --access-token "alice:$ALICE_TOKEN" --context alice
run_ok "drg login as bob (context bob)" \
    drg login "$DROVER_URL" --access-token "bob:$BOB_TOKEN" --context bob -k

as_alice() { drg --context alice "$@"; }
as_bob() { drg --context bob "$@"; }

step "without membership bob sees nothing"
run_ok "alice creates $APP" as_alice create app "$APP"
run_fail "bob cannot read $APP" as_bob get app "$APP"
assert_contains "$LAST_OUTPUT" "not found" "bob is told 'not found'"
run_fail "bob cannot read the members of $APP" as_bob get members --app "$APP"

step "reader"
run_ok "alice lists members (empty)" as_alice get members --app "$APP" -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_get 'd.get("members", {})')" '{}' "no members yet"
run_ok "alice adds bob as reader" as_alice create member bob --role reader --app "$APP"
assert_contains "$LAST_OUTPUT" "Application members updated" "member add message"
run_ok "alice lists members" as_alice get members --app "$APP" -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_get 'd["members"]')" '{"bob":{"role":"reader"}}' \
    "members document"
run_ok "bob (reader) reads $APP" as_bob get app "$APP"
run_fail "bob (reader) cannot label $APP" as_bob label app "$APP" owner=bob
run_fail "bob (reader) cannot create a device" as_bob create device d1 --app "$APP"

step "manager"
run_ok "alice makes bob a manager" as_alice create member bob --role manager --app "$APP"
run_ok "bob (manager) creates a device" as_bob create device d1 --app "$APP"
run_ok "bob (manager) labels $APP" as_bob label app "$APP" team=bob
run_fail "bob (manager) cannot change members" as_bob create member carol --role reader --app "$APP"

step "admin"
run_ok "alice makes bob an admin" as_alice create member bob --role admin --app "$APP"
run_ok "bob (admin) adds carol as reader" as_bob create member carol --role reader --app "$APP"
run_ok "members" as_alice get members --app "$APP" -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_get 'd["members"]')" \
    '{"bob":{"role":"admin"},"carol":{"role":"reader"}}' "bob and carol are members"

step "removal"
run_ok "alice removes bob" as_alice delete member bob --app "$APP"
run_fail "bob lost access" as_bob get app "$APP"

step "ownership transfer (admin API, curl)"
http_as alice "$ALICE_TOKEN" PUT "/api/admin/v1alpha1/apps/$APP/transfer-ownership" \
    -H 'content-type: application/json' -d '{"newUser":"bob"}'
[[ "$HTTP_STATUS" == 200 || "$HTTP_STATUS" == 202 || "$HTTP_STATUS" == 204 ]] ||
    fail "initiate transfer: expected 200/202/204, got $HTTP_STATUS"
ok "alice offers $APP to bob ($HTTP_STATUS)"
# drogue-client sends accept-ownership as a PUT without body and without content-type.
http_as bob "$BOB_TOKEN" PUT "/api/admin/v1alpha1/apps/$APP/accept-ownership"
[[ "$HTTP_STATUS" == 200 || "$HTTP_STATUS" == 202 || "$HTTP_STATUS" == 204 ]] ||
    fail "accept transfer: expected 200/202/204, got $HTTP_STATUS"
ok "bob accepts ($HTTP_STATUS)"
run_ok "bob (owner) reads $APP" as_bob get app "$APP" -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_get 'd["metadata"]["labels"]["team"]')" "bob" \
    "the app kept its labels"
run_ok "bob (owner) deletes $APP" as_bob delete app "$APP"
run_fail "$APP is gone" as_bob get app "$APP"

echo
echo "test_drg_members: all checks passed"
