# test_commands.py - the actuator against a misbehaving Telnyx (SPEC 6.3):
# retries with one stable command_id on 5xx and 429, no retry on a definitive
# 4xx, and no head-of-line blocking between calls.
import time
from datetime import datetime

from helpers import (MAIN_NUMBER, announce_done, commands_ev, initiated_payload, envelope,
                     of_call, wait_until)

CALLER = "+13125550145"


def ts(rec):
    return datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()


def outcome(events, ccid, action):
    out = commands_ev(events, ccid, action)
    assert len(out) == 1, "want one %s outcome, got %s" % (action, out)
    return out[0]["data"]


def test_speak_500_twice_then_ok(gate):
    g = gate
    g.standin.fail("speak", 500, times=2)
    call = g.standin.call(CALLER, MAIN_NUMBER)
    ccid = call["call_control_id"]
    events = g.wait_events(announce_done(ccid), 15, "flow with failing speak")
    speaks = [c for c in g.standin.commands(ccid) if c["action"] == "speak"]
    assert [c["status"] for c in speaks] == [500, 500, 200], speaks
    assert len({c["command_id"] for c in speaks}) == 1 and speaks[0]["command_id"], speaks
    d = outcome(events, ccid, "speak")
    assert d["attempts"] == 3 and d["ok"] is True and d["status"] == 200, d
    assert d["command_id"] == speaks[0]["command_id"]


def rate_limited_answers(g):
    g.standin.fail("answer", 429, times=1)
    call = g.standin.call(CALLER, MAIN_NUMBER)
    ccid = call["call_control_id"]
    events = g.wait_events(announce_done(ccid), 15, "flow with rate-limited answer")
    answers = [c for c in g.standin.commands(ccid) if c["action"] == "answer"]
    assert [c["status"] for c in answers] == [429, 200], answers
    assert answers[0]["command_id"] == answers[1]["command_id"]
    return events, ccid, answers


def test_429_retried(gate):
    events, ccid, _ = rate_limited_answers(gate)
    d = outcome(events, ccid, "answer")
    assert d["attempts"] == 2 and d["ok"] is True and d["status"] == 200, d


def test_429_honours_retry_after(gate):
    """The stand-in answers 429 with Retry-After: 1; the test's backoff cap is
    200 ms, so only honouring the header explains a gap of a second."""
    _, _, answers = rate_limited_answers(gate)
    gap = ts(answers[1]) - ts(answers[0])
    assert gap >= 0.9, "retry %.3fs after a 429 with Retry-After: 1" % gap


def test_422_on_ended_call_not_retried(gate):
    g = gate
    leg = g.standin.call("+13125550178", MAIN_NUMBER, direction="outgoing")
    ccid = leg["call_control_id"]
    g.standin.caller_hangup(ccid)
    wait_until(lambda: g.standin.call_state(ccid)["state"] == "hungup", 5, what="call ended")
    body, eid = envelope("call.initiated", initiated_payload(ccid, CALLER, MAIN_NUMBER,
                                                             session=leg["call_session_id"]))
    status, _, raw = g.post_signed(body)
    assert status == 200, raw
    events = g.wait_events(lambda evs: commands_ev(evs, ccid, "answer"), 15, "answer outcome")
    d = outcome(events, ccid, "answer")
    assert d["ok"] is False and d["status"] == 422 and d["attempts"] == 1, d
    # The spine must not re-send a command that got its definitive answer:
    # a later barrier call completes and still only one answer reached Telnyx.
    barrier = g.standin.call(CALLER, MAIN_NUMBER)
    g.wait_events(announce_done(barrier["call_control_id"]), 15, "barrier call")
    answers = [c for c in g.standin.commands(ccid) if c["action"] == "answer"]
    assert [c["status"] for c in answers] == [422], answers


def test_slow_call_does_not_block_others(gate):
    g = gate
    g.standin.fail("answer", 500, times=1, delay_ms=3000)
    slow = g.standin.call("+13125550161", MAIN_NUMBER)
    slow_id = slow["call_control_id"]
    wait_until(lambda: g.standin.commands(slow_id), 5, what="slow call's answer to arrive")
    t0 = time.monotonic()
    fast = g.standin.call("+13125550162", MAIN_NUMBER)
    fast_id = fast["call_control_id"]
    events = g.wait_events(lambda evs: commands_ev(evs, fast_id, "answer"), 10, "fast call's answer")
    elapsed = time.monotonic() - t0
    assert not commands_ev(events, slow_id, "answer"), "slow answer finished first"
    assert elapsed < 2.5, "fast call's answer took %.2fs behind a slow one" % elapsed
    assert outcome(events, fast_id, "answer")["ok"] is True
    events = g.wait_events(lambda evs: announce_done(slow_id)(evs) and announce_done(fast_id)(evs),
                           20, "both calls to finish")
    d = outcome(events, slow_id, "answer")
    assert d["ok"] is True and d["attempts"] == 2, d
    slow_ev, fast_ev = of_call(events, slow_id), of_call(events, fast_id)
    assert max(e["seq"] for e in commands_ev(fast_ev, action="answer")) < \
        min(e["seq"] for e in commands_ev(slow_ev, action="answer"))


def test_failed_speak_still_hangs_up(gate):
    """A rejected caller whose announcement cannot be played (speak refused
    for good) is hung up on anyway, not left on an answered call."""
    g = gate
    g.standin.fail("speak", 422, times=1)
    call = g.standin.call(CALLER, MAIN_NUMBER)
    ccid = call["call_control_id"]
    events = g.wait_events(lambda evs: commands_ev(evs, ccid, "hangup"), 15,
                           "hangup after the failed speak")
    assert outcome(events, ccid, "speak")["ok"] is False
    d = outcome(events, ccid, "hangup")
    assert d["ok"] is True and d["status"] == 200, d
    sent = g.standin.commands(ccid)
    assert [c["action"] for c in sent] == ["answer", "speak", "hangup"], sent
    assert sent[2]["command_id"] not in (sent[0]["command_id"], sent[1]["command_id"])
    wait_until(lambda: g.standin.call_state(ccid)["state"] == "hungup", 5, what="call ended")
