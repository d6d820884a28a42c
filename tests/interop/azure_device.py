#!/usr/bin/env python3
"""An unmodified Azure IoT device SDK (azure-iot-device 2.14, Microsoft's, on PyPI) against
Drover: connect with a SAS key over MQTTS with the development CA, send telemetry with
properties, read the twin, report properties, receive a desired-property patch, a
cloud-to-device message and a direct method, all triggered through Drover's API.

The SDK hard-codes port 8883; the harness redirects that one connection to Drover's MQTTS port
(Drover itself is not told anything).

usage: azure_device.py <mqtts port> <ca file> <hub host name> <device> <key> <api url> <app>
                       <api user> <api token>
"""
import base64
import json
import sys
import threading
import urllib.request

import paho.mqtt.client as mqtt

(PORT, CA_FILE, HUB, DEVICE, KEY, API, APP, USER, TOKEN) = sys.argv[1:]

_connect = mqtt.Client.connect


def _redirected(self, host, port=1883, keepalive=60, *args, **kwargs):
    return _connect(self, host, int(PORT) if port == 8883 else port, keepalive, *args, **kwargs)


mqtt.Client.connect = _redirected

from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse  # noqa: E402


def api(method, path, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(API + path, data=data, method=method)
    auth = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    req.add_header("authorization", f"Basic {auth}")
    if data is not None:
        req.add_header("content-type", content_type)
    with urllib.request.urlopen(req, timeout=20) as resp:
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


with open(CA_FILE) as f:
    ca = f.read()
client = IoTHubDeviceClient.create_from_symmetric_key(
    symmetric_key=KEY,
    hostname=HUB,
    device_id=DEVICE,
    gateway_hostname="localhost",
    server_verification_cert=ca,
)
client.connect()
check(client.connected, "connected with a SAS key over MQTTS (development CA)")

msg = Message('{"temp": 21.5}', content_encoding="utf-8", content_type="application/json")
msg.message_id = "m-1"
msg.custom_properties["room"] = "kitchen"
client.send_message(msg)
check(True, "telemetry with properties sent (PUBACK received)")

twin = client.get_twin()
check(twin["desired"]["$version"] == 1 and twin["reported"]["$version"] == 1, f"twin read: {twin}")
client.patch_twin_reported_properties({"firmware": "1.2"})
status, twin = api("GET", f"/api/registry/v1alpha1/apps/{APP}/devices/{DEVICE}/twin")
check(twin["reported"] == {"firmware": "1.2"} and twin["reportedVersion"] == 2,
      f"reported properties in the registry: {twin}")

desired = threading.Event()
c2d = threading.Event()
got = {}


def on_patch(patch):
    got["desired"] = patch
    desired.set()


def on_message(message):
    got["c2d"] = message
    c2d.set()


def on_method(request):
    got["method"] = request
    client.send_method_response(MethodResponse.create_from_method_request(request, 200, {"rebooting": True}))


client.on_twin_desired_properties_patch_received = on_patch
client.on_message_received = on_message
client.on_method_request_received = on_method

api("PATCH", f"/api/registry/v1alpha1/apps/{APP}/devices/{DEVICE}/twin/desired", {"interval": 30},
    "application/merge-patch+json")
check(desired.wait(10) and got["desired"] == {"interval": 30, "$version": 2},
      f"desired patch received: {got.get('desired')}")

status, _ = api("POST", f"/api/command/v1alpha1/apps/{APP}/devices/{DEVICE}?command=blink", b"3", "text/plain")
check(status == 202 and c2d.wait(10) and got["c2d"].data == b"3",
      f"cloud-to-device message received: {got.get('c2d') and got['c2d'].data}")
check(got["c2d"].custom_properties.get("command") == "blink", "the command name is a property")

status, body = api("POST", f"/api/command/v1alpha1/apps/{APP}/devices/{DEVICE}?command=reboot&timeout=10",
                   {"delay": 1})
check(status == 200 and body == {"rebooting": True} and got["method"].name == "reboot",
      f"direct method answered: {status} {body}")

client.shutdown()
print("ALL OK", flush=True)
