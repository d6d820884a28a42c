#!/usr/bin/env python3
"""Read events of an application from Drover's WebSocket integration and print one JSON line
per event. Usage: stream.py WS_URL USER TOKEN COUNT [TIMEOUT_SECONDS]
(connects with from=earliest; exits 1 if fewer than COUNT events arrive in time). COUNT 0: every
event there is, until none comes for two seconds."""
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
while count == 0 or got < count:
    ws.settimeout(2.0 if count == 0 else max(0.1, deadline - time.time()))
    try:
        frame = ws.recv()
    except websocket.WebSocketTimeoutException:
        if count == 0:
            break
        sys.exit(f"only {got} of {count} events within {timeout}s")
    print(json.dumps(json.loads(frame), sort_keys=True), flush=True)
    got += 1
ws.close()
