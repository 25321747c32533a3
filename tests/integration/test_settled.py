# test_settled.py - journal sequence numbers across an ingress crash
# (protocol.md 6): the ingress publishes a batch before its fdatasync, so after
# a restart it skips the jseqs the lost batch may have used, and tells the spine
# its low mark (SETTLED) so the spine's watermark does not wait for them.
import json
import uuid

from helpers import MAIN_NUMBER, envelope, initiated_payload, wait_until

GAP = 8192      # INGRESS_JOURNAL_MAX_QUEUE: the most records one unsynced batch holds


def post_call(g, caller):
    body, _ = envelope("call.initiated",
                       initiated_payload("v3:settled-" + uuid.uuid4().hex, caller, MAIN_NUMBER))
    status, answer, raw = g.post_signed(body)
    assert status == 200, raw
    return answer["jseq"]


def status_of(g, stage):
    r = g.telctl("status", "--json")
    docs = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    return [d for d in docs if d["stage"] == stage and d["state"] == "up"]


def spine_low(g):
    up = status_of(g, "spine")
    return up[0]["counters"]["journal_low"] if up else -1


def test_restart_skips_jseqs_and_the_spine_watermark_follows(make_gate):
    g = make_gate(verifiers=1)
    first = post_call(g, "+13125557001")
    wait_until(lambda: spine_low(g) >= first, 10, 0.2, "spine watermark at the first webhook")

    assert g.kill("ingress") is not None
    g.restart("ingress")
    g.wait_health()
    second = post_call(g, "+13125557002")
    assert second >= first + 1 + GAP, "jseq %d after %d: the restart did not skip" % (second, first)

    # Without SETTLED the watermark would stay below the skipped range forever.
    wait_until(lambda: spine_low(g) >= second, 10, 0.2,
               "spine watermark past the skipped jseqs (at %d)" % second)
    wait_until(lambda: status_of(g, "ingress") and
               status_of(g, "ingress")[0]["counters"]["unacknowledged"] == 0,
               10, 0.2, "every record acknowledged")


def test_clean_restart_keeps_acknowledging(make_gate):
    """SIGTERM and restart: numbering continues past a gap as well, and a
    webhook sent right after the restart is processed and acknowledged."""
    g = make_gate(verifiers=1)
    jseqs = [post_call(g, "+131255571%02d" % i) for i in range(5)]
    g.stop("ingress")
    g.restart("ingress")
    g.wait_health()
    later = post_call(g, "+13125557199")
    assert later > max(jseqs) + GAP
    wait_until(lambda: spine_low(g) >= later, 10, 0.2, "spine watermark at %d" % later)
