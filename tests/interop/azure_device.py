#!/usr/bin/env python3
"""An unmodified Azure IoT device SDK (azure-iot-device 2.14, Microsoft's, on PyPI) against
Drover, as a device given only its hub host name (`<app>.<hub domain>`), its credential and the
development CA.

The SDK connects to port 8883 (MQTT) or 443 (MQTT over WebSocket) of the hub host name. The
harness stands in for DNS: connections to `*.<hub domain>` go to 127.0.0.1, ports 8883 and 443 to
Drover's MQTTS and HTTPS device ports. TLS is untouched: the SDK checks that Drover's certificate
names the hub host name (Drover runs with `--hub-domain`, so the development certificate names
`*.<hub domain>`).

Scenarios:
  full      SAS key: telemetry with properties, twin read and reported patch, a desired patch
            through the API, a cloud-to-device message sent with `drover cmd`, a direct method
            invoked through the API
  x509      X.509 certificate: telemetry and a twin read
  takeover  two clients with the same identity: the second connection drops the first
  provision the SDK's ProvisioningDeviceClient registers (symmetric key: --key, or --group-key
            from which the device key is derived) with --id-scope at dps.<hub domain>, then
            connects to the hub it was assigned and sends telemetry; with --expect-refusal the
            registration must fail

usage: azure_device.py SCENARIO --transport mqtt|websockets --hub HOST --device ID
           (--key KEY | --cert FILE --cert-key FILE) --ca FILE --mqtts-port P --https-port P
           [--api URL --app APP --user U --token T --drover BIN]
"""
import argparse
import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

p = argparse.ArgumentParser()
p.add_argument("scenario", choices=["full", "x509", "takeover", "provision"])
p.add_argument("--id-scope")
p.add_argument("--group-key")
p.add_argument("--expect-refusal", action="store_true")
p.add_argument("--transport", choices=["mqtt", "websockets"], default="mqtt")
p.add_argument("--hub", required=True)
p.add_argument("--device", required=True)
p.add_argument("--key")
p.add_argument("--cert")
p.add_argument("--cert-key")
p.add_argument("--ca", required=True)
p.add_argument("--mqtts-port", type=int, required=True)
p.add_argument("--https-port", type=int, required=True)
p.add_argument("--api")
p.add_argument("--app")
p.add_argument("--user")
p.add_argument("--token")
p.add_argument("--drover")
args = p.parse_args()

HUB_DOMAIN = args.hub.split(".", 1)[1]
PORTS = {8883: args.mqtts_port, 443: args.https_port}
_create_connection = socket.create_connection


def _resolved(address, *a, **kw):
    """DNS for the test: the hub domain is this machine, its well-known ports Drover's."""
    host, port = address[0], address[1]
    if host == HUB_DOMAIN or host.endswith("." + HUB_DOMAIN):
        address = ("127.0.0.1", PORTS.get(port, port))
    return _create_connection(address, *a, **kw)


socket.create_connection = _resolved

from azure.iot.device import (  # noqa: E402
    IoTHubDeviceClient, Message, MethodResponse, ProvisioningDeviceClient, X509)

WEBSOCKETS = args.transport == "websockets"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def api(method, path, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(args.api + path, data=data, method=method)
    auth = base64.b64encode(f"{args.user}:{args.token}".encode()).decode()
    req.add_header("authorization", f"Basic {auth}")
    if data is not None:
        req.add_header("content-type", content_type)
    with urllib.request.urlopen(req, timeout=20) as resp:
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)


def client(**kw):
    kw.update(hostname=args.hub, device_id=args.device, server_verification_cert=open(args.ca).read(),
              websockets=WEBSOCKETS)
    if args.cert:
        return IoTHubDeviceClient.create_from_x509_certificate(x509=X509(args.cert, args.cert_key), **kw)
    return IoTHubDeviceClient.create_from_symmetric_key(symmetric_key=args.key, **kw)


def send_telemetry(c):
    msg = Message('{"temp": 21.5}', content_encoding="utf-8", content_type="application/json")
    msg.message_id = "m-1"
    msg.custom_properties["room"] = "kitchen"
    msg.custom_properties["transport"] = args.transport
    c.send_message(msg)
    check(True, "telemetry with properties sent (PUBACK received)")


def full():
    c = client()
    c.connect()
    check(c.connected, f"connected with a SAS key ({args.transport})")
    send_telemetry(c)

    twin = c.get_twin()
    check(twin["desired"]["$version"] == 1 and twin["reported"]["$version"] == 1, f"twin read: {twin}")
    c.patch_twin_reported_properties({"firmware": "1.2"})
    _, twin = api("GET", f"/api/registry/v1alpha1/apps/{args.app}/devices/{args.device}/twin")
    check(twin["reported"] == {"firmware": "1.2"} and twin["reportedVersion"] == 2,
          f"reported properties in the registry: {twin}")

    desired, c2d, got = threading.Event(), threading.Event(), {}

    def on_patch(patch):
        got["desired"] = patch
        desired.set()

    def on_message(message):
        got["c2d"] = message
        c2d.set()

    def on_method(request):
        got["method"] = request
        c.send_method_response(MethodResponse.create_from_method_request(request, 200, {"rebooting": True}))

    c.on_twin_desired_properties_patch_received = on_patch
    c.on_message_received = on_message
    c.on_method_request_received = on_method

    api("PATCH", f"/api/registry/v1alpha1/apps/{args.app}/devices/{args.device}/twin/desired",
        {"interval": 30}, "application/merge-patch+json")
    check(desired.wait(10) and got["desired"] == {"interval": 30, "$version": 2},
          f"desired patch received: {got.get('desired')}")

    out = subprocess.run([args.drover, "cmd", args.device, "blink", "--app", args.app, "--payload", "3"],
                         capture_output=True, text=True, timeout=30)
    check(out.returncode == 0, f"drover cmd: {out.stdout}{out.stderr}")
    check(c2d.wait(10) and got["c2d"].data == b"3",
          f"cloud-to-device message received: {got.get('c2d') and got['c2d'].data}")
    check(got["c2d"].custom_properties.get("command") == "blink", "the command name is a property")

    status, body = api("POST", f"/api/command/v1alpha1/apps/{args.app}/devices/{args.device}?command=reboot&timeout=10",
                       {"delay": 1})
    check(status == 200 and body == {"rebooting": True} and got["method"].name == "reboot",
          f"direct method answered: {status} {body}")
    c.shutdown()


def x509():
    c = client()
    c.connect()
    check(c.connected, f"connected with an X.509 certificate ({args.transport})")
    send_telemetry(c)
    twin = c.get_twin()
    check("desired" in twin and "reported" in twin, f"twin read: {twin}")
    c.shutdown()


def takeover():
    first = client(connection_retry=False)
    lost = threading.Event()

    def on_change():
        if not first.connected:
            lost.set()

    first.on_connection_state_change = on_change
    first.connect()
    check(first.connected, "the first client is connected")
    second = client()
    second.connect()
    check(second.connected, "a second client with the same identity connects")
    check(lost.wait(10), "the first client's connection was dropped")
    send_telemetry(second)
    time.sleep(1)
    check(second.connected, "the second client stays connected")
    second.shutdown()
    first.shutdown()


def provision():
    key = args.key
    if args.group_key:
        digest = hmac.new(base64.b64decode(args.group_key), args.device.encode(), hashlib.sha256).digest()
        key = base64.b64encode(digest).decode()
    pc = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=f"dps.{HUB_DOMAIN}", registration_id=args.device, id_scope=args.id_scope,
        symmetric_key=key, server_verification_cert=open(args.ca).read(), websockets=WEBSOCKETS)
    pc.provisioning_payload = {"model": "sensor-v2"}
    try:
        result = pc.register()
    except Exception as e:  # noqa: BLE001 - the SDK raises its own kinds
        check(args.expect_refusal, f"registration refused: {type(e).__name__}: {e}")
        return
    check(not args.expect_refusal and result.status == "assigned", f"registration: {result}")
    state = result.registration_state
    check(state.assigned_hub.endswith("." + HUB_DOMAIN), f"assigned hub {state.assigned_hub}")
    c = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id,
        server_verification_cert=open(args.ca).read(), websockets=WEBSOCKETS)
    c.connect()
    check(c.connected, f"connected to {state.assigned_hub} as {state.device_id}")
    send_telemetry(c)
    c.shutdown()


{"full": full, "x509": x509, "takeover": takeover, "provision": provision}[args.scenario]()
print("ALL OK", flush=True)
