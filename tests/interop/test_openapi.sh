#!/usr/bin/env bash
# The OpenAPI document is true: schemathesis (SCHEMATHESIS_VERSION in .ci/run, installed into
# tests/interop/.venv) reads /api/openapi.json from a running server and sends generated requests
# to every operation — valid and invalid ones, a bounded number per operation, then sequences
# that follow the links it infers — and checks every answer against the document:
#   not_a_server_error           no 5xx (except where tests/interop/schemathesis.toml expects one)
#   status_code_conformance      the status is documented for the operation
#   content_type_conformance     the content type is the documented one
#   response_schema_conformance  the body matches the documented schema
# Any finding fails the test.
#
# Reproducing a finding: the output names each failing case with a curl command (credentials
# filtered) and the seed. The same seed against the same binary sends the same requests:
#   OPENAPI_FUZZ_SEED=<seed> tests/interop/run.sh test_openapi.sh
# OPENAPI_FUZZ_EXAMPLES (default 30) sets the examples per operation and phase; the work
# directory (kept on failure) holds the server log and schemathesis' reports (JUnit, and a VCR
# cassette of every request and answer).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEED="${OPENAPI_FUZZ_SEED:-1}"
EXAMPLES="${OPENAPI_FUZZ_EXAMPLES:-30}"
SCHEMATHESIS="$INTEROP_DIR/.venv/bin/schemathesis"
[[ -x "$SCHEMATHESIS" ]] ||
    fail "schemathesis is not installed in $INTEROP_DIR/.venv (.ci/run's tools step installs it)"

# Failed-authentication throttling is off for this server: schemathesis sends missing and wrong
# credentials on purpose, and with throttling the address would soon be locked out — every
# later request answering 429 (documented, so nothing would be tested any more) or waiting for
# the slowed-down answers of an identity under attack.
start_drover --auth-throttle false

step "a little data for the operations to find"
http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps -H 'content-type: application/json' \
    -d '{"metadata":{"name":"oa-app","labels":{"env":"ci","tier":"a"},"annotations":{"note":"openapi"}}}'
expect_status 201 "create application oa-app"
http_as admin "$ADMIN_TOKEN" POST /api/registry/v1alpha1/apps/oa-app/devices \
    -H 'content-type: application/json' \
    -d '{"metadata":{"name":"oa-dev","labels":{"env":"ci"}},"spec":{"authentication":{"credentials":[{"pass":"s3cret"}]},"alias":["oa-alias"]}}'
expect_status 201 "create device oa-dev"
create_user oa-user >/dev/null
http_as admin "$ADMIN_TOKEN" PUT /api/admin/v1alpha1/apps/oa-app/members \
    -H 'content-type: application/json' -d '{"members":{"oa-user":{"role":"reader"}}}'
expect_status 204 "oa-user reads oa-app"

step "schemathesis $("$SCHEMATHESIS" --version | awk '{print $NF}'): seed $SEED, $EXAMPLES examples per operation"
report_dir="$WORK_DIR/schemathesis"
mkdir -p "$report_dir"
set +e
# In the work directory: schemathesis' caches land there and go with it.
# schemathesis_hooks.py: a serializer for the CSR media type (application/pkcs10).
(cd "$WORK_DIR" && PYTHONPATH="$INTEROP_DIR" SCHEMATHESIS_HOOKS=schemathesis_hooks "$SCHEMATHESIS" --config-file "$INTEROP_DIR/schemathesis.toml" run \
    "$DROVER_URL/api/openapi.json" \
    --auth "admin:$ADMIN_TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 \
    --report junit,vcr --report-dir "$report_dir" \
    --no-color) 2>&1 | tee "$WORK_DIR/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e
LAST_OUTPUT="$(tail -n 30 "$WORK_DIR/schemathesis.log")"
LAST_RC=$rc
[[ $rc -eq 0 ]] || fail "schemathesis found answers the OpenAPI document does not describe (seed $SEED); see above"
tested="$(sed -n 's/^ *Tested: *\([0-9]*\).*/\1/p' "$WORK_DIR/schemathesis.log")"
[[ "${tested:-0}" -ge 30 ]] || fail "schemathesis tested ${tested:-no} operations; the document has more"
ok "every answer of $tested operations matched the document"

step "the run left the server usable"
http_as admin "$ADMIN_TOKEN" GET /api/admin/v1alpha1/user/whoami
expect_status 200 "the administrator's token still works"
http GET /health/ready
expect_status 200 "the server is ready"
