"""A loopback HTTP SMS gateway for bench/faults.py: the `http` provider's counterpart, with faults.

It takes `POST /sms {to, from, text, encoding, segments, reference}` (bearer token, `Idempotency-Key`),
answers `{"message_id"}` and, a second later, calls the service back with the delivery receipt
(`POST /v1/sms/receipts/http` with `X-Receipt-Secret`), again and again while the service answers
503 (a receipt for a message it has not recorded yet, or a database that is away). Like a real
gateway it honours the Idempotency-Key: a repeated request gets the first answer and sends nothing.
Every message it takes is one JSON line in `--record` (a test tool: the text holds the code).

Faults, one command a line on stdin:
  fail SECONDS   answer 500 to every submit (nothing taken)
  hang SECONDS   take the message, then answer only after 15 s (past the service's 10 s timeout)

    python tests/harness/sms_gateway.py --port 8125 --record sms.jsonl --receipts http://127.0.0.1:8000/v1/sms/receipts/http
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG_SECONDS = 15.0


class Gateway:
    def __init__(self, record: str, receipts_url: str, secret: str, receipt_delay: float):
        self.record = open(record, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        self.receipts_url, self.secret, self.receipt_delay = receipts_url, secret, receipt_delay
        self.fail_until = 0.0
        self.hang_until = 0.0
        self.ids = itertools.count(1)
        self.taken: dict[str, str] = {}  # Idempotency-Key -> message id
        self.lock = threading.Lock()
        self.due: list[tuple[float, str, int]] = []  # (when, message id, attempt)
        self.due_lock = threading.Condition()
        # Receipts go back over a few connections at a time, as a gateway's callback workers would:
        # a thread per receipt would queue hundreds of requests in front of the redemptions.
        self.callers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="receipt")
        threading.Thread(target=self._receipts, daemon=True, name="receipts").start()

    def submit(self, body: dict, key: str) -> tuple[int, dict]:
        now = time.monotonic()
        if now < self.fail_until:
            return 500, {"error": "gateway failure"}
        with self.lock:
            message_id = self.taken.get(key)
            fresh = message_id is None
            if fresh:
                message_id = f"gw-{next(self.ids)}"
                self.taken[key] = message_id
                self.record.write(
                    json.dumps(
                        {
                            "to": body["to"],
                            "text": body["text"],
                            "segments": body["segments"],
                            "reference": body["reference"],
                            "message_ids": [message_id],
                            "received_at": now,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        if fresh:
            self._schedule(message_id, self.receipt_delay, 0)
        if now < self.hang_until:
            time.sleep(HANG_SECONDS)  # taken, but the answer comes after the client gave up
        return 202, {"message_id": message_id}

    def _schedule(self, message_id: str, delay: float, attempt: int) -> None:
        with self.due_lock:
            self.due.append((time.monotonic() + delay, message_id, attempt))
            self.due_lock.notify()

    def _receipts(self) -> None:
        while True:
            with self.due_lock:
                while not self.due:
                    self.due_lock.wait()
                self.due.sort()
                when, message_id, attempt = self.due[0]
                if when > time.monotonic():
                    self.due_lock.wait(when - time.monotonic())
                    continue
                self.due.pop(0)
            self.callers.submit(self._send_receipt, message_id, attempt)

    def _send_receipt(self, message_id: str, attempt: int) -> None:
        request = urllib.request.Request(
            self.receipts_url,
            data=json.dumps({"message_id": message_id, "status": "delivered"}).encode(),
            headers={"Content-Type": "application/json", "X-Receipt-Secret": self.secret},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code not in (503, 502, 504, 500, 429):
                print(f"receipt {message_id} refused: {exc.code}", file=sys.stderr, flush=True)
                return
        except (urllib.error.URLError, OSError, TimeoutError):
            pass  # the service is away: offer it again
        self._schedule(message_id, min(30.0, 1.0 * 2 ** min(attempt, 5)), attempt + 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--receipts", required=True, help="the service's receipts URL")
    parser.add_argument("--secret", required=True, help="SMS_RECEIPT_SECRET of the service")
    parser.add_argument("--token", default=None, help="the bearer token the service must send")
    parser.add_argument("--receipt-delay", type=float, default=1.0)
    args = parser.parse_args()
    gateway = Gateway(args.record, args.receipts, args.secret, args.receipt_delay)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if args.token and self.headers.get("Authorization") != f"Bearer {args.token}":
                status, answer = 401, {"error": "bad token"}
            else:
                status, answer = gateway.submit(body, self.headers.get("Idempotency-Key", body["reference"]))
            reply = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for line in sys.stdin:
        if not line.strip():
            continue
        name, seconds = line.split()
        if name == "fail":
            gateway.fail_until = time.monotonic() + float(seconds)
        elif name == "hang":
            gateway.hang_until = time.monotonic() + float(seconds)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
