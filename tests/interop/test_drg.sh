#!/usr/bin/env bash
# drg 0.11.0 (Drogue's CLI, unchanged) against drover: discovery and login with an access
# token, app and device CRUD, labels and label selectors, the `set` shortcuts, `edit`, delete,
# and tenant isolation. Wire details: docs/notes-drg-wire.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APP=interop-app
ADMIN_APP=admin-only-app

start_drover

# -------------------------------------------------------------------------------------------
step "discovery documents have the shapes drg decodes"

http GET /.well-known/drogue-version
expect_status 200 "GET /.well-known/drogue-version"
version="$(printf '%s' "$HTTP_BODY" | json_get 'd["version"]')" || fail "version document: no string 'version'"
assert_match "$version" '^.+$' "drogue-version has a non-empty version"

http GET /.well-known/drogue-endpoints
expect_status 200 "GET /.well-known/drogue-endpoints (no auth)"
registry_url="$(printf '%s' "$HTTP_BODY" | json_get 'd["registry"]["url"]')" ||
    fail "drogue-endpoints: registry must be an object {\"url\": string}"
issuer_url="$(printf '%s' "$HTTP_BODY" | json_get 'd["issuer_url"]')" ||
    fail "drogue-endpoints: issuer_url must be a string"
# drg appends "/" and then path segments: a trailing slash or a path breaks every request.
assert_match "$registry_url" '^https?://[^/]+$' "registry.url is a bare origin (no path, no trailing /)"
assert_match "$issuer_url" '^https?://.*[^/]$' "issuer_url has no trailing slash"

http GET "$issuer_url/.well-known/openid-configuration"
printf '%s' "$HTTP_BODY" | json_get '[d["authorization_endpoint"], d["token_endpoint"]]' >/dev/null ||
    fail "openid-configuration must carry authorization_endpoint and token_endpoint"
ok "openid-configuration has authorization_endpoint and token_endpoint"

# -------------------------------------------------------------------------------------------
step "admin creates user alice"

ALICE_TOKEN="$(create_user alice)"
check_drg_token "$ALICE_TOKEN" || fail "alice's token is not in drg format"
ok "alice's token has the drg format and a valid checksum"

http_as alice "$ALICE_TOKEN" POST /api/admin/v1alpha1/users \
    -H 'content-type: application/json' -d '{"name":"mallory"}'
[[ "$HTTP_STATUS" == 401 || "$HTTP_STATUS" == 403 ]] ||
    fail "a normal user must not create users: expected 401/403, got $HTTP_STATUS"
ok "alice cannot create users ($HTTP_STATUS)"

# -------------------------------------------------------------------------------------------
step "drg login / whoami / version"

run_fail "drg login with a wrong token fails" \
    drg login "$DROVER_URL" --access-token "alice:$(make_drg_token)"
drg_login alice "$ALICE_TOKEN"

run_ok "drg whoami" drg whoami
assert_contains "$LAST_OUTPUT" "Context name: default" "whoami shows the context"
assert_contains "$LAST_OUTPUT" "$DROVER_URL" "whoami shows the server URL"

run_ok "drg whoami endpoints registry (authenticated info endpoint)" drg whoami endpoints registry
assert_eq "$(printf '%s' "$LAST_OUTPUT" | tail -n 1)" "$registry_url" \
    "info endpoint is the flat Endpoints document (registry.url at top level)"

run_ok "drg version" drg version
assert_contains "$LAST_OUTPUT" "Connected drogue-cloud service: v$version" "drg version reads drogue-version"

# -------------------------------------------------------------------------------------------
step "applications"

run_ok "drg create app $APP" drg create app "$APP"
assert_contains "$LAST_OUTPUT" "Application created" "create app message"
run_fail "creating $APP again fails (409)" drg create app "$APP"

run_ok "drg get apps" drg get apps
assert_contains "$LAST_OUTPUT" "$APP" "the app is listed"

run_ok "drg get app $APP -o json" drg get app "$APP" -o json
app_json="$LAST_OUTPUT"
assert_eq "$(printf '%s' "$app_json" | json_get 'd["metadata"]["name"]')" "$APP" "app metadata.name"
assert_match "$(printf '%s' "$app_json" | json_get 'd["metadata"]["uid"]')" '^[0-9a-fA-F-]{8,}$' "app has a server-assigned uid"
assert_match "$(printf '%s' "$app_json" | json_get 'd["metadata"]["resourceVersion"]')" '^.+$' "app has a resourceVersion"
assert_match "$(printf '%s' "$app_json" | json_get 'd["metadata"]["generation"]')" '^[0-9]+$' "app generation is a number"
assert_not_contains "$(printf '%s' "$app_json" | json_get 'd["metadata"]["creationTimestamp"]')" "1970-01-01" \
    "app has a real creationTimestamp"

run_fail "creating a device in a missing app fails" drg create device d0 --app no-such-app

# -------------------------------------------------------------------------------------------
step "devices, with labels and spec"

run_ok "create dev1 with --spec" drg create device dev1 --app "$APP" --spec '{"core":{"disabled":false}}'
assert_contains "$LAST_OUTPUT" "Device created" "create device message"
run_ok "create dev2" drg create device dev2 --app "$APP"
run_ok "create gw1" drg create device gw1 --app "$APP"
dev3_file="$WORK_DIR/dev3.json"
cat >"$dev3_file" <<EOF
{"metadata": {"application": "$APP", "name": "dev3", "labels": {"zone": "ap", "tier": "silver"}},
 "spec": {"core": {"disabled": false}}}
EOF
run_ok "create dev3 from a file (with labels)" drg create device --app "$APP" -f "$dev3_file"
run_fail "creating dev1 again fails (409)" drg create device dev1 --app "$APP"

run_ok "label dev1 zone=eu tier=gold" drg label device dev1 --app "$APP" zone=eu tier=gold
run_ok "label dev2 zone=us" drg label device dev2 --app "$APP" zone=us

run_ok "get dev3" drg get device dev3 --app "$APP" -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_get 'd["metadata"]["labels"]')" '{"tier":"silver","zone":"ap"}' \
    "labels given at creation are stored"
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_get 'd["metadata"]["application"]')" "$APP" \
    "device metadata.application"

# -------------------------------------------------------------------------------------------
step "drg set password / gateway / alias (GET + PUT of the whole device)"

run_ok "set password dev1" drg set password dev1 's3cret!' --app "$APP"
run_ok "set gateway dev1 gw1" drg set gateway dev1 gw1 --app "$APP"
run_ok "set alias dev1 dev1-alias" drg set alias dev1 dev1-alias --app "$APP"

run_ok "get dev1" drg get device dev1 --app "$APP" -o json
dev1_json="$LAST_OUTPUT"
assert_match "$(printf '%s' "$dev1_json" | json_get 'd["spec"]["authentication"]["credentials"][0]["pass"]["sha512"]')" \
    '^[$]6[$]' "spec.authentication.credentials holds the sha512-crypt password"
assert_match "$(printf '%s' "$dev1_json" | json_get 'd["spec"]["credentials"]["credentials"][0]["pass"]["sha512"]')" \
    '^[$]6[$]' "the legacy spec.credentials copy is kept"
assert_eq "$(printf '%s' "$dev1_json" | json_get 'd["spec"]["gatewaySelector"]["matchNames"]')" '["gw1"]' \
    "spec.gatewaySelector.matchNames"
assert_eq "$(printf '%s' "$dev1_json" | json_get 'd["spec"]["alias"]')" '["dev1-alias"]' "spec.alias"
assert_eq "$(printf '%s' "$dev1_json" | json_get 'd["spec"]["core"]')" '{"disabled":false}' \
    "the spec given at creation survives the updates"
assert_eq "$(printf '%s' "$dev1_json" | json_get 'd["metadata"]["labels"]')" '{"tier":"gold","zone":"eu"}' \
    "labels survive the updates"

# -------------------------------------------------------------------------------------------
step "label selectors"

# select SELECTOR EXPECTED_NAMES: drg get devices -l SELECTOR must list exactly EXPECTED_NAMES.
select_devices() {
    run_ok "get devices -l '$1'" drg get devices --app "$APP" -l "$1" -o json
    assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_names)" "$2" "-l '$1' lists exactly: ${2:-nothing}"
}
run_ok "get devices (all)" drg get devices --app "$APP" -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_names)" "dev1 dev2 dev3 gw1" "unfiltered list"
select_devices 'zone=eu' "dev1"
select_devices 'zone=eu,tier=gold' "dev1"
select_devices 'zone=eu,tier=silver' ""
select_devices 'tier' "dev1 dev3"
select_devices '!zone' "gw1"
select_devices 'zone in (us,ap)' "dev2 dev3"
select_devices 'zone notin (us,ap),zone' "dev1"

run_ok "human-readable list with -l zone=eu" drg get devices --app "$APP" -l zone=eu
assert_contains "$LAST_OUTPUT" "dev1" "table lists dev1"
assert_not_contains "$LAST_OUTPUT" "dev2" "table does not list dev2"

# -------------------------------------------------------------------------------------------
step "drg edit (round-trips the resource through \$EDITOR)"

editor="$WORK_DIR/editor.sh"
# drg re-reads the temp file through a handle opened before the editor runs: edit in place.
cat >"$editor" <<'EOF'
#!/bin/sh
new="$(sed 's/^  name: interop-app$/  name: interop-app\n  labels:\n    edited: "yes"/' "$1")"
printf '%s\n' "$new" >"$1"
EOF
chmod +x "$editor"
EDITOR="$editor" VISUAL="$editor" run_ok "drg edit app $APP" drg edit app "$APP"
run_ok "get apps -l edited=yes" drg get apps -l edited=yes -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_names)" "$APP" "the edited label is stored"

# -------------------------------------------------------------------------------------------
step "tenant isolation: alice cannot see the admin's app"

http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps \
    -H 'content-type: application/json' -d "{\"metadata\":{\"name\":\"$ADMIN_APP\"}}"
expect_status 201 "admin creates $ADMIN_APP"
run_fail "alice: drg get app $ADMIN_APP fails" drg get app "$ADMIN_APP"
assert_contains "$LAST_OUTPUT" "not found" "alice is told 'not found'"
run_ok "alice: drg get apps" drg get apps -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_names)" "$APP" "alice lists only her own app"
http_as alice "$ALICE_TOKEN" GET "/api/registry/v1alpha1/apps/$ADMIN_APP"
expect_status 404 "alice gets 404 (not 403) for another tenant's app"
run_fail "alice cannot delete $ADMIN_APP" drg delete app "$ADMIN_APP"
http_as admin "$ADMIN_TOKEN" GET "/api/registry/v1alpha1/apps/$ADMIN_APP"
expect_status 200 "$ADMIN_APP still exists"

# -------------------------------------------------------------------------------------------
step "delete device and app"

run_ok "delete dev1" drg delete device dev1 --app "$APP"
assert_contains "$LAST_OUTPUT" "Device deleted" "delete device message"
run_fail "dev1 is gone" drg get device dev1 --app "$APP"
assert_contains "$LAST_OUTPUT" "not found" "get dev1 says not found"
run_fail "deleting dev1 again fails" drg delete device dev1 --app "$APP"
run_ok "get devices" drg get devices --app "$APP" -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_names)" "dev2 dev3 gw1" "dev1 is no longer listed"

run_ok "delete app $APP" drg delete app "$APP"
assert_contains "$LAST_OUTPUT" "Application deleted" "delete app message"
run_fail "the app is gone" drg get app "$APP"
assert_contains "$LAST_OUTPUT" "not found" "get app says not found"
run_fail "its devices are gone" drg get device dev2 --app "$APP"
run_ok "get apps" drg get apps -o json
assert_eq "$(printf '%s' "$LAST_OUTPUT" | json_names)" "" "alice has no apps left"
run_ok "delete --ignore-missing on a missing app succeeds" drg delete app "$APP" --ignore-missing

echo
echo "test_drg: all checks passed"
