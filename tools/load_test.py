#!/usr/bin/env python3
"""Concurrent load test of a local `lesion serve` endpoint (Python 3 standard library only).

    python3 tools/load_test.py --url http://127.0.0.1:PORT/v1/classify --image IMG \\
        --clients 50 --requests 20 [--pid SERVER_PID] [--token T] [--timeout 60]

Starts CLIENTS threads together; each sends REQUESTS raw-body POSTs of IMG (Content-Type from its
extension) over its own keep-alive connection, recording every request's latency and status.
Prints one JSON summary: counts by status, errors, latency percentiles, throughput and, with
--pid, the server's VmRSS / VmHWM before and after. Exits 1 when any request failed other than
with 429 (the server shedding load is expected under overload), 2 on bad usage.

It only ever targets loopback (127.0.0.1, localhost, ::1): any other host is refused.
"""
import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
MAX_ERROR_SAMPLES = 10


def fail_usage(message):
    print(f"load_test: {message}", file=sys.stderr)
    sys.exit(2)


def loopback_target(url):
    """(host, port, path) of URL; refuses anything but plain HTTP to a loopback host."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        fail_usage(f"only http:// URLs are supported, not {url!r}")
    host = parts.hostname or ""
    if host not in LOOPBACK_HOSTS:
        fail_usage(f"refusing to load-test {host!r}: only 127.0.0.1, localhost or ::1")
    if host == "localhost":
        # "localhost" must really resolve to loopback addresses only.
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)}
        if not addrs or not all(a.startswith("127.") or a == "::1" for a in addrs):
            fail_usage(f"localhost resolves to {sorted(addrs)}, not only loopback: refusing")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, parts.port or 80, path


def memory(pid):
    """VmRSS and VmHWM of a process in KiB, from /proc/PID/status (None when unreadable)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key.lower() + "_kib"] = int(value.split()[0])
    except OSError as e:
        return {"error": str(e)}
    return out


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100), at least 1
    return sorted_values[int(rank) - 1]


class Client(threading.Thread):
    """One client: REQUESTS sequential POSTs on one keep-alive connection (reopened after errors)."""

    def __init__(self, index, args, target, body, headers, start_barrier):
        super().__init__(name=f"client-{index}", daemon=True)
        self.args, self.target, self.body, self.headers = args, target, body, headers
        self.start_barrier = start_barrier
        self.results = []  # (status or None, latency_s, error message or None)

    def connect(self):
        host, port, _ = self.target
        return http.client.HTTPConnection(host, port, timeout=self.args.timeout)

    def run(self):
        _, _, path = self.target
        conn = self.connect()
        self.start_barrier.wait()
        for _ in range(self.args.requests):
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=self.body, headers=self.headers)
                resp = conn.getresponse()
                payload = resp.read()
                latency = time.perf_counter() - t0
                error = None
                if not (200 <= resp.status < 300) and resp.status != 429:
                    error = f"HTTP {resp.status}: {payload[:200].decode('utf-8', 'replace')}"
                self.results.append((resp.status, latency, error))
                if resp.will_close:
                    conn.close()
                    conn = self.connect()
            except Exception as e:  # noqa: BLE001 — every failure is recorded, none stops the run
                self.results.append((None, time.perf_counter() - t0, f"{type(e).__name__}: {e}"))
                conn.close()
                conn = self.connect()
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="http://127.0.0.1:PORT/v1/classify (loopback only)")
    ap.add_argument("--image", required=True, help="the image sent as every request's body")
    ap.add_argument("--clients", type=int, default=50, help="concurrent client threads (default 50)")
    ap.add_argument("--requests", type=int, default=20, help="requests per client (default 20)")
    ap.add_argument("--pid", type=int, help="the server's process id, for its memory before and after")
    ap.add_argument("--token", help="bearer token, sent as Authorization: Bearer T")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)")
    args = ap.parse_args()
    if args.clients < 1 or args.requests < 1:
        fail_usage("--clients and --requests must be at least 1")
    if args.timeout <= 0:
        fail_usage("--timeout must be positive")
    if args.pid is not None and not os.path.exists(f"/proc/{args.pid}"):
        fail_usage(f"no process {args.pid}")

    target = loopback_target(args.url)
    try:
        with open(args.image, "rb") as f:
            body = f.read()
    except OSError as e:
        fail_usage(f"cannot read the image: {e}")
    ext = os.path.splitext(args.image)[1].lower()
    headers = {"Content-Type": CONTENT_TYPES.get(ext, "application/octet-stream")}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"

    mem_before = memory(args.pid) if args.pid else None
    # The barrier releases every client at once; the main thread is its last party and starts the clock.
    barrier = threading.Barrier(args.clients + 1)
    clients = [Client(i, args, target, body, headers, barrier) for i in range(args.clients)]
    for c in clients:
        c.start()
    barrier.wait()
    t0 = time.perf_counter()
    for c in clients:
        c.join()
    wall = time.perf_counter() - t0
    mem_after = memory(args.pid) if args.pid else None

    results = [r for c in clients for r in c.results]
    by_status = {}
    for status, _, _ in results:
        key = str(status) if status is not None else "exception"
        by_status[key] = by_status.get(key, 0) + 1
    errors = [e for _, _, e in results if e]
    latencies = sorted(lat * 1000 for status, lat, _ in results if status is not None)
    ok = sum(1 for status, _, _ in results if status is not None and 200 <= status < 300)

    summary = {
        "url": args.url,
        "image": args.image,
        "image_bytes": len(body),
        "clients": args.clients,
        "requests_per_client": args.requests,
        "total": len(results),
        "by_status": dict(sorted(by_status.items())),
        "ok": ok,
        "rejected_429": by_status.get("429", 0),
        "errors": len(errors),
        "error_samples": errors[:MAX_ERROR_SAMPLES],
        # Latency of every request that got an answer (2xx, 429 or other), in milliseconds.
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1) if latencies else None,
            "p95": round(percentile(latencies, 95), 1) if latencies else None,
            "p99": round(percentile(latencies, 99), 1) if latencies else None,
            "max": round(latencies[-1], 1) if latencies else None,
            "mean": round(sum(latencies) / len(latencies), 1) if latencies else None,
        },
        "throughput_rps": round(len(results) / wall, 2) if wall > 0 else None,
        "ok_throughput_rps": round(ok / wall, 2) if wall > 0 else None,
        "wall_s": round(wall, 3),
    }
    if args.pid:
        summary["server_pid"] = args.pid
        summary["server_memory_before"] = mem_before
        summary["server_memory_after"] = mem_after
    print(json.dumps(summary))
    if errors:
        print(f"load_test: {len(errors)} of {len(results)} requests failed (other than 429); "
              f"first: {errors[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
