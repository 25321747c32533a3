# test_poison.py - a webhook that crashes every verifier (fault injection:
# TELGATE_FAULT_CRASH_MARKER) costs at most max_attempts verifier restarts, is
# parked with a tel.webhook_parked event and a copy under journal/parked/, and
# the calls around it complete (protocol.md 6.1 "Poison").
import os
import resource
import signal
import threading
import time
import uuid

from helpers import (MAIN_NUMBER, announce_done, assert_chain, envelope, initiated_payload,
                     of_call, wait_until)

MAX_ATTEMPTS = 3
POISON_CONF = {"max_attempts": MAX_ATTEMPTS, "redeliver_after_ms": 500, "command_resend_ms": 1000}
VERIFIERS = ("verifier1", "verifier2")
RESTART_CAP = 20        # a crash loop beyond this is a failure, not something to feed


class Supervisor(threading.Thread):
    """Plays the process supervisor for the verifiers: restarts one shortly
    after it dies and records each death (tag, exit status, time)."""

    def __init__(self, g):
        super().__init__(daemon=True)
        self.g = g
        self.deaths = []
        self.stop_ev = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop_ev.wait(0.05):
                for tag in VERIFIERS:
                    status = self.g.forget_dead(tag)
                    if status is None:
                        continue
                    self.deaths.append((tag, status, time.monotonic()))
                    if len(self.deaths) > RESTART_CAP:
                        return
                    time.sleep(0.1)
                    self.g.restart(tag)
        except BaseException as e:
            self.error = e

    def stop(self):
        self.stop_ev.set()
        self.join(10)


def place_calls(g, n, first):
    out = []
    for i in range(n):
        out.append(g.standin.call("+1312555%04d" % (first + i), MAIN_NUMBER)["call_control_id"])
    return out


def test_poison_webhook_is_parked_and_the_rest_flows(make_gate):
    marker = "POISON-" + uuid.uuid4().hex
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))     # the aborts leave no core files
    try:
        g = make_gate(conf=POISON_CONF, verifiers=len(VERIFIERS),
                      stage_env={"verifier": {"TELGATE_FAULT_CRASH_MARKER": marker}})
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    sup = Supervisor(g)
    sup.start()
    try:
        before = place_calls(g, 3, 6100)
        g.wait_events(lambda ev: all(announce_done(c)(ev) for c in before), 20, "calls before the poison")
        assert not sup.deaths, "a verifier died before the poison: %s" % sup.deaths

        payload = initiated_payload("v3:poison-" + uuid.uuid4().hex, "+13125556666", MAIN_NUMBER)
        payload["caller_id_name"] = marker
        body, eid = envelope("call.initiated", payload)
        status, answer, raw = g.post_signed(body)
        assert status == 200, raw
        jseq = answer["jseq"]
        after = place_calls(g, 3, 6200)

        def parked_of(ev):
            return [e for e in ev if e["type"] == "tel.webhook_parked" and e["data"].get("jseq") == jseq]
        try:
            events = g.wait_events(parked_of, 30, "tel.webhook_parked for the poison webhook")
        except AssertionError as e:
            raise AssertionError("%s\nverifier deaths so far: %s" % (e, sup.deaths)) from None
        t_parked = time.monotonic()
        parked = parked_of(events)
        assert len(parked) == 1, parked
        p = parked[0]
        # The RESULT's de-duplication key is parked:<data.id>; the event names the webhook.
        assert p.get("webhook_id") in (eid, "parked:" + eid), p
        assert p["data"].get("jseq") == jseq, p
        assert p["data"].get("attempts") == MAX_ATTEMPTS, p
        assert p["data"].get("event_type") == "call.initiated", p

        parked_dir = os.path.join(g.data_dir, "journal", "parked")
        assert os.path.isdir(parked_dir), "no %s" % parked_dir
        copies = []
        for name in sorted(os.listdir(parked_dir)):
            with open(os.path.join(parked_dir, name), "rb") as f:
                if body in f.read():
                    copies.append(name)
        assert copies, "the raw body is in no file of %s: %s" % (parked_dir, os.listdir(parked_dir))

        # The calls around the poison all complete.
        g.wait_events(lambda ev: all(announce_done(c)(ev) for c in before + after), 30,
                      "calls placed after the poison")

        # The verifiers stop crashing: give re-publication several rounds, and
        # the ingress a restart (the parked record must not come back).
        time.sleep(2.0)
        g.stop("ingress")
        g.start_one("ingress")
        g.wait_health()
        late = place_calls(g, 2, 6300)
        g.wait_events(lambda ev: all(announce_done(c)(ev) for c in late), 20, "calls after parking")
        time.sleep(2.0)
    finally:
        sup.stop()
    assert sup.error is None, "supervisor failed: %r" % sup.error
    deaths = sup.deaths
    assert 1 <= len(deaths) <= MAX_ATTEMPTS, "verifier deaths %s, want 1..%d" % (deaths, MAX_ATTEMPTS)
    assert all(s == -signal.SIGABRT for _, s, _ in deaths), "unexpected exit statuses: %s" % deaths
    assert all(t <= t_parked for _, _, t in deaths), "a verifier crashed after parking: %s" % deaths
    for tag in VERIFIERS:
        wait_until(lambda: g.proc(tag) is not None and g.proc(tag).alive(), 5, what=tag + " running")

    events = g.events()
    assert len([e for e in events if e["type"] == "tel.webhook_parked"]) == 1
    leaked = [e for e in of_call(events, payload["call_control_id"]) if e["type"] != "tel.webhook_parked"]
    leaked += [e for e in events if e.get("webhook_id") == eid and e["type"] != "tel.webhook_parked"]
    assert not leaked, "the poison webhook was processed: %s" % leaked
    assert_chain(g, events)
