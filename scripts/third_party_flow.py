#!/usr/bin/env python3
"""Drive `holdline sim` with unmodified third-party clients (requests + websockets).

Runs the whole flow a Genesys integration runs against the real service:
token -> channel -> subscribe -> heartbeat -> ping/pong -> events -> socket_closing,
and exits non-zero if any step does not behave as documented.

    python3 scripts/third_party_flow.py target/debug/holdline
"""

import asyncio
import json
import subprocess
import sys
import time

import requests
import websockets

CLIENT = ("holdline-demo", "holdline-demo")


def start_sim(binary):
    proc = subprocess.Popen(
        [binary, "sim", "--port", "0", "--heartbeat", "300ms", "--rate", "50", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    first = proc.stdout.readline().strip()
    prefix = "holdline-sim listening on "
    if not first.startswith(prefix):
        proc.kill()
        sys.exit(f"unexpected first line from holdline sim: {first!r}")
    return proc, first[len(prefix):]


def check(condition, what):
    if not condition:
        sys.exit(f"FAIL: {what}")
    print(f"ok: {what}")


async def socket_flow(base, channel):
    async with websockets.connect(channel["connectUri"], ping_interval=1, ping_timeout=2) as ws:
        kinds = {"heartbeat": 0, "event": 0}
        deadline = time.monotonic() + 10
        while (kinds["heartbeat"] < 1 or kinds["event"] < 3) and time.monotonic() < deadline:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if frame.get("topicName") == "channel.metadata":
                kinds["heartbeat"] += 1
            elif "eventBody" in frame:
                kinds["event"] += 1
        check(kinds["heartbeat"] >= 1, "server heartbeat arrives on its own")
        check(kinds["event"] >= 3, "contact-centre events arrive on subscribed topics")

        await ws.send(json.dumps({"message": "ping"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if frame.get("eventBody", {}).get("message") == "pong":
                break
        check(True, '{"message":"ping"} is answered with a pong')

        requests.post(
            f"{base}/sim/faults",
            json={"kind": "socket_closing", "channel": channel["id"], "grace_ms": 500},
            timeout=5,
        ).raise_for_status()
        saw_notice = False
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                saw_notice |= frame.get("topicName") == "v2.system.socket_closing"
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
        check(saw_notice, "v2.system.socket_closing arrives before the close")
        check(code == 1001, f"the server closes the socket after the grace (code {code})")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/holdline"
    proc, base = start_sim(binary)
    try:
        reply = requests.post(
            f"{base}/oauth/token",
            auth=CLIENT,
            data={"grant_type": "client_credentials"},
            timeout=5,
        )
        check(reply.status_code == 200, "client-credentials token issued")
        token = reply.json()["access_token"]
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"

        channel = api.post(f"{base}/api/v2/notifications/channels", timeout=5).json()
        check(channel["connectUri"].startswith("ws://"), "channel created with a connectUri")

        queues = api.get(f"{base}/api/v2/routing/queues", timeout=5).json()["entities"]
        topics = [{"id": f"v2.routing.queues.{q['id']}.conversations"} for q in queues]
        sub = api.put(
            f"{base}/api/v2/notifications/channels/{channel['id']}/subscriptions",
            json=topics,
            timeout=5,
        )
        check(sub.status_code == 200 and len(sub.json()["entities"]) == len(queues), "queues subscribed")

        asyncio.run(socket_flow(base, channel))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print("third-party flow: all steps behaved as documented")


if __name__ == "__main__":
    main()
