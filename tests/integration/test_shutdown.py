# test_shutdown.py - SIGTERM during load (SPEC 6.5): while webhooks are posted
# continuously, each stage in turn is stopped (exit 0 within 5 s) and started
# again; every webhook answered 200 is processed exactly once.
import collections
import threading
import time
import uuid

from helpers import MAIN_NUMBER, assert_chain, envelope, initiated_payload, port_free, wait_until

TAGS = ("ingress", "verifier1", "verifier2", "spine", "actuator")
SHUTDOWN_CONF = {"redeliver_after_ms": 1000, "command_resend_ms": 1000, "max_attempts": 20}
POST_EVERY_S = 0.02
POSTERS = 3
LOAD_BEFORE_S = 1.0         # load on the stage before its SIGTERM
DOWN_S = 0.3
MAX_POSTS = 5000            # per poster: a bound, far above what the test reaches


class Poster(threading.Thread):
    """Posts signed call.initiated webhooks for calls the stand-in does not
    know (decision + a definitive 404 outcome for answer) until stopped;
    records the data.id of each one answered 200 and the other answers."""

    def __init__(self, g, n):
        super().__init__(daemon=True)
        self.g, self.n = g, n
        self.stop_ev = threading.Event()
        self.accepted = []
        self.others = collections.Counter()

    def run(self):
        for i in range(MAX_POSTS):
            if self.stop_ev.is_set():
                return
            payload = initiated_payload("v3:sd-%d-%d-%s" % (self.n, i, uuid.uuid4().hex),
                                        "+1312555%04d" % (9000 + i % 1000), MAIN_NUMBER)
            body, eid = envelope("call.initiated", payload)
            try:
                status, _, _ = self.g.post_signed(body)
            except OSError as e:
                status = type(e).__name__
            if status == 200:
                self.accepted.append(eid)
            else:
                self.others[status] += 1
            self.stop_ev.wait(POST_EVERY_S)


def processed(eids):
    """Predicate: each webhook has its inbound event, decision and answer outcome."""
    def pred(events):
        n = collections.Counter(e.get("webhook_id") for e in events)
        return all(n[eid] >= 3 for eid in eids)
    return pred


def test_sigterm_each_stage_under_load(make_gate):
    g = make_gate(conf=SHUTDOWN_CONF, verifiers=2)
    posters = [Poster(g, n) for n in range(POSTERS)]
    for p in posters:
        p.start()
    stops = []
    try:
        for tag in TAGS:
            time.sleep(LOAD_BEFORE_S)
            t0 = time.monotonic()
            g.stop(tag)                 # asserts exit status 0 within 5 s
            stops.append((tag, round(time.monotonic() - t0, 2)))
            time.sleep(DOWN_S)
            if tag == "ingress":
                wait_until(lambda: port_free(g.http_port), 10, 0.05, "ingress port free")
            g.start_one(tag.rstrip("0123456789"), tag)
            if tag == "ingress":
                g.wait_health()
        time.sleep(LOAD_BEFORE_S)
    finally:
        for p in posters:
            p.stop_ev.set()
        for p in posters:
            p.join(10)
    print("stop times: %s; answers other than 200: %s" % (
        stops, sum((p.others for p in posters), collections.Counter())))

    accepted = [eid for p in posters for eid in p.accepted]
    assert len(accepted) >= 100, "too little load: %d webhooks accepted" % len(accepted)
    events = g.wait_events(processed(accepted), 60, "every accepted webhook processed")
    time.sleep(2.0)             # re-publication and re-sends must add nothing
    events = g.events()
    by_hook = collections.defaultdict(list)
    for e in events:
        by_hook[e.get("webhook_id")].append(e)
    bad = []
    for eid in accepted:
        got = sorted((e["type"], e["data"].get("action")) for e in by_hook[eid])
        if len(got) != 3 or [t for t, _ in got].count("tel.call_inbound") != 1 \
                or [t for t, _ in got].count("tel.call_rejected") != 1 \
                or ("tel.command", "answer") not in got:
            bad.append("%s: %s" % (eid, got))
    assert not bad, "%d of %d accepted webhooks not processed exactly once:\n%s" % (
        len(bad), len(accepted), "\n".join(bad[:20]))
    assert_chain(g, events)
