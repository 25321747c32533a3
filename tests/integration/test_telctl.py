# test_telctl.py - the operator CLI against real spine databases (SPEC 7):
# events filters, empty logs, reading with the spine stopped, verify on a good
# and on a tampered chain, and exit status 2 on bad usage.
import json
import os
import re

import pytest

import helpers
from helpers import MAIN_NUMBER, announce_done

TAMPER_FROM = "+13125557342"


def two_calls(g, second_from="+13125550102"):
    a = g.standin.call("+13125550101", MAIN_NUMBER)
    b = g.standin.call(second_from, MAIN_NUMBER)
    return g.wait_events(lambda evs: announce_done(a["call_control_id"])(evs)
                         and announce_done(b["call_control_id"])(evs), 20, "two calls")


def run_ok(g, *args):
    r = g.telctl(*args)
    assert r.returncode == 0, "telctl %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr)
    return r.stdout


def test_events_filters(gate):
    g = gate
    every = two_calls(g)
    n = len(every)
    assert n >= 14 and [e["seq"] for e in every] == list(range(1, n + 1))

    cmds = g.events("--type", "tel.command")
    assert cmds and [e["seq"] for e in cmds] == [e["seq"] for e in every if e["type"] == "tel.command"]
    calls = g.events("--type", "tel.call_")
    assert calls and [e["seq"] for e in calls] == \
        [e["seq"] for e in every if e["type"].startswith("tel.call_")]
    assert g.events("--type", "tel.call_hangup") == [e for e in every if e["type"] == "tel.call_hangup"]
    assert [e["seq"] for e in g.events("--from", "3")] == list(range(3, n + 1))
    assert [e["seq"] for e in g.events("--limit", "2")] == [1, 2]
    assert [e["seq"] for e in g.events("--from", "4", "--limit", "3")] == [4, 5, 6]
    one = g.events("--type", "tel.command", "--limit", "1")
    assert len(one) == 1 and one[0] == cmds[0]
    assert g.events("--from", str(n + 10)) == []
    assert run_ok(g, "events", "--type", "no.such.type") == ""
    assert every == g.events("--from", "1", "--limit", str(n + 5))

    text = run_ok(g, "events").splitlines()
    assert len(text) == n, "plain output has %d lines for %d events" % (len(text), n)
    for line, e in zip(text, every):
        assert e["type"] in line and str(e["seq"]) in line, (line, e)
    out = run_ok(g, "verify")
    assert out.startswith("verify: ok"), out


def test_empty_log_running_spine(make_gate):
    g = make_gate(stages=("spine",))
    assert run_ok(g, "events") == ""
    assert run_ok(g, "events", "--json") == ""
    assert run_ok(g, "verify").startswith("verify: ok")


def test_empty_log_fresh_data_dir(make_gate):
    g = make_gate(standin=False, start=False)
    assert run_ok(g, "events", "--json") == ""
    assert run_ok(g, "verify").startswith("verify: ok")


def test_works_with_spine_stopped(gate):
    g = gate
    before = two_calls(g)
    g.stop("spine")
    assert g.events() == before
    assert run_ok(g, "verify").startswith("verify: ok")
    g.stop_all()
    assert g.events() == before
    assert [e["seq"] for e in g.events("--type", "tel.command", "--limit", "2")] == \
        [e["seq"] for e in before if e["type"] == "tel.command"][:2]


def test_verify_detects_tampering(gate):
    g = gate
    every = two_calls(g, second_from=TAMPER_FROM)
    target = min(e["seq"] for e in every if e.get("from") == TAMPER_FROM)
    assert run_ok(g, "verify").startswith("verify: ok")
    g.stop_all()

    path = os.path.join(g.data_dir, "spine", "data.mdb")
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        needle = TAMPER_FROM.encode()
        hits = [m.start() for m in re.finditer(re.escape(needle), data)]
        assert hits, "the from-number is not in %s" % path
        for pos in hits:
            data[pos + len(needle) - 1] ^= 0x01      # '2' -> '3'
        f.seek(0)
        f.write(data)

    r = g.telctl("verify")
    out = r.stdout + r.stderr
    assert r.returncode == 1, "verify exit %d after tampering: %s" % (r.returncode, out)
    assert not r.stdout.startswith("verify: ok"), out
    assert re.search(r"\b%d\b" % target, out), "verify does not name seq %d: %s" % (target, out)


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["events", "--limit", "abc"],
    ["events", "--from", "-3"],
    ["events", "--bogus"],
    ["events", "--type"],
    ["verify", "extra-arg"],
])
def test_bad_usage_exit_2(make_gate, args):
    g = make_gate(standin=False, start=False)
    r = g.telctl(*args)
    assert r.returncode == 2, "telctl %s: exit %d (%s)" % (args, r.returncode, r.stderr)
    assert r.stderr.strip(), "no reason on stderr"


def test_status_up_and_down(make_gate):
    g = make_gate()

    def lines():
        r = g.telctl("status", "--json")
        return r.returncode, [json.loads(x) for x in r.stdout.splitlines() if x.strip()]

    def all_up():
        rc, docs = lines()
        return rc == 0 and sorted(d["stage"] for d in docs if d["state"] == "up") == \
            ["actuator", "ingress", "spine", "verifier", "verifier"]
    helpers.wait_until(all_up, 10, 0.2, "every stage up in telctl status")
    rc, docs = lines()
    spine = [d for d in docs if d["stage"] == "spine"][0]
    assert "head_seq" in spine["counters"] and "outbox" in spine["counters"], spine
    text = g.telctl("status")
    assert text.returncode == 0 and "actuator" in text.stdout and "up" in text.stdout

    g.proc("actuator").p.kill()            # SIGKILL: its status file stays behind
    g.proc("actuator").wait(5)

    def actuator_down():
        rc, docs = lines()
        return rc == 1 and [d["state"] for d in docs if d["stage"] == "actuator"] == ["down"]
    helpers.wait_until(actuator_down, 10, 0.2, "actuator down in telctl status")
    g.procs.remove(g.proc("actuator"))
