#!/usr/bin/env python3
"""Subscribe with paho-mqtt and print what arrives, one JSON object per line, after a first line
`subscribed` once the SUBACK granted the subscription.
Usage: paho_subscribe.py 311|5 HOST PORT USER PASSWORD TOPIC COUNT TIMEOUT [binary] [CLIENT_ID]"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

version, host, port, user, password, topic = sys.argv[1:7]
count, timeout = int(sys.argv[7]), float(sys.argv[8])
binary = len(sys.argv) > 9 and sys.argv[9] == "binary"
client_id = sys.argv[10] if len(sys.argv) > 10 else f"sub-{version}"
v5 = version == "5"
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                     protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
client.username_pw_set(user, password)
done = threading.Event()
got = []
failure = []


def on_connect(c, userdata, flags, reason_code, properties):
    if reason_code.is_failure:
        failure.append(f"CONNACK {reason_code}")
        done.set()
        return
    props = None
    if v5 and binary:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.UserProperty = [("content-mode", "binary")]
    c.subscribe(topic, qos=1, properties=props)


def on_subscribe(c, userdata, mid, reason_codes, properties):
    if any(rc.is_failure for rc in reason_codes):
        failure.append(f"SUBACK {[str(rc) for rc in reason_codes]}")
        done.set()
        return
    print("subscribed", flush=True)


def on_message(c, userdata, msg):
    p = getattr(msg, "properties", None)
    out = {"topic": msg.topic, "payload": msg.payload.decode("utf-8", "replace")}
    if p is not None:
        out["content_type"] = getattr(p, "ContentType", None)
        out["user_properties"] = dict(getattr(p, "UserProperty", []) or [])
    print(json.dumps(out, sort_keys=True), flush=True)
    got.append(out)
    if len(got) >= count:
        done.set()


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(host, int(port), keepalive=30)
client.loop_start()
done.wait(timeout)
client.disconnect()
client.loop_stop()
if failure:
    sys.exit(" ".join(failure))
if len(got) < count:
    sys.exit(f"only {len(got)} of {count} messages within {timeout}s")
