"""standin_test.py - pytest tests of tests/telnyx_standin.py itself: a fake
ingress (threaded HTTP server checking the Ed25519 signature) receives its
webhooks while the tests drive its command and control APIs.
"""

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nacl.exceptions
import nacl.signing
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "telnyx_standin.py")
WAIT_S = 5.0


class Receiver:
    """Fake ingress: verifies signatures, records webhooks, answers `fail`
    pops of 500 before answering 200."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hooks = []           # (verified, headers, body dict)
        self.fail_next = 0
        self.public_key = None
        rcv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers.get("telnyx-timestamp", "")
                sig = self.headers.get("telnyx-signature-ed25519", "")
                ok = False
                try:
                    vk = nacl.signing.VerifyKey(base64.b64decode(rcv.public_key))
                    vk.verify(ts.encode() + b"|" + raw, base64.b64decode(sig))
                    ok = abs(int(ts) - time.time()) < 60
                except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
                    ok = False
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with rcv.lock:
                    fail = rcv.fail_next > 0
                    if fail:
                        rcv.fail_next -= 1
                    rcv.hooks.append({"verified": ok, "headers": dict(self.headers),
                                      "body": body, "answered": 500 if fail else (200 if ok else 401)})
                status = 500 if fail else (200 if ok else 401)
                out = json.dumps({"status": "accepted" if status == 200 else "error"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/webhooks/telnyx" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def events(self, ccid=None, event_type=None):
        with self.lock:
            return [h for h in self.hooks
                    if isinstance(h["body"], dict) and "payload" in h["body"].get("data", {})
                    and (ccid is None or h["body"]["data"]["payload"]["call_control_id"] == ccid)
                    and (event_type is None or h["body"]["data"]["event_type"] == event_type)]

    def wait_for(self, ccid, event_type, count=1, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.events(ccid, event_type)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError("no %d x %s for %s within %gs; got %s" %
                             (count, event_type, ccid, timeout,
                              [h["body"]["data"]["event_type"] for h in self.events(ccid)]))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Standin:
    def __init__(self, tmp_path, receiver, *extra):
        self.key_file = str(tmp_path / "standin.key")
        self.record = str(tmp_path / "commands.jsonl")
        self.proc = subprocess.Popen(
            [sys.executable, STANDIN, "serve", "--listen", "127.0.0.1:0", "--webhook-url", receiver.url,
             "--key-file", self.key_file, "--record", self.record, "--retry-base-ms", "50",
             "--speak-ms", "100"] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line1 = self.proc.stdout.readline().strip()
        line2 = self.proc.stdout.readline().strip()
        assert line1.startswith("public_key="), line1
        assert line2.startswith("listening="), line2
        self.public_key = line1.split("=", 1)[1]
        self.base = "http://" + line2.split("=", 1)[1]
        receiver.public_key = self.public_key

    def request(self, method, path, obj=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        try:
            with urllib.request.urlopen(req, timeout=WAIT_S) as r:
                return r.status, json.loads(r.read()), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)

    def wait_view(self, ccid, pred, timeout=WAIT_S):
        """The call's control view once pred(view) holds (the stand-in notes
        a delivery's status only after the receiver answered)."""
        deadline = time.monotonic() + timeout
        while True:
            st, view, _ = self.request("GET", "/_control/calls/" + ccid)
            assert st == 200, view
            if pred(view):
                return view
            if time.monotonic() > deadline:
                raise AssertionError("condition not met within %gs: %s" % (timeout, view))
            time.sleep(0.02)

    def command(self, ccid, action, body, api_key=None):
        h = {"Authorization": "Bearer " + api_key} if api_key else {}
        return self.request("POST", "/v2/calls/%s/actions/%s" % (ccid, action), body, h)[:2]

    def place(self, **kw):
        st, obj, _ = self.request("POST", "/_control/call", dict({"from": "+13125550100", "to": "+13125550199"}, **kw))
        assert st == 200, obj
        return obj

    def close(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)
            raise AssertionError("stand-in did not stop on SIGTERM")
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert rc == 0, "stand-in exited %d" % rc


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def standin(tmp_path, receiver):
    s = Standin(tmp_path, receiver)
    yield s
    s.close()


def test_key_file_created_0600_and_pubkey_matches(tmp_path, standin):
    assert os.stat(standin.key_file).st_mode & 0o777 == 0o600
    out = subprocess.run([sys.executable, STANDIN, "pubkey", "--key-file", standin.key_file],
                         capture_output=True, text=True, timeout=WAIT_S)
    assert out.returncode == 0
    assert out.stdout.strip() == standin.public_key
    assert len(base64.b64decode(standin.public_key)) == 32


def test_bad_key_file_is_refused(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("c2hvcnQ=\n")
    out = subprocess.run([sys.executable, STANDIN, "pubkey", "--key-file", str(bad)],
                         capture_output=True, text=True, timeout=WAIT_S)
    assert out.returncode != 0
    assert "32-byte" in out.stderr


def test_call_initiated_is_signed_and_complete(standin, receiver):
    placed = standin.place(attestation="B", token="tok123")
    ccid = placed["call_control_id"]
    assert ccid.startswith("v3:")
    hook = receiver.wait_for(ccid, "call.initiated")[0]
    assert hook["verified"]
    assert hook["headers"]["User-Agent"] == "telnyx-webhooks"
    assert hook["headers"]["Content-Type"] == "application/json"
    d = hook["body"]["data"]
    assert d["record_type"] == "event" and d["id"] == placed["webhook_id"]
    assert d["occurred_at"].endswith("Z")
    p = d["payload"]
    assert p["direction"] == "incoming" and p["state"] == "parked"
    assert p["from"] == "+13125550100" and p["to"] == "+13125550199"
    assert p["client_state"] is None
    assert p["shaken_stir_attestation"] == "B" and p["shaken_stir_validated"] is True
    assert p["custom_headers"] == [{"name": "X-Namespace-Token", "value": "tok123"}]
    assert p["call_session_id"] == placed["call_session_id"]
    assert hook["body"]["meta"] == {"attempt": 1, "delivered_to": receiver.url}


def test_call_without_attestation_has_no_shaken_fields(standin, receiver):
    ccid = standin.place()["call_control_id"]
    p = receiver.wait_for(ccid, "call.initiated")[0]["body"]["data"]["payload"]
    assert "shaken_stir_attestation" not in p and "shaken_stir_validated" not in p
    assert p["custom_headers"] == []


def test_answer_speak_hangup_flow(standin, receiver):
    ccid = standin.place()["call_control_id"]
    receiver.wait_for(ccid, "call.initiated")
    assert standin.command(ccid, "speak", {"payload": "hi", "voice": "female"}) == \
        (422, {"errors": [{"code": "90034", "title": "Call has not been answered yet"}]})
    assert standin.command(ccid, "answer", {"client_state": "YQ==", "command_id": "c1"}) == \
        (200, {"data": {"result": "ok"}})
    ans = receiver.wait_for(ccid, "call.answered")[0]
    assert ans["verified"] and ans["body"]["data"]["payload"]["client_state"] == "YQ=="
    st, _ = standin.command(ccid, "speak", {"payload": "go away", "voice": "female", "language": "en-US",
                                            "client_state": "Yg==", "command_id": "c2"})
    assert st == 200
    started = receiver.wait_for(ccid, "call.speak.started")[0]["body"]["data"]["payload"]
    ended = receiver.wait_for(ccid, "call.speak.ended")[0]["body"]["data"]["payload"]
    assert started["client_state"] == "Yg==" and ended["status"] == "completed"
    assert ended["speak_id"] == started["speak_id"]
    assert standin.command(ccid, "hangup", {"command_id": "c3"})[0] == 200
    hup = receiver.wait_for(ccid, "call.hangup")[0]["body"]["data"]["payload"]
    assert hup["hangup_cause"] == "normal_clearing" and hup["hangup_source"] == "callee"
    assert hup["sip_hangup_cause"] == "200" and hup["client_state"] == "Yg=="
    view = standin.wait_view(ccid, lambda v: all(w["status"] is not None for w in v["webhooks"]))
    assert view["state"] == "hungup"
    assert [w["event_type"] for w in view["webhooks"]] == [
        "call.initiated", "call.answered", "call.speak.started", "call.speak.ended", "call.hangup"]
    assert all(w["status"] == 200 for w in view["webhooks"])
    assert [c["action"] for c in view["commands"]] == ["speak", "answer", "speak", "hangup"]
    assert standin.command(ccid, "hangup", {"command_id": "c4"}) == \
        (422, {"errors": [{"code": "90018", "title": "Call has already ended",
                           "detail": "This call is no longer active and can't receive commands."}]})
    with open(standin.record) as f:
        recorded = [json.loads(line) for line in f]
    assert [r["command_id"] for r in recorded] == [None, "c1", "c2", "c3", "c4"]
    assert [r["status"] for r in recorded] == [422, 200, 200, 200, 422]


def test_repeated_command_id_triggers_nothing(standin, receiver):
    ccid = standin.place()["call_control_id"]
    receiver.wait_for(ccid, "call.initiated")
    assert standin.command(ccid, "answer", {"command_id": "same"})[0] == 200
    receiver.wait_for(ccid, "call.answered")
    assert standin.command(ccid, "hangup", {"command_id": "h"})[0] == 200
    receiver.wait_for(ccid, "call.hangup")
    # Repeats are acknowledged, even once the call ended, and cause nothing.
    assert standin.command(ccid, "answer", {"command_id": "same"}) == (200, {"data": {"result": "ok"}})
    assert standin.command(ccid, "hangup", {"command_id": "h"}) == (200, {"data": {"result": "ok"}})
    time.sleep(0.3)
    assert len(receiver.events(ccid, "call.answered")) == 1
    assert len(receiver.events(ccid, "call.hangup")) == 1
    st, cmds, _ = standin.request("GET", "/_control/commands?call_control_id=" + ccid)
    assert [c["command_id"] for c in cmds] == ["same", "h", "same", "h"]


def test_fail_injection_500_twice_then_ok(standin, receiver):
    ccid = standin.place()["call_control_id"]
    st, _, _ = standin.request("POST", "/_control/fail", {"action": "answer", "status": 500, "times": 2})
    assert st == 200
    err = {"errors": [{"code": "10007", "title": "Unexpected error"}]}
    assert standin.command(ccid, "answer", {"command_id": "a"}) == (500, err)
    assert standin.command(ccid, "answer", {"command_id": "a"}) == (500, err)
    time.sleep(0.2)
    assert receiver.events(ccid, "call.answered") == []
    assert standin.command(ccid, "answer", {"command_id": "a"})[0] == 200
    receiver.wait_for(ccid, "call.answered")
    st, cmds, _ = standin.request("GET", "/_control/commands?call_control_id=" + ccid)
    assert [c["status"] for c in cmds] == [500, 500, 200]


def test_fail_injection_429_retry_after_and_delay(standin, receiver):
    ccid = standin.place()["call_control_id"]
    standin.request("POST", "/_control/fail", {"action": "hangup", "status": 429, "times": 1, "delay_ms": 300})
    t0 = time.monotonic()
    st, body, headers = standin.request("POST", "/v2/calls/%s/actions/hangup" % ccid, {})
    assert st == 429 and headers.get("Retry-After") == "1"
    assert body["errors"][0]["code"] == "10011"
    assert time.monotonic() - t0 >= 0.3
    assert standin.command(ccid, "hangup", {})[0] == 200
    receiver.wait_for(ccid, "call.hangup")


def test_unknown_call_and_bad_requests(standin, receiver):
    assert standin.command("v3:nope", "answer", {}) == \
        (404, {"errors": [{"code": "90015", "title": "Invalid Call Control ID"}]})
    ccid = standin.place()["call_control_id"]
    st, body, _ = standin.request("POST", "/v2/calls/%s/actions/answer" % ccid, raw=b"{not json")
    assert st == 400 and body["errors"][0]["code"] == "10023"
    assert standin.command(ccid, "answer", {"client_state": "not base64!"})[0] == 422
    assert standin.command(ccid, "reject", {"cause": "NOPE"})[0] == 422
    assert standin.command(ccid, "fly", {})[0] == 404
    st, body, _ = standin.request("POST", "/_control/fail", {"action": "fly", "status": 500})
    assert st == 422


def test_reject_user_busy(standin, receiver):
    ccid = standin.place()["call_control_id"]
    assert standin.command(ccid, "reject", {"cause": "USER_BUSY", "client_state": "Yw=="})[0] == 200
    p = receiver.wait_for(ccid, "call.hangup")[0]["body"]["data"]["payload"]
    assert p["hangup_cause"] == "user_busy" and p["client_state"] == "Yw=="


def test_transfer_bridges_and_records_target(standin, receiver):
    ccid = standin.place()["call_control_id"]
    assert standin.command(ccid, "transfer", {"to": "+13125550111", "command_id": "t"})[0] == 200
    receiver.wait_for(ccid, "call.bridged")
    st, view, _ = standin.request("GET", "/_control/calls/" + ccid)
    assert view["state"] == "bridged" and view["transfer_to"] == "+13125550111"
    peer = receiver.wait_for(view["peer"], "call.initiated")[0]["body"]["data"]["payload"]
    assert peer["direction"] == "outgoing" and peer["to"] == "+13125550111"
    time.sleep(0.2)
    assert [h["body"]["data"]["event_type"] for h in receiver.events(ccid)] == ["call.initiated", "call.bridged"]


def test_api_key_enforced(tmp_path, receiver):
    s = Standin(tmp_path, receiver, "--api-key", "sekrit")
    try:
        ccid = s.place()["call_control_id"]
        want = (401, {"errors": [{"code": "10009", "title": "Authentication failed"}]})
        assert s.command(ccid, "answer", {}) == want
        assert s.command(ccid, "answer", {}, api_key="wrong") == want
        assert s.command(ccid, "answer", {}, api_key="sekrit")[0] == 200
        receiver.wait_for(ccid, "call.answered")
    finally:
        s.close()


def test_webhook_retried_on_500(standin, receiver):
    receiver.fail_next = 2
    ccid = standin.place()["call_control_id"]
    hooks = receiver.wait_for(ccid, "call.initiated", count=3)
    assert [h["body"]["meta"]["attempt"] for h in hooks] == [1, 2, 3]
    assert [h["answered"] for h in hooks] == [500, 500, 200]
    assert len({h["body"]["data"]["id"] for h in hooks}) == 1
    assert all(h["verified"] for h in hooks)
    view = standin.wait_view(ccid, lambda v: v["webhooks"][0]["status"] == 200)
    assert view["webhooks"][0]["attempts"] == 3


def test_webhook_gives_up_after_five_retries(standin, receiver):
    receiver.fail_next = 100
    ccid = standin.place()["call_control_id"]
    # retry base 50 ms: 50+100+200+400+800 ms of backoff in all.
    receiver.wait_for(ccid, "call.initiated", count=6, timeout=8)
    time.sleep(1.0)
    assert len(receiver.events(ccid, "call.initiated")) == 6


def test_duplicate_webhooks(tmp_path, receiver):
    s = Standin(tmp_path, receiver, "--duplicate-webhooks")
    try:
        ccid = s.place()["call_control_id"]
        hooks = receiver.wait_for(ccid, "call.initiated", count=2)
        assert hooks[0]["body"]["data"]["id"] == hooks[1]["body"]["data"]["id"]
    finally:
        s.close()


def test_raw_webhook_control(standin, receiver):
    st, out, _ = standin.request("POST", "/_control/webhook", {"body": {"data": {"x": 1}}, "sign": True})
    assert st == 200 and out["status"] == 200 and out["body"] == {"status": "accepted"}
    st, out, _ = standin.request("POST", "/_control/webhook", {"body": "raw text", "sign": False})
    assert out["status"] == 401
    st, out, _ = standin.request("POST", "/_control/webhook",
                                 {"body": "{}", "headers": {"telnyx-signature-ed25519": "AAAA"}})
    assert out["status"] == 401
    old = str(int(time.time()) - 3600)
    st, out, _ = standin.request("POST", "/_control/webhook", {"body": "{}", "headers": {"telnyx-timestamp": old}})
    assert out["status"] == 401          # validly signed, but stale for the receiver
    with receiver.lock:
        last = receiver.hooks[-1]
    assert last["headers"]["telnyx-timestamp"] == old


def test_reset_and_health(standin, receiver):
    standin.place()
    assert standin.request("GET", "/_control/health")[:2] == (200, {"status": "ok"})
    standin.request("POST", "/_control/fail", {"action": "answer", "status": 500})
    assert standin.request("POST", "/_control/reset", {})[0] == 200
    assert standin.request("GET", "/_control/commands")[1] == []
    ccid = standin.place()["call_control_id"]
    assert standin.command(ccid, "answer", {})[0] == 200


def test_call_subcommand_prints_history(standin, receiver):
    placed = {}

    def answer_and_hang_up():
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            got = receiver.events(event_type="call.initiated")
            if got:
                ccid = got[0]["body"]["data"]["payload"]["call_control_id"]
                placed["ccid"] = ccid
                standin.command(ccid, "reject", {"cause": "CALL_REJECTED"})
                return
            time.sleep(0.02)

    t = threading.Thread(target=answer_and_hang_up)
    t.start()
    out = subprocess.run([sys.executable, STANDIN, "call", "--control", standin.base, "--from", "+13125550100",
                          "--to", "+13125550199", "--attestation", "C", "--wait", "5"],
                         capture_output=True, text=True, timeout=10)
    t.join(WAIT_S)
    assert out.returncode == 0, out.stderr
    hist = json.loads(out.stdout)
    assert hist["call_control_id"] == placed["ccid"] and hist["state"] == "hungup"
    assert [w["event_type"] for w in hist["webhooks"]] == ["call.initiated", "call.hangup"]


def test_call_subcommand_times_out(standin, receiver):
    out = subprocess.run([sys.executable, STANDIN, "call", "--control", standin.base, "--from", "+13125550100",
                          "--to", "+13125550199", "--wait", "0.5"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert "did not end" in out.stderr
