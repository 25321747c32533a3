# test_http.py - SPEC section 3 against the real ingress: every answer of the
# webhook endpoint (200/400/401/404/405/413), bodies that are not UTF-8 or
# shorter than their Content-Length, JSON answers to requests CivetWeb cannot
# parse, /health, /metrics, slow and garbage clients, and the explicit
# unsigned mode.
import json
import os
import re
import socket
import subprocess
import time
import uuid

import pytest

import helpers
from helpers import envelope, http_req, initiated_payload, sign_headers

BAD_FROM = "+13125550666"   # only ever used in rejected requests


def assert_error(status, parsed, raw, want):
    assert status == want, "want %d, got %d: %r" % (want, status, raw)
    assert isinstance(parsed, dict), "error body is not a JSON object: %r" % raw
    assert isinstance(parsed.get("error"), str) and parsed["error"], "no error code: %r" % raw
    assert isinstance(parsed.get("detail"), str) and parsed["detail"], "no detail: %r" % raw


def bad_body(event_id=None):
    return envelope("call.initiated", initiated_payload("v3:bad-" + uuid.uuid4().hex, BAD_FROM,
                                                        helpers.MAIN_NUMBER), event_id)


def journal_bytes(gate):
    jdir = os.path.join(gate.data_dir, "journal")
    assert os.path.isdir(jdir), "no journal directory %s" % jdir
    names = sorted(n for n in os.listdir(jdir) if n.endswith(".dump"))
    assert names, "no dump files in %s: %s" % (jdir, os.listdir(jdir))
    out = b""
    for n in names:
        with open(os.path.join(jdir, n), "rb") as f:
            out += f.read()
    return names, out


def test_valid_webhook_accepted_and_journaled(module_gate):
    g = module_gate
    body, eid = envelope("call.dtmf.received", {"call_control_id": "v3:dtmf-" + uuid.uuid4().hex,
                                                "digit": "5", "client_state": None})
    status, parsed, raw = g.post_signed(body)
    assert status == 200, raw
    assert parsed.get("status") == "accepted", raw
    assert parsed.get("id") == eid, raw
    assert isinstance(parsed.get("jseq"), int), raw
    names, data = journal_bytes(g)
    assert all(os.path.getsize(os.path.join(g.data_dir, "journal", n)) > 0 for n in names[-1:])
    assert body in data, "raw body not found in the journal"
    body2, _ = envelope("call.dtmf.received", {"call_control_id": "v3:x", "digit": "6"})
    status2, parsed2, raw2 = g.post_signed(body2)
    assert status2 == 200 and parsed2["jseq"] > parsed["jseq"], raw2


def test_timestamp_within_tolerance_accepted(module_gate):
    body, _ = envelope("call.dtmf.received", {"call_control_id": "v3:t", "digit": "1"})
    status, _, raw = module_gate.post_signed(body, ts=int(time.time()) - 100)
    assert status == 200, raw


def bad_signature_cases(seed):
    body, _ = bad_body()
    now = int(time.time())
    good = sign_headers(seed, body)
    other_seed, _ = helpers.new_keypair()
    cases = {}
    h = dict(good)
    cases["body_changed"] = (body.replace(b'"parked"', b'"parked" '), h)
    h = dict(good)
    del h["telnyx-signature-ed25519"]
    cases["missing_signature"] = (body, h)
    h = dict(good)
    del h["telnyx-timestamp"]
    cases["missing_timestamp"] = (body, h)
    cases["too_old"] = (body, sign_headers(seed, body, now - 400))
    cases["in_future"] = (body, sign_headers(seed, body, now + 400))
    cases["wrong_key"] = (body, sign_headers(other_seed, body))
    h = dict(good)
    h["telnyx-timestamp"] = str(now + 1)
    cases["timestamp_changed"] = (body, h)
    h = dict(good)
    h["telnyx-signature-ed25519"] = "not*base64!"
    cases["signature_garbage"] = (body, h)
    h = dict(good)
    h["telnyx-signature-ed25519"] = good["telnyx-signature-ed25519"][:40]
    cases["signature_short"] = (body, h)
    h = sign_headers(seed, body, "12ab")
    cases["timestamp_not_number"] = (body, h)
    return cases


CASES_401 = ["body_changed", "missing_signature", "missing_timestamp", "too_old", "in_future",
             "wrong_key", "timestamp_changed", "signature_garbage", "signature_short",
             "timestamp_not_number"]


@pytest.mark.parametrize("case", CASES_401)
def test_bad_signature_401(module_gate, case):
    body, headers = bad_signature_cases(module_gate.standin.seed)[case]
    status, parsed, raw = module_gate.post(body, headers)
    assert_error(status, parsed, raw, 401)


def test_spaces_around_signature_headers_accepted(module_gate):
    """Spaces around the header values are optional white space (RFC 9110),
    not part of them.  (CivetWeb refuses header lines with tabs as malformed.)"""
    body, eid = envelope("call.dtmf.received", {"call_control_id": "v3:ows", "digit": "8"})
    h = sign_headers(module_gate.standin.seed, body)
    for k in ("telnyx-signature-ed25519", "telnyx-timestamp"):
        h[k] = "  %s  " % h[k]
    status, parsed, raw = module_gate.post(body, h)
    assert status == 200 and parsed.get("id") == eid, raw


CASES_400 = {
    "not_json": b"this is not json{",
    "empty": b"",
    "array": b"[1,2,3]",
    "empty_object": b"{}",
    "data_not_object": b'{"data":"x"}',
    "no_id": json.dumps({"data": {"event_type": "call.initiated", "payload": {}}}).encode(),
    "no_event_type": json.dumps({"data": {"id": str(uuid.uuid4()), "payload": {}}}).encode(),
    "no_payload": json.dumps({"data": {"id": str(uuid.uuid4()), "event_type": "call.initiated"}}).encode(),
    "truncated": bad_body()[0][:-10],
}


@pytest.mark.parametrize("case", sorted(CASES_400))
def test_not_an_envelope_400(module_gate, case):
    status, parsed, raw = module_gate.post_signed(CASES_400[case])
    assert_error(status, parsed, raw, 400)


def test_data_id_length_limit(module_gate):
    """The spine keys webhooks by time and data.id (LMDB keys <= 511 bytes):
    an id of 503 bytes is accepted, a longer one refused up front instead of
    answered 200 and never processed."""
    def post_with_id(wid):
        body = json.dumps({"data": {"id": wid, "event_type": "call.dtmf.received",
                                    "payload": {"call_control_id": "v3:idlen", "digit": "1"}}}).encode()
        return module_gate.post_signed(body)
    status, parsed, raw = post_with_id("i" * 503)
    assert status == 200 and parsed.get("id") == "i" * 503, raw
    status, parsed, raw = post_with_id("i" * 504)
    assert_error(status, parsed, raw, 400)
    assert "longer than 503" in parsed["detail"], raw


# Ill-formed UTF-8 (and a lone surrogate escape) inside a JSON string of a
# correctly signed envelope: RFC 8259 JSON text is UTF-8.
BAD_UTF8 = {
    "not_utf8": b"\xff\xfe",
    "overlong": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above_10ffff": b"\xf4\x90\x80\x80",
    "cut_short": b"\xe2\x82",
    "lone_surrogate_escape": b"\\ud800",
}


@pytest.mark.parametrize("case", sorted(BAD_UTF8))
def test_invalid_utf8_400(module_gate, case):
    g = module_gate
    template, _ = envelope("call.dtmf.received", {"call_control_id": "v3:utf8-" + uuid.uuid4().hex,
                                                  "digit": "@TEXT@"})
    good = template.replace(b"@TEXT@", "caf\u00e9 \u20ac \U0001f600".encode())   # 2, 3, 4 bytes
    status, _, raw = g.post_signed(good)
    assert status == 200, "well-formed UTF-8 refused: %r" % raw
    status, parsed, raw = g.post_signed(template.replace(b"@TEXT@", b"caf" + BAD_UTF8[case]))
    assert_error(status, parsed, raw, 400)
    assert parsed["error"] == "invalid_json", raw


def raw_exchange(port, data, timeout=5.0):
    """Send data on a fresh connection (tolerating an early close) and return
    what the server answered."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def parse_raw_response(out):
    head, _, body = out.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    assert m, "no HTTP answer: %r" % out[:200]
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return int(m.group(1)), parsed, body


def test_body_shorter_than_content_length_400(make_gate):
    """A body that stops short of its Content-Length (then the client stalls)
    is incomplete when the request times out, never accepted as it is."""
    seed, pub = helpers.new_keypair()
    g = make_gate(standin=False, conf={"telnyx_public_key": pub, "http_request_timeout_ms": 500},
                  stages=("ingress",))
    body, _ = envelope("call.dtmf.received", {"call_control_id": "v3:short", "digit": "7"})
    head = "POST /webhooks/telnyx HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join("%s: %s\r\n" % kv for kv in sign_headers(seed, body).items())
    head += "Content-Length: %d\r\n\r\n" % (len(body) + 10)
    t0 = time.monotonic()
    out = raw_exchange(g.http_port, head.encode() + body, timeout=10.0)
    status, parsed, raw = parse_raw_response(out)
    assert_error(status, parsed, raw, 400)
    assert parsed["error"] == "incomplete_body", raw
    assert time.monotonic() - t0 < 8.0, "no answer within the request timeout"


def raw_answer(port, data):
    """Status, lower-case headers and parsed JSON body (or None) of the
    answer to raw bytes sent on a fresh connection."""
    out = raw_exchange(port, data)
    status, parsed, body = parse_raw_response(out)
    head = out.partition(b"\r\n\r\n")[0].decode("latin-1")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in head.split("\r\n")[1:])}
    return status, headers, parsed, body


@pytest.mark.parametrize("request_bytes,want,code", [
    (b"FOO /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "bad_request"),
    (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    (b"GET /health HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n\r\n", 400, "bad_request"),
    (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n", 400, "bad_request"),
    (b"POST /webhooks/telnyx HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n{}",
     411, "length_required"),
    (b"GET /health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 505, "http_version_not_supported"),
], ids=["unknown_method", "garbage_request_line", "bad_request_line", "bad_header_line",
        "content_length_not_number", "http_2_0"])
def test_unparsable_requests_get_json_errors(module_gate, request_bytes, want, code):
    """Requests CivetWeb rejects before any handler still get the JSON error
    form of SPEC section 3, and their connection is closed."""
    status, headers, parsed, raw = raw_answer(module_gate.http_port, request_bytes)
    assert_error(status, parsed, raw, want)
    assert parsed["error"] == code, raw
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert headers.get("connection", "").lower() == "close", headers
    assert module_gate.proc("ingress").alive()


def test_body_too_large_413(module_gate):
    g = module_gate
    payload = initiated_payload("v3:big", BAD_FROM, helpers.MAIN_NUMBER)
    payload["padding"] = "x" * 70000
    body, _ = envelope("call.initiated", payload)
    h = sign_headers(g.standin.seed, body)
    head = "POST /webhooks/telnyx HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join("%s: %s\r\n" % kv for kv in h.items())
    head += "Content-Length: %d\r\n\r\n" % len(body)
    status, parsed, raw = parse_raw_response(raw_exchange(g.http_port, head.encode() + body))
    assert_error(status, parsed, raw, 413)


@pytest.mark.parametrize("method,path,want", [
    ("GET", "/webhooks/telnyx", 405),
    ("PUT", "/webhooks/telnyx", 405),
    ("DELETE", "/webhooks/telnyx", 405),
    ("POST", "/health", 405),
    ("GET", "/nope", 404),
    ("POST", "/webhooks/other", 404),
    ("GET", "/", 404),
])
def test_method_and_path(module_gate, method, path, want):
    body = b"{}" if method in ("POST", "PUT") else None
    status, _, raw = http_req(module_gate.http_port, method, path, body)
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    assert_error(status, parsed, raw, want)


def test_health(module_gate):
    status, _, raw = http_req(module_gate.http_port, "GET", "/health")
    assert status == 200, raw
    assert json.loads(raw).get("status") == "ok", raw


def test_metrics(module_gate):
    g = module_gate
    body, _ = envelope("call.dtmf.received", {"call_control_id": "v3:m", "digit": "2"})
    assert g.post_signed(body)[0] == 200
    status, headers, raw = http_req(g.http_port, "GET", "/metrics")
    assert status == 200, raw
    text = raw.decode()
    assert re.search(r"^# TYPE \S+ counter$", text, re.M), "no counter:\n" + text
    assert re.search(r"^# TYPE \S+ histogram$", text, re.M), "no histogram:\n" + text
    assert re.search(r"^\S+_bucket\{[^}]*le=\"\+Inf\"[^}]*\} \d+", text, re.M), "no _bucket:\n" + text
    counters = re.findall(r"^(\S+?)(?:\{[^}]*\})? (\d+(?:\.\d+)?)$", text, re.M)
    assert any(float(v) > 0 for _, v in counters), "every sample is zero:\n" + text


def test_bad_requests_never_reach_spine(module_gate):
    """Requests answered 4xx leave no event; a valid call sent after them is
    fully processed (the barrier)."""
    g = module_gate
    bad_ids = []
    for case, (body, headers) in bad_signature_cases(g.standin.seed).items():
        bad_ids.append(json.loads(body)["data"]["id"])
        assert g.post(body, headers)[0] == 401, case
    body, eid = bad_body()
    bad_ids.append(eid)
    h = sign_headers(g.standin.seed, body, int(time.time()) - 1000)
    assert g.post(body, h)[0] == 401
    call = g.standin.call("+13125550142", helpers.MAIN_NUMBER)
    events = g.wait_events(helpers.announce_done(call["call_control_id"]), 15, "barrier call")
    leaked = [e for e in events if e.get("from") == BAD_FROM or e.get("webhook_id") in bad_ids]
    assert not leaked, "rejected requests reached the spine: %s" % leaked


def test_slow_and_garbage_clients(module_gate):
    g = module_gate
    stalled, garbage = [], []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", g.http_port), timeout=2)
            s.sendall(b"POST /webhooks/telnyx HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 900\r\n\r\n{\"data\":{")
            stalled.append(s)
        for i in range(8):
            s = socket.create_connection(("127.0.0.1", g.http_port), timeout=2)
            s.sendall(os.urandom(3000) if i % 2 else b"\x00\xffGARBAGE \x01\x02\r\n\r\n" * 50)
            garbage.append(s)
        body, eid = envelope("call.dtmf.received", {"call_control_id": "v3:slow", "digit": "9"})
        t0 = time.monotonic()
        status, parsed, raw = g.post_signed(body)
        elapsed = time.monotonic() - t0
        assert status == 200 and parsed["id"] == eid, raw
        assert elapsed < 2.0, "valid webhook took %.2fs behind slow clients" % elapsed
    finally:
        for s in stalled + garbage:
            s.close()
    assert http_req(g.http_port, "GET", "/health")[0] == 200
    assert g.proc("ingress").alive()


# --- unsigned mode -------------------------------------------------------------

def test_refuses_to_start_without_public_key(make_gate):
    g = make_gate(standin=False, start=False)
    assert "telnyx_public_key" not in g.conf
    try:
        r = subprocess.run([helpers.binary("ingress"), "-c", g.conf_path], capture_output=True,
                           text=True, timeout=5, env=g.env())
    except subprocess.TimeoutExpired:
        pytest.fail("ingress kept running without telnyx_public_key")
    assert r.returncode != 0
    assert "telnyx_public_key" in r.stderr, "stderr does not say why: %r" % r.stderr
    assert not helpers.port_open(g.http_port)


def test_unsigned_mode_explicit(make_gate):
    g = make_gate(standin=False, conf={"allow_unsigned_webhooks": "true"}, stages=("ingress",))
    body, eid = envelope("call.dtmf.received", {"call_control_id": "v3:u", "digit": "3"})
    status, parsed, raw = g.post(body, {"Content-Type": "application/json"})
    assert status == 200 and parsed.get("id") == eid, raw
    status, _, raw = http_req(g.http_port, "GET", "/health")
    assert status == 200, raw
    health = json.loads(raw)
    assert health.get("status") == "ok", raw
    assert re.search(r"unverified|unsigned", raw.decode(), re.I), \
        "/health does not say signatures are unverified: %r" % raw
    log = g.proc("ingress").log_text()
    assert re.search(r"unverified|unsigned", log, re.I), "log does not say so:\n" + log
    status, parsed, raw = g.post(b"not json", {"Content-Type": "application/json"})
    assert_error(status, parsed, raw, 400)


def test_unsigned_mode_logged_at_any_level(make_gate):
    """Running unverified is said in the log even with log_level = error."""
    g = make_gate(standin=False, conf={"allow_unsigned_webhooks": "true", "log_level": "error"},
                  stages=("ingress",))
    log = g.proc("ingress").log_text()
    assert re.search(r"signatures are not verified", log, re.I), "log does not say so:\n" + log


def test_signed_webhook_accepted_in_unsigned_mode_too(make_gate):
    g = make_gate(standin=False, conf={"allow_unsigned_webhooks": "true"}, stages=("ingress",))
    seed, _ = helpers.new_keypair()
    body, _ = envelope("call.dtmf.received", {"call_control_id": "v3:u2", "digit": "4"})
    status, _, raw = g.post(body, sign_headers(seed, body))
    assert status == 200, raw
    assert g.proc("ingress").alive()


# --- more connections than workers ----------------------------------------------

def keepalive_get(sock, path="/health"):
    """One GET on an open keep-alive connection: (status, headers text)."""
    sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        assert chunk, "connection closed before an answer"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed inside the body"
        rest += chunk
    return int(head.split()[1]), head.decode("latin-1")


def test_connections_beyond_workers_are_served(make_gate):
    """CivetWeb gives each open connection a worker; one more connection
    than workers used to wait until an idle keep-alive connection timed
    out.  While every worker holds a connection, answers close theirs."""
    threads = 4
    g = make_gate(standin=False, conf={"allow_unsigned_webhooks": "true", "http_threads": threads},
                  stages=("ingress",))
    held = []
    try:
        for i in range(threads):
            s = socket.create_connection(("127.0.0.1", g.http_port), timeout=5)
            status, head = keepalive_get(s)
            assert status == 200, head
            closing = re.search(r"(?im)^connection:\s*close", head) is not None
            # The last one is answered while every worker holds a connection.
            assert closing == (i == threads - 1), "answer %d: %s" % (i, head)
            held.append(s)
        # Workers of the kept-alive connections wait for a next request; the
        # closed one's worker is free: a new connection is served at once,
        # not after the keep-alive timeout of an idle one.
        extra = socket.create_connection(("127.0.0.1", g.http_port), timeout=5)
        held.append(extra)
        t0 = time.monotonic()
        status, head = keepalive_get(extra)
        assert status == 200, head
        assert time.monotonic() - t0 < 1.5, "waited for a keep-alive timeout"
    finally:
        for s in held:
            s.close()
    helpers.wait_until(lambda: http_req(g.http_port, "GET", "/health")[0] == 200, 5, what="health")
