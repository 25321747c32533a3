#!/usr/bin/python3
"""telnyx_standin.py - a local stand-in for Telnyx Call Control, used by the
integration tests, run-all.sh's demo and the benchmarks.  It sends signed
webhooks to the ingress and answers the actuator's Call Control commands.

Subcommands: serve, pubkey, call (see --help).  Standard library + PyNaCl only.
"""

import argparse
import base64
import heapq
import http.client
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


import nacl.signing

DEFAULT_LISTEN = "127.0.0.1:3100"
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:3000/webhooks/telnyx"
CONNECTION_ID = "2811212257810187875"


class StandinHTTPServer(ThreadingHTTPServer):
    """A listen backlog that takes bursts of concurrent commands and calls."""
    request_queue_size = 256
WEBHOOK_TIMEOUT_S = 2.0          # Telnyx's delivery deadline
WEBHOOK_MAX_RETRIES = 5          # retries after the first attempt
MAX_REQUEST_BYTES = 1 << 20

ERR_AUTH = (401, "10009", "Authentication failed")
ERR_CCID = (404, "90015", "Invalid Call Control ID")
ERR_ENDED = (422, "90018", "Call has already ended")
ERR_NOT_ANSWERED = (422, "90034", "Call has not been answered yet")
ERR_UNEXPECTED = (500, "10007", "Unexpected error")
ERR_RATE = (429, "10011", "Too many requests")
ERR_JSON = (400, "10023", "Invalid JSON")
ERR_MISSING = (422, "10004", "Missing required parameter")
ERR_CLIENT_STATE = (422, "90017", "Invalid value for client_state")
ERR_NOT_FOUND = (404, "10005", "Resource not found")

ACTIONS = ("answer", "speak", "hangup", "reject", "transfer")


def log(msg):
    sys.stderr.write("standin: %s\n" % msg)
    sys.stderr.flush()


def now_rfc3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def error_body(code, title, detail=None):
    e = {"code": code, "title": title}
    if detail:
        e["detail"] = detail
    return {"errors": [e]}


# --- keys ------------------------------------------------------------------

def key_load(path):
    """Load the Ed25519 signing key (base64 32-byte seed) from path, creating
    it with mode 0600 if the file does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            text = f.read().strip()
        try:
            seed = base64.b64decode(text, validate=True)
        except ValueError:
            raise SystemExit("standin: %s: not base64" % path)
        if len(seed) != 32:
            raise SystemExit("standin: %s: key must be a 32-byte seed, got %d bytes" % (path, len(seed)))
        return nacl.signing.SigningKey(seed)
    seed = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(seed) + b"\n")
    return nacl.signing.SigningKey(seed)


def key_public_b64(sk):
    return base64.b64encode(bytes(sk.verify_key)).decode()


def sign(sk, timestamp, body):
    """Telnyx scheme: base64(Ed25519 signature over "<timestamp>|<body>")."""
    sig = sk.sign(timestamp.encode() + b"|" + body).signature
    return base64.b64encode(sig).decode()


# --- webhook delivery -------------------------------------------------------

class Delivery:
    """One webhook body to deliver, with its retry state."""

    def __init__(self, event, body_obj, leg):
        self.event = event          # dict in the call's webhook list
        self.body_obj = body_obj
        self.leg = leg
        self.attempt = 1
        self.done = threading.Event()


class Deliverer:
    """Background workers that POST signed webhooks, retrying non-2xx and
    connection errors with exponential backoff (fresh timestamp/signature)."""

    def __init__(self, sk, url, workers, retry_base_s, verbose):
        self.sk = sk
        self.url = url
        self.parsed = urllib.parse.urlsplit(url)
        self.retry_base_s = retry_base_s
        self.verbose = verbose
        self.heap = []
        self.seq = 0
        self.cv = threading.Condition()
        self.stopping = False
        self.threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, delivery, delay_s=0.0):
        with self.cv:
            self.seq += 1
            heapq.heappush(self.heap, (time.monotonic() + delay_s, self.seq, delivery))
            self.cv.notify()

    def stop(self):
        with self.cv:
            self.stopping = True
            self.cv.notify_all()

    def _next(self):
        with self.cv:
            while not self.stopping:
                if self.heap:
                    due = self.heap[0][0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self.heap)[2]
                    self.cv.wait(wait)
                else:
                    self.cv.wait()
            return None

    def _connect(self):
        host = self.parsed.hostname or "127.0.0.1"
        port = self.parsed.port or (443 if self.parsed.scheme == "https" else 80)
        if self.parsed.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=WEBHOOK_TIMEOUT_S)
        return http.client.HTTPConnection(host, port, timeout=WEBHOOK_TIMEOUT_S)

    def post(self, conn, body, headers):
        """POST body on conn (reconnecting once if a kept-alive connection
        went stale).  Returns (conn, status, answer bytes); status 0 on a
        connection error or timeout."""
        path = self.parsed.path or "/"
        if self.parsed.query:
            path += "?" + self.parsed.query
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect()
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                answer = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                return conn, resp.status, answer
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                conn = None
                stale = isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if not (reused and stale):
                    return None, 0, str(e).encode()
                reused = False

    def signed_headers(self, body, ts=None):
        ts = ts or str(int(time.time()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "telnyx-webhooks",
            "telnyx-timestamp": ts,
            "telnyx-signature-ed25519": sign(self.sk, ts, body),
        }

    def _worker(self):
        conn = None
        while True:
            d = self._next()
            if d is None:
                if conn is not None:
                    conn.close()
                return
            d.body_obj["meta"] = {"attempt": d.attempt, "delivered_to": self.url}
            body = compact(d.body_obj).encode()
            conn, status, answer = self.post(conn, body, self.signed_headers(body))
            d.event["status"] = status
            d.event["attempts"] = d.attempt
            ev = d.body_obj["data"]
            if self.verbose:
                log("webhook %s id=%s attempt %d -> %s" % (ev["event_type"], ev["id"], d.attempt, status or "no answer"))
            if 200 <= status < 300:
                d.done.set()
                continue
            if d.attempt > WEBHOOK_MAX_RETRIES:
                log("webhook %s id=%s given up after %d attempts (last: %s %s)" %
                    (ev["event_type"], ev["id"], d.attempt, status or "no answer",
                     answer[:200].decode(errors="replace")))
                d.done.set()
                continue
            delay = self.retry_base_s * (2 ** (d.attempt - 1))
            log("webhook %s id=%s attempt %d failed (%s), retry in %.1fs" %
                (ev["event_type"], ev["id"], d.attempt, status or "no answer", delay))
            d.attempt += 1
            self.submit(d, delay)


# --- call simulation ----------------------------------------------------------

class Leg:
    """One call leg: the state Telnyx keeps per call_control_id.

    parked --answer--> answered --speak--> speaking --(speech done)--> answered
       |                   |                  |
       +--transfer--> bridged                 +--hangup--> hungup (speak.ended call_hangup)
       +--reject/hangup----+--hangup------------------> hungup
    """

    def __init__(self, frm, to, direction, session_id=None, client_state=None):
        self.ccid = "v3:" + secrets.token_urlsafe(36)
        self.leg_id = str(uuid.uuid4())
        self.session_id = session_id or str(uuid.uuid4())
        self.frm = frm
        self.to = to
        self.direction = direction
        self.state = "parked"
        self.client_state = client_state
        self.start_time = now_rfc3339()
        self.webhooks = []
        self.command_ids = set()
        self.transfer_to = None
        self.peer = None            # the other leg of a transfer
        self.speak_token = 0        # which speak is current
        self.speak_id = None
        self.commands = []          # command requests for this leg

    def ended(self):
        return self.state == "hungup"


class Standin:
    def __init__(self, args):
        self.sk = key_load(args.key_file)
        self.api_key = args.api_key
        self.record_path = args.record
        self.duplicate = args.duplicate_webhooks
        self.speak_s = args.speak_ms / 1000.0
        self.verbose = args.verbose
        self.lock = threading.Lock()
        self.calls = {}
        self.commands = []
        self.faults = {}
        self.deliverer = Deliverer(self.sk, args.webhook_url, args.workers, args.retry_base_ms / 1000.0, args.verbose)

    # Webhooks --------------------------------------------------------------

    def emit(self, leg, event_type, extra=None, delay_s=0.0):
        """Queue one webhook for leg (caller holds the lock).  Returns the
        Delivery (its .done is set once delivered or given up)."""
        payload = {
            "call_control_id": leg.ccid,
            "call_leg_id": leg.leg_id,
            "call_session_id": leg.session_id,
            "client_state": leg.client_state,
            "connection_id": CONNECTION_ID,
            "from": leg.frm,
            "to": leg.to,
            "start_time": leg.start_time,
        }
        if extra:
            payload.update(extra)
        wid = str(uuid.uuid4())
        body = {"data": {"event_type": event_type, "id": wid, "occurred_at": now_rfc3339(),
                         "payload": payload, "record_type": "event"}}
        event = {"event_type": event_type, "id": wid, "status": None, "attempts": 0}
        leg.webhooks.append(event)
        first = Delivery(event, body, leg)
        self.deliverer.submit(first, delay_s)
        if self.duplicate:
            twin_event = {"event_type": event_type, "id": wid, "status": None, "attempts": 0, "duplicate": True}
            leg.webhooks.append(twin_event)
            self.deliverer.submit(Delivery(twin_event, json.loads(compact(body)), leg), delay_s)
        return first

    def place_call(self, req):
        frm, to = req.get("from"), req.get("to")
        if not isinstance(frm, str) or not isinstance(to, str) or not frm or not to:
            return 422, {"error": "bad_request", "detail": "from and to are required strings"}
        direction = req.get("direction", "incoming")
        if direction not in ("incoming", "outgoing"):
            return 422, {"error": "bad_request", "detail": "direction must be incoming or outgoing"}
        extra = {"direction": direction, "state": "parked", "caller_id_name": frm,
                 "calling_party_type": "pstn", "custom_headers": [], "sip_headers": [],
                 "offered_codecs": "PCMU,G729", "connection_codecs": "PCMA,PCMU", "tags": []}
        att = req.get("attestation")
        if att is not None:
            if att not in ("A", "B", "C"):
                return 422, {"error": "bad_request", "detail": "attestation must be A, B or C"}
            extra["shaken_stir_attestation"] = att
            extra["shaken_stir_validated"] = bool(req.get("validated", True))
        token = req.get("token")
        if token is not None:
            if not isinstance(token, str):
                return 422, {"error": "bad_request", "detail": "token must be a string"}
            extra["custom_headers"] = [{"name": "X-Namespace-Token", "value": token}]
        with self.lock:
            leg = Leg(frm, to, direction)
            self.calls[leg.ccid] = leg
            d = self.emit(leg, "call.initiated", extra)
        delivered = d.done.wait(WEBHOOK_TIMEOUT_S + 1)
        return 200, {"call_control_id": leg.ccid, "call_session_id": leg.session_id,
                     "webhook_id": d.event["id"], "delivered": delivered,
                     "webhook_status": d.event["status"]}

    def caller_hangup(self, ccid):
        with self.lock:
            leg = self.calls.get(ccid)
            if leg is None:
                return 404, {"error": "not_found", "detail": "no such call"}
            if leg.ended():
                return 409, {"error": "ended", "detail": "call already ended"}
            self._hangup(leg, "normal_clearing", "caller", "200")
        return 200, {"result": "ok"}

    def _hangup(self, leg, cause, source, sip_cause):
        """End leg (and its bridged peer).  Caller holds the lock."""
        for lg in (leg, leg.peer):
            if lg is None or lg.ended():
                continue
            if lg.state == "speaking":
                lg.speak_token += 1
                self.emit(lg, "call.speak.ended", {"status": "call_hangup", "speak_id": lg.speak_id})
            lg.state = "hungup"
            self.emit(lg, "call.hangup", {"hangup_cause": cause, "hangup_source": source,
                                          "sip_hangup_cause": sip_cause, "end_time": now_rfc3339(),
                                          "state": "hangup", "call_quality_stats": None})

    def _speak_done(self, ccid, token):
        with self.lock:
            leg = self.calls.get(ccid)
            if leg is None or leg.state != "speaking" or leg.speak_token != token:
                return
            leg.state = "answered"
            self.emit(leg, "call.speak.ended", {"status": "completed", "speak_id": leg.speak_id})

    # Commands ----------------------------------------------------------------

    def _check_action(self, leg, action, body):
        """Validate a command against the leg's state.  Returns an error
        tuple or None."""
        cs = body.get("client_state")
        if cs is not None:
            try:
                if not isinstance(cs, str):
                    raise ValueError
                base64.b64decode(cs, validate=True)
            except ValueError:
                return ERR_CLIENT_STATE
        if action == "speak":
            if not isinstance(body.get("payload"), str) or not body["payload"] or \
               not isinstance(body.get("voice"), str) or not body["voice"]:
                return ERR_MISSING + ("speak needs payload and voice",)
            if leg.state not in ("answered", "speaking", "bridged"):
                return ERR_NOT_ANSWERED
        if action == "transfer" and (not isinstance(body.get("to"), str) or not body["to"]):
            return ERR_MISSING + ("transfer needs to",)
        if action == "reject" and body.get("cause") not in ("CALL_REJECTED", "USER_BUSY"):
            return ERR_MISSING + ("reject needs cause CALL_REJECTED or USER_BUSY",)
        return None

    def _apply(self, leg, action, body):
        """Perform an accepted command: state change and follow-up webhooks.
        Caller holds the lock."""
        if body.get("client_state") is not None:
            leg.client_state = body["client_state"]
        if action == "answer":
            if leg.state == "parked":
                leg.state = "answered"
                self.emit(leg, "call.answered", {"state": "answered", "codec": "PCMU", "sampling_rate": 8000})
        elif action == "speak":
            leg.state = "speaking"
            leg.speak_token += 1
            leg.speak_id = secrets.token_urlsafe(8)
            self.emit(leg, "call.speak.started", {"speak_id": leg.speak_id})
            token, ccid = leg.speak_token, leg.ccid
            t = threading.Timer(self.speak_s, self._speak_done, (ccid, token))
            t.daemon = True
            t.start()
        elif action == "hangup":
            self._hangup(leg, "normal_clearing", "callee", "200")
        elif action == "reject":
            busy = body.get("cause") == "USER_BUSY"
            self._hangup(leg, "user_busy" if busy else "call_rejected", "callee", "486" if busy else "603")
        elif action == "transfer":
            leg.transfer_to = body["to"]
            new = Leg(body.get("from") or leg.to, body["to"], "outgoing", leg.session_id,
                      body.get("target_leg_client_state"))
            self.calls[new.ccid] = new
            leg.peer, new.peer = new, leg
            self.emit(new, "call.initiated", {"direction": "outgoing", "state": "bridging",
                                              "custom_headers": [], "sip_headers": []})
            new.state = "answered"
            self.emit(new, "call.answered", {"state": "answered"})
            leg.state = new.state = "bridged"
            self.emit(leg, "call.bridged")
            self.emit(new, "call.bridged")

    def command(self, ccid, action, raw, auth):
        """Handle POST /v2/calls/{ccid}/actions/{action}.  Returns (status,
        body, extra headers, delay seconds)."""
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            body = None
        rec = {"time": now_rfc3339(), "call_control_id": ccid, "action": action,
               "body": body if body is not None else raw.decode(errors="replace"),
               "command_id": body.get("command_id") if body else None, "status": None}
        headers, delay = {}, 0.0
        with self.lock:
            status, answer = self._command_locked(ccid, action, body, auth, rec, headers)
            delay = rec.pop("_delay", 0.0)
            rec["status"] = status
            self.commands.append(rec)
            leg = self.calls.get(ccid)
            if leg is not None:
                leg.commands.append(rec)
            if self.record_path:
                with open(self.record_path, "a") as f:
                    f.write(compact(rec) + "\n")
        if self.verbose:
            log("command %s %s -> %d" % (action, ccid, status))
        return status, answer, headers, delay

    def _command_locked(self, ccid, action, body, auth, rec, headers):
        if self.api_key is not None and auth != "Bearer " + self.api_key:
            return ERR_AUTH[0], error_body(*ERR_AUTH[1:])
        if action not in ACTIONS:
            return ERR_NOT_FOUND[0], error_body(ERR_NOT_FOUND[1], ERR_NOT_FOUND[2], "unknown action " + action)
        fault = self.faults.get(action)
        if fault is not None:
            fault["times"] -= 1
            if fault["times"] <= 0:
                del self.faults[action]
            rec["_delay"] = fault.get("delay_ms", 0) / 1000.0
            st = fault.get("status")
            if st is not None:
                if st == 429:
                    headers["Retry-After"] = "1"
                    return st, error_body(*ERR_RATE[1:])
                return st, error_body(ERR_UNEXPECTED[1], ERR_UNEXPECTED[2] if st >= 500 else "Injected failure")
        leg = self.calls.get(ccid)
        if leg is None:
            return ERR_CCID[0], error_body(*ERR_CCID[1:])
        if body is None:
            return ERR_JSON[0], error_body(ERR_JSON[1], ERR_JSON[2], "body must be a JSON object")
        cid = body.get("command_id")
        if cid is not None and cid in leg.command_ids:
            return 200, {"data": {"result": "ok"}}
        if leg.ended():
            return ERR_ENDED[0], error_body(ERR_ENDED[1], ERR_ENDED[2],
                                            "This call is no longer active and can't receive commands.")
        err = self._check_action(leg, action, body)
        if err is not None:
            return err[0], error_body(*err[1:])
        if cid is not None:
            leg.command_ids.add(cid)
        self._apply(leg, action, body)
        return 200, {"data": {"result": "ok"}}

    # Control API -------------------------------------------------------------

    def set_fault(self, req):
        action = req.get("action")
        if action not in ACTIONS:
            return 422, {"error": "bad_request", "detail": "action must be one of " + ", ".join(ACTIONS)}
        status = req.get("status")
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            return 422, {"error": "bad_request", "detail": "status must be an HTTP error status (400-599)"}
        times = req.get("times", 1)
        delay = req.get("delay_ms", 0)
        if not isinstance(times, int) or times < 1 or not isinstance(delay, int) or not 0 <= delay <= 60000:
            return 422, {"error": "bad_request", "detail": "times must be >= 1, delay_ms 0..60000"}
        if status is None and delay == 0:
            return 422, {"error": "bad_request", "detail": "give status and/or delay_ms"}
        with self.lock:
            self.faults[action] = {"status": status, "times": times, "delay_ms": delay}
        return 200, {"result": "ok"}

    def raw_webhook(self, req):
        body = req.get("body")
        if isinstance(body, str):
            data = body.encode()
        elif isinstance(body, (dict, list)):
            data = compact(body).encode()
        else:
            return 422, {"error": "bad_request", "detail": "body must be an object or a string"}
        overrides = req.get("headers") or {}
        if not isinstance(overrides, dict):
            return 422, {"error": "bad_request", "detail": "headers must be an object"}
        lower = {k.lower(): v for k, v in overrides.items()}
        ts = lower.get("telnyx-timestamp")
        headers = {"Content-Type": "application/json", "User-Agent": "telnyx-webhooks"}
        if req.get("sign", True):
            headers = self.deliverer.signed_headers(data, str(ts) if ts is not None else None)
        for k, v in overrides.items():
            for existing in [h for h in headers if h.lower() == k.lower()]:
                del headers[existing]
            if v is not None:
                headers[k] = str(v)
        conn, status, answer = self.deliverer.post(None, data, headers)
        if conn is not None:
            conn.close()
        try:
            parsed = json.loads(answer) if answer else None
        except ValueError:
            parsed = answer.decode(errors="replace")
        return 200, {"status": status, "body": parsed}

    def call_view(self, ccid):
        with self.lock:
            leg = self.calls.get(ccid)
            if leg is None:
                return 404, {"error": "not_found", "detail": "no such call"}
            return 200, {"call_control_id": leg.ccid, "call_session_id": leg.session_id,
                         "from": leg.frm, "to": leg.to, "direction": leg.direction,
                         "state": leg.state, "client_state": leg.client_state,
                         "transfer_to": leg.transfer_to,
                         "peer": leg.peer.ccid if leg.peer else None,
                         "webhooks": [dict(w) for w in leg.webhooks],
                         "commands": [dict(c) for c in leg.commands]}

    def commands_view(self, ccid):
        with self.lock:
            return 200, [dict(c) for c in self.commands if ccid is None or c["call_control_id"] == ccid]

    def reset(self):
        with self.lock:
            self.calls.clear()
            self.commands.clear()
            self.faults.clear()
        return 200, {"result": "ok"}


def make_handler(st):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "telnyx-standin"

        def log_message(self, fmt, *a):
            pass

        def _send(self, status, obj, headers=None):
            data = compact(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _read(self):
            try:
                n = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                n = -1
            if n < 0 or n > MAX_REQUEST_BYTES:
                self.close_connection = True
                return None
            return self.rfile.read(n)

        def _json(self, raw):
            try:
                obj = json.loads(raw) if raw else {}
            except ValueError:
                return None
            return obj if isinstance(obj, dict) else None

        def _control(self, method, parts, query, raw):
            if self.client_address[0] not in ("127.0.0.1", "::1"):
                return 403, {"error": "forbidden", "detail": "control API is for 127.0.0.1 only"}
            name = parts[1] if len(parts) > 1 else ""
            if method == "GET" and name == "health" and len(parts) == 2:
                return 200, {"status": "ok"}
            if method == "GET" and name == "commands" and len(parts) == 2:
                return st.commands_view(query.get("call_control_id", [None])[0])
            if method == "GET" and name == "calls" and len(parts) == 3:
                return st.call_view(parts[2])
            if method == "POST" and name == "reset" and len(parts) == 2:
                return st.reset()
            if method == "POST" and name in ("call", "fail", "webhook") and len(parts) == 2:
                req = self._json(raw)
                if req is None:
                    return 400, {"error": "bad_json", "detail": "body must be a JSON object"}
                return {"call": st.place_call, "fail": st.set_fault, "webhook": st.raw_webhook}[name](req)
            if method == "POST" and name == "calls" and len(parts) == 4 and parts[3] == "hangup":
                return st.caller_hangup(parts[2])
            return 404, {"error": "not_found", "detail": "unknown control request"}

        def _dispatch(self, method):
            url = urllib.parse.urlsplit(self.path)
            parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
            raw = self._read() if method == "POST" else b""
            if raw is None:
                return self._send(413, {"error": "too_large", "detail": "request body too large"})
            if parts[0] == "_control":
                status, obj = self._control(method, parts, urllib.parse.parse_qs(url.query), raw)
                return self._send(status, obj)
            if len(parts) == 5 and parts[0] == "v2" and parts[1] == "calls" and parts[3] == "actions":
                if method != "POST":
                    return self._send(405, error_body("10015", "Method not allowed"))
                status, obj, headers, delay = st.command(parts[2], parts[4], raw,
                                                         self.headers.get("Authorization"))
                if delay > 0:
                    time.sleep(delay)
                return self._send(status, obj, headers)
            return self._send(404, error_body(*ERR_NOT_FOUND[1:]))

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

    return Handler


def parse_hostport(s):
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit("standin: bad address %r (want HOST:PORT)" % s)
    return host or "127.0.0.1", int(port)


def cmd_serve(args):
    st = Standin(args)
    host, port = parse_hostport(args.listen)
    server = StandinHTTPServer((host, port), make_handler(st))
    server.daemon_threads = True
    print("public_key=" + key_public_b64(st.sk), flush=True)
    print("listening=%s:%d" % server.server_address[:2], flush=True)
    log("listening on %s:%d, webhooks to %s%s" % (server.server_address[0], server.server_address[1],
                                                 args.webhook_url,
                                                 " (duplicated)" if args.duplicate_webhooks else ""))

    def on_signal(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.serve_forever(poll_interval=0.2)
    st.deliverer.stop()
    server.server_close()
    log("stopped")
    return 0


def cmd_pubkey(args):
    print(key_public_b64(key_load(args.key_file)), flush=True)
    return 0


def http_json(method, url, obj=None, timeout=10):
    data = compact(obj).encode() if obj is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def cmd_call(args):
    base = args.control.rstrip("/")
    req = {"from": args.from_, "to": args.to}
    if args.attestation:
        req["attestation"] = args.attestation
    if args.token:
        req["token"] = args.token
    try:
        status, placed = http_json("POST", base + "/_control/call", req)
    except (OSError, ValueError) as e:
        sys.stderr.write("standin call: cannot reach %s: %s\n" % (base, e))
        return 2
    if status != 200:
        sys.stderr.write("standin call: %s answered %d: %s\n" % (base, status, compact(placed)))
        return 2
    ccid = placed["call_control_id"]
    deadline = time.monotonic() + args.wait
    answered_at = None
    view = None
    while time.monotonic() < deadline:
        status, view = http_json("GET", base + "/_control/calls/" + urllib.parse.quote(ccid, safe=""))
        if status == 200 and view["state"] == "hungup":
            print(json.dumps(view, indent=2), flush=True)
            return 0
        if status == 200 and view["state"] in ("answered", "bridged") and args.hangup_after is not None:
            answered_at = answered_at or time.monotonic()
            if time.monotonic() - answered_at >= args.hangup_after:
                http_json("POST", base + "/_control/calls/" + urllib.parse.quote(ccid, safe="") + "/hangup", {})
        time.sleep(0.1)
    print(json.dumps(view, indent=2), flush=True)
    sys.stderr.write("standin call: call %s did not end within %gs (state %s)\n" %
                     (ccid, args.wait, view["state"] if view else "unknown"))
    return 1


def main(argv=None):
    p = argparse.ArgumentParser(description="Local stand-in for Telnyx Call Control.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the stand-in")
    s.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT (port 0 = any free port)")
    s.add_argument("--webhook-url", default=DEFAULT_WEBHOOK_URL)
    s.add_argument("--key-file", required=True, help="Ed25519 seed, base64; created (0600) if missing")
    s.add_argument("--api-key", help="require Authorization: Bearer KEY on commands")
    s.add_argument("--record", help="append each command request as a JSON line to FILE")
    s.add_argument("--duplicate-webhooks", action="store_true", help="deliver every webhook twice")
    s.add_argument("--workers", type=int, default=4, help="concurrent webhook deliveries")
    s.add_argument("--retry-base-ms", type=int, default=200, help="first webhook retry delay")
    s.add_argument("--speak-ms", type=int, default=200, help="how long a speak lasts")
    s.add_argument("-v", "--verbose", action="store_true", help="log every webhook and command")
    k = sub.add_parser("pubkey", help="print the public key (creates the key if missing)")
    k.add_argument("--key-file", required=True)
    c = sub.add_parser("call", help="place a call and print its history once it ended")
    c.add_argument("--control", default="http://" + DEFAULT_LISTEN)
    c.add_argument("--from", dest="from_", required=True)
    c.add_argument("--to", required=True)
    c.add_argument("--attestation", choices=("A", "B", "C"))
    c.add_argument("--token")
    c.add_argument("--wait", type=float, default=20.0, help="seconds to wait for the call to end")
    c.add_argument("--hangup-after", type=float, help="caller hangs up this many seconds after answer")
    args = p.parse_args(argv)
    if args.cmd == "serve" and (args.workers < 1 or args.workers > 256):
        p.error("--workers must be 1..256")
    return {"serve": cmd_serve, "pubkey": cmd_pubkey, "call": cmd_call}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
