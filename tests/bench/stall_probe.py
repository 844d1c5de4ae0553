#!/usr/bin/env python3
"""Reads while a node is loaded: GET latency percentiles, and peers seen going down.

    stall_probe.py REDIS_PORT STOP_FILE [HTTP_PORT ...]

Ten clients each send one GET of a random benchmark key (redis-benchmark's `key:%012d`) every
2 ms over their own connection, until STOP_FILE exists. Every HTTP port given is polled for
/v1/status every 200 ms, counting each time a node's view of a peer turns from up to down.
Prints one summary when stopped.
"""

import json
import os
import random
import socket
import sys
import threading
import time
import urllib.request

CLIENTS = 10
PAUSE_S = 0.002
KEYS = 1_000_000


def read_reply(stream):
    line = stream.readline()
    if not line:
        raise ConnectionResetError("connection closed")
    if line.startswith(b"$"):
        length = int(line[1:])
        if length >= 0:
            stream.read(length + 2)
    elif line.startswith(b"-"):
        raise RuntimeError(line.decode(errors="replace").strip())


def client(port, stop_file, latencies, errors, seed):
    rng = random.Random(seed)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = sock.makefile("rb")
    while not os.path.exists(stop_file):
        key = b"key:%012d" % rng.randrange(KEYS)
        request = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
        started = time.perf_counter()
        try:
            sock.sendall(request)
            read_reply(stream)
            latencies.append(time.perf_counter() - started)
        except RuntimeError as error:
            errors.append(str(error))
        except OSError as error:
            errors.append(f"connection lost: {error}")
            return
        time.sleep(PAUSE_S)


def poller(ports, stop_file, downs):
    seen = {}
    while not os.path.exists(stop_file):
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=5) as reply:
                    status = json.load(reply)
            except OSError:
                continue
            for member in status.get("members", []):
                key = (port, member.get("node"))
                state = member.get("state")
                if seen.get(key) == "up" and state == "down":
                    downs.append((time.time(), port, member.get("node")))
                seen[key] = state
        time.sleep(0.2)


def percentile(sorted_values, fraction):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def main():
    port, stop_file = int(sys.argv[1]), sys.argv[2]
    http_ports = [int(arg) for arg in sys.argv[3:]]
    latencies, errors, downs = [], [], []
    threads = [
        threading.Thread(target=client, args=(port, stop_file, latencies, errors, seed))
        for seed in range(CLIENTS)
    ]
    if http_ports:
        threads.append(threading.Thread(target=poller, args=(http_ports, stop_file, downs)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = sorted(latencies)
    ms = lambda seconds: f"{seconds * 1000:.2f}"
    slow = sum(1 for value in values if value > 0.1)
    print(
        f"GET during the load: {len(values)} reads, p50 {ms(percentile(values, 0.5))} ms, "
        f"p99 {ms(percentile(values, 0.99))} ms, p999 {ms(percentile(values, 0.999))} ms, "
        f"max {ms(values[-1] if values else float('nan'))} ms, {slow} over 100 ms, {len(errors)} errors"
    )
    if errors:
        print(f"first error: {errors[0]}")
    if http_ports:
        print(f"peer-down transitions seen: {len(downs)}")


if __name__ == "__main__":
    main()
