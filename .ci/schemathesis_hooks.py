"""wagate's schemathesis hooks: a server-error check that knows the documented 5xx answers.

`not_a_server_error` fails on every 5xx. wagate documents two 5xx answers that are not its own
failures: 502 `upstream_unavailable` (the session cannot reach WhatsApp, which is always the
case here: CI has no internet), 504 `timeout`, and 501 `not_implemented` (an ability the
session's engine does not offer, e.g. messaging on an engine that does not send yet). This check
fails on any other 5xx (a 500
`internal` is a bug: a panic or an unexpected error), and on a documented 5xx without the
error envelope naming the documented code.
"""
import json

import schemathesis

DOCUMENTED = {501: "not_implemented", 502: "upstream_unavailable", 504: "timeout"}


@schemathesis.check
def no_undocumented_server_error(ctx, response, case):
    status = response.status_code
    if status < 500:
        return None
    if status in DOCUMENTED:
        try:
            code = json.loads(response.text)["error"]["code"]
        except Exception:
            code = None
        if code == DOCUMENTED[status]:
            return None
        raise AssertionError(f"{status} without the `{DOCUMENTED[status]}` error envelope: {response.text[:300]}")
    raise AssertionError(f"server error {status}: {response.text[:300]}")
