# test_backpressure.py - commands the actuator cannot take yet (its queues
# are full) go out as soon as it takes them again, in order, not after
# command_resend_ms (protocol.md 6.1): the spine keeps their outbox keys in a
# bounded ring and polls the actuator socket for room.
import contextlib
import signal
import threading
import uuid

from helpers import MAIN_NUMBER, envelope, http_req, initiated_payload, wait_until

CALLS = 3000            # more than the ZeroMQ queues between spine and actuator hold
POSTERS = 8
# Far beyond the test's deadlines: only the ring can deliver in time.
CONF = {"command_resend_ms": 300000, "redeliver_after_ms": 300000}


def post_calls(g, tag, n):
    """POST n signed call.initiated webhooks from unknown callers, in parallel."""
    errors = []

    def worker(k):
        for i in range(k, n, POSTERS):
            payload = initiated_payload("v3:bp-%s-%d" % (tag, i), "+1312556%04d" % i, MAIN_NUMBER)
            body, _ = envelope("call.initiated", payload)
            status, _, raw = g.post_signed(body)
            if status != 200:
                errors.append(raw)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(POSTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def publish_pending(g):
    status, _, data = http_req(g.http_port, "GET", "/metrics")
    assert status == 200
    for line in data.decode().splitlines():
        if line.startswith("telgate_ingress_publish_pending "):
            return float(line.split()[1])
    raise AssertionError("no telgate_ingress_publish_pending in /metrics")


@contextlib.contextmanager
def stopped(proc):
    """SIGSTOP a stage for the duration of the block (SIGCONT even on failure)."""
    proc.p.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.p.send_signal(signal.SIGCONT)


def count(events, etype, tag):
    return sum(1 for e in events if e["type"] == etype and
               (e.get("call_control_id") or "").startswith("v3:bp-" + tag))


def test_commands_wait_for_a_stopped_actuator_and_flow_when_it_resumes(make_gate):
    g = make_gate(conf=CONF, verifiers=2)
    tag = uuid.uuid4().hex[:8]
    with stopped(g.proc("actuator")):
        post_calls(g, tag, CALLS)
        # Every decision is committed while the actuator cannot take commands.
        g.wait_events(lambda ev: count(ev, "tel.call_rejected", tag) == CALLS, 60,
                      "%d decisions" % CALLS)
        spine_log = g.proc("spine").log_text()
        assert "actuator not accepting commands" in spine_log, "the actuator's queues never filled"
    # One outcome per command (the stand-in answers 404 for calls it does not
    # know: final, recorded like any other outcome).
    g.wait_events(lambda ev: count(ev, "tel.command", tag) >= CALLS, 60,
                  "an outcome for each of %d commands" % CALLS)
    events = g.events()
    assert count(events, "tel.command", tag) == CALLS
    wait_until(lambda: "accepting commands again" in g.proc("spine").log_text(), 5, 0.1,
               "the spine noticing the actuator took everything")


def test_webhooks_wait_for_stopped_verifiers_and_flow_when_they_resume(make_gate):
    """The ingress keeps at most 1024 unsent webhooks in memory; the rest are
    read back from the journal in order as soon as a verifier takes them,
    not after redeliver_after_ms."""
    calls = 4000        # beyond memory (1024) + the PUSH queue (1000) + socket buffers
    g = make_gate(conf=CONF, verifiers=1)
    tag = uuid.uuid4().hex[:8]
    with stopped(g.proc("verifier1")):
        post_calls(g, tag, calls)
        # More wait than memory holds: the journal-backed part is in use.
        wait_until(lambda: publish_pending(g) > 1024, 5, 0.1, "publish_pending above 1024")
    g.wait_events(lambda ev: count(ev, "tel.call_rejected", tag) >= calls, 60,
                  "a decision for each of %d webhooks" % calls)
    assert count(g.events(), "tel.call_rejected", tag) == calls
