"""Schemathesis hooks of test_openapi.sh (loaded through SCHEMATHESIS_HOOKS).

The certificate request operation takes a CSR as `application/pkcs10` (PEM text, a string in the
OpenAPI document). Schemathesis has no serializer for that media type, so generated strings are
sent as the request body as they are, UTF-8 encoded: the API must answer them (mostly 400,
"not a PEM CSR") as the document says.
"""

import schemathesis


@schemathesis.serializer("application/pkcs10")
def pkcs10(ctx, value):
    if isinstance(value, bytes):
        return {"data": value}
    return {"data": str(value).encode("utf-8")}
