"""Verifies one delivery's signatures with code independent of sluice: the
`standardwebhooks` library from PyPI for the Standard Webhooks headers, and
Python's own hmac for `X-Signature`.

Reads {"secret": "whsec_...", "headers": {...}, "body": "..."} on stdin.
Prints which signatures verify as JSON, e.g.
{"standard_webhooks": true, "x_signature": false}; a profile whose headers
are absent is null.
"""

import base64
import hashlib
import hmac
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

request = json.load(sys.stdin)
secret, headers, body = request["secret"], request["headers"], request["body"]

result = {"standard_webhooks": None, "x_signature": None}
if "webhook-signature" in headers:
    try:
        Webhook(secret).verify(body, headers)
        result["standard_webhooks"] = True
    except WebhookVerificationError:
        result["standard_webhooks"] = False
if "x-signature" in headers:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    result["x_signature"] = hmac.compare_digest(expected, headers["x-signature"])
print(json.dumps(result))
