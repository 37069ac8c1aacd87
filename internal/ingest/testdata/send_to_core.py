"""A service built on the old Python connector, pointed at bhiv ingest.

send_to_core is the old connector's function, unchanged: it POSTs the
service's payload dict itself as the JSON body. Only BHIV_CORE_URL changes,
to bhiv ingest's /bhiv/core. send_with_retries is what a careful service
adds: a stable Idempotency-Key, and another try after Retry-After on 503.

Usage: send_to_core.py send PAYLOAD_JSON
       send_to_core.py retry PAYLOAD_JSON IDEMPOTENCY_KEY
Each answer is printed as one JSON line: {"status", "retry_after", "body"}.
"""
import json
import os
import sys
import time

import requests

BHIV_CORE_URL = os.environ["BHIV_CORE_URL"]


def send_to_core(payload):
    return requests.post(BHIV_CORE_URL, json=payload, timeout=5)


def show(r):
    print(json.dumps({"status": r.status_code, "retry_after": r.headers.get("Retry-After"), "body": r.json()}), flush=True)


def send_with_retries(payload, key, attempts=20):
    for _ in range(attempts):
        r = requests.post(BHIV_CORE_URL, json=payload, headers={"Idempotency-Key": key}, timeout=5)
        show(r)
        if r.status_code != 503:
            return r
        time.sleep(float(r.headers["Retry-After"]))
    return r


if __name__ == "__main__":
    mode, payload = sys.argv[1], json.loads(sys.argv[2])
    if mode == "send":
        r = send_to_core(payload)
        show(r)
        r.raise_for_status()  # the old connector's check: a 202 passes it
    else:
        r = send_with_retries(payload, sys.argv[3])
        sys.exit(0 if r.status_code == 202 else 1)
