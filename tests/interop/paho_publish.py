#!/usr/bin/env python3
"""Publish one QoS 1 message with paho-mqtt and wait for its PUBACK.
Usage: paho_publish.py 311|5 HOST PORT USER PASSWORD TOPIC PAYLOAD [CONTENT_TYPE]"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

version, host, port, user, password, topic, payload = sys.argv[1:8]
content_type = sys.argv[8] if len(sys.argv) > 8 else None
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{version}", protocol=protocol)
client.username_pw_set(user, password)
connected, published = threading.Event(), threading.Event()
failure = []


def on_connect(c, userdata, flags, reason_code, properties):
    if reason_code.is_failure:
        failure.append(f"CONNACK {reason_code}")
    connected.set()


def on_publish(c, userdata, mid, reason_code, properties):
    if reason_code.is_failure:
        failure.append(f"PUBACK {reason_code}")
    published.set()


client.on_connect = on_connect
client.on_publish = on_publish
client.connect(host, int(port), keepalive=30)
client.loop_start()
if not connected.wait(10) or failure:
    sys.exit(f"connect failed: {failure or 'timeout'}")
props = None
if version == "5":
    props = Properties(PacketTypes.PUBLISH)
    if content_type:
        props.ContentType = content_type
    props.UserProperty = [("client", "paho")]
client.publish(topic, payload, qos=1, properties=props)
if not published.wait(10) or failure:
    sys.exit(f"publish failed: {failure or 'no PUBACK'}")
client.disconnect()
client.loop_stop()
print("published")
