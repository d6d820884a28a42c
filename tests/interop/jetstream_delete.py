#!/usr/bin/env python3
"""Deletes the JetStream streams whose names start with a prefix (case-insensitive), speaking the
NATS protocol directly (standard library only): a test removes what it created on a shared
server. Usage: jetstream_delete.py nats://host:port PREFIX"""
import json
import socket
import sys
from urllib.parse import urlparse


def main():
    url, prefix = urlparse(sys.argv[1]), sys.argv[2].upper()
    sock = socket.create_connection((url.hostname, url.port or 4222), timeout=10)
    f = sock.makefile("rb")
    f.readline()  # INFO
    sock.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB _INBOX.cleanup 1\r\n')

    def request(subject, body=b"{}"):
        sock.sendall(b"PUB %s _INBOX.cleanup %d\r\n%s\r\n" % (subject.encode(), len(body), body))
        while True:
            line = f.readline()
            if not line:
                raise SystemExit("NATS closed the connection")
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                return json.loads(f.read(size + 2)[:-2] or b"{}")

    names, offset = [], 0
    while True:
        page = request("$JS.API.STREAM.NAMES", json.dumps({"offset": offset}).encode())
        batch = page.get("streams") or []
        names += batch
        offset += len(batch)
        if not batch or offset >= page.get("total", 0):
            break
    for name in names:
        if name.upper().startswith(prefix) or name.upper().startswith("KV_" + prefix):
            request("$JS.API.STREAM.DELETE." + name)


if __name__ == "__main__":
    main()
