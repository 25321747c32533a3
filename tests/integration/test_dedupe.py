# test_dedupe.py - Telnyx re-deliveries (same data.id) add nothing (SPEC 6.2):
# events appear once, each command is sent once, the chain stays gap-free.
import threading

from helpers import (MAIN_NUMBER, announce_done, commands_ev, envelope, initiated_payload,
                     of_call, sign_headers, types, wait_until)

CALLER = "+13125550123"


def check_chain(g, events):
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq not gap-free from 1"
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "duplicate event ids"
    r = g.telctl("verify")
    assert r.returncode == 0, "verify failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith("verify: ok"), r.stdout


def barrier(g, frm="+13125550998"):
    call = g.standin.call(frm, MAIN_NUMBER)
    return g.wait_events(announce_done(call["call_control_id"]), 15, "barrier call")


def test_same_signed_webhook_delivered_four_times(gate):
    g = gate
    # A call the stand-in knows (so commands succeed), announced as incoming by us.
    leg = g.standin.call("+13125550177", MAIN_NUMBER, direction="outgoing")
    ccid = leg["call_control_id"]
    body, eid = envelope("call.initiated", initiated_payload(ccid, CALLER, MAIN_NUMBER,
                                                             session=leg["call_session_id"]))
    answers = [g.post_signed(body) for _ in range(2)]
    headers = sign_headers(g.standin.seed, body)
    threads = [threading.Thread(target=lambda: answers.append(g.post(body, headers))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(answers) == 4
    for status, parsed, raw in answers:
        assert status == 200 and parsed["status"] == "accepted" and parsed["id"] == eid, raw

    g.wait_events(announce_done(ccid), 15, "flow of the duplicated webhook")
    events = barrier(g)
    mine = [e for e in events if e.get("webhook_id") == eid]
    assert sorted(types(mine)) == ["tel.call_inbound", "tel.call_rejected", "tel.command"], types(mine)
    assert mine[-1]["data"]["action"] == "answer", mine
    ev = of_call(events, ccid)
    for typ in ("tel.call_answered", "tel.call_hangup"):
        assert types(ev).count(typ) == 1, types(ev)
    sent = g.standin.commands(ccid)
    assert [c["action"] for c in sent] == ["answer", "speak", "hangup"], sent
    assert len({c["command_id"] for c in sent}) == 3
    assert sorted(e["data"]["action"] for e in commands_ev(ev)) == ["answer", "hangup", "speak"]
    check_chain(g, events)


def test_standin_duplicate_webhooks(make_gate):
    g = make_gate(standin_args=["--duplicate-webhooks"])
    calls = [g.standin.call("+131255501%02d" % i, MAIN_NUMBER, attestation="C") for i in range(3)]
    ccids = [c["call_control_id"] for c in calls]
    g.wait_events(lambda evs: all(announce_done(c)(evs) for c in ccids), 20, "3 calls")

    def all_delivered():
        hooks = [w for c in ccids for w in g.standin.call_state(c)["webhooks"]]
        return hooks and all(w["status"] == 200 for w in hooks) and hooks
    hooks = wait_until(all_delivered, 10, 0.05, "every duplicate delivered with 200")
    assert sum(1 for w in hooks if w.get("duplicate")) >= 3 * 5, "stand-in did not duplicate"
    events = barrier(g)
    for c in ccids:
        ev = of_call(events, c)
        t = types(ev)
        for typ in ("tel.call_inbound", "tel.call_rejected", "tel.call_answered", "tel.call_hangup"):
            assert t.count(typ) == 1, "%s: %s" % (typ, t)
        assert sorted(e["data"]["action"] for e in commands_ev(ev)) == ["answer", "hangup", "speak"], t
        sent = g.standin.commands(c)
        assert [x["action"] for x in sent] == ["answer", "speak", "hangup"], sent
        assert len({x["command_id"] for x in sent}) == 3
    check_chain(g, events)
