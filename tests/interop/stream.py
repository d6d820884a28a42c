#!/usr/bin/env python3
"""Read events of an application from Drover's WebSocket integration and print one JSON line
per event. Usage: stream.py WS_URL USER TOKEN COUNT [TIMEOUT_SECONDS]
(connects with from=earliest; exits 1 if fewer than COUNT events arrive in time)."""
import base64
import json
import sys
import time

import websocket  # websocket-client

url, user, token, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 20.0
auth = base64.b64encode(f"{user}:{token}".encode()).decode()
sep = "&" if "?" in url else "?"
ws = websocket.create_connection(f"{url}{sep}from=earliest", header=[f"Authorization: Basic {auth}"], timeout=timeout)
deadline = time.time() + timeout
got = 0
while got < count:
    ws.settimeout(max(0.1, deadline - time.time()))
    try:
        frame = ws.recv()
    except websocket.WebSocketTimeoutException:
        sys.exit(f"only {got} of {count} events within {timeout}s")
    print(json.dumps(json.loads(frame), sort_keys=True), flush=True)
    got += 1
ws.close()
