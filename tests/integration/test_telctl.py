# test_telctl.py - the operator CLI against real spine databases (SPEC 7):
# events filters, empty logs, a missing data_dir, escaped plain-text output,
# reading with the spine stopped, verify on a good and on a tampered chain,
# cert issue --out and token input files, and exit status 2 on bad usage.
import json
import os
import re
import subprocess

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
    helpers.wait_until(lambda: os.path.exists(os.path.join(g.data_dir, "spine", "data.mdb")), 5, 0.02,
                       "the spine to create its database")
    assert run_ok(g, "events") == ""
    assert run_ok(g, "events", "--json") == ""
    assert run_ok(g, "verify").startswith("verify: ok")


def test_empty_log_fresh_data_dir(make_gate):
    g = make_gate(standin=False, start=False)
    os.makedirs(g.data_dir)             # a fresh installation: the spine never ran
    assert run_ok(g, "events", "--json") == ""
    assert run_ok(g, "events") == ""
    assert run_ok(g, "verify").startswith("verify: ok")
    assert run_ok(g, "cert", "list") == ""


def test_missing_data_dir_is_an_error(make_gate):
    g = make_gate(standin=False, start=False)
    assert not os.path.exists(g.data_dir)
    dump = os.path.join(g.root, "x.dump")
    open(dump, "wb").close()
    for args in (["events"], ["events", "--json"], ["verify"], ["cert", "list"], ["cert", "list", "--json"],
                 ["cert", "revoke", "0123456789abcdef"], ["status"], ["replay", dump]):
        r = g.telctl(*args)
        assert r.returncode == 1, "telctl %s: exit %d (%s)" % (args, r.returncode, r.stderr)
        assert r.stdout == "", (args, r.stdout)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and g.data_dir in err[0] and "does not exist" in err[0], (args, r.stderr)
    assert not os.path.exists(g.data_dir), "a read-only command created the data_dir"
    # bad usage is still reported as such
    assert g.telctl("events", "--bogus").returncode == 2


def test_text_output_escapes_webhook_strings(make_gate):
    g = make_gate(stages=("spine", "verifier", "ingress"))
    forged = "\n999 1999-01-01T00:00:00Z tel.call_verified forged"
    frm = "+13125550150" + forged + "\r\t\\x\x7f\x1b[2J é☎\u0085"
    ccid = "v3:escape-test"
    body, _ = helpers.envelope("call.initiated", helpers.initiated_payload(ccid, frm, MAIN_NUMBER))
    assert g.post_signed(body)[0] == 200

    def events_raw(*args):
        """telctl events output as bytes (str.splitlines would also split at U+0085)."""
        r = subprocess.run([helpers.binary("telctl"), "-c", g.conf_path, "events"] + list(args),
                           capture_output=True, timeout=10, env=g.env())
        assert r.returncode == 0, r.stderr
        return r.stdout

    def rejected():
        evs = [json.loads(x) for x in events_raw("--json").split(b"\n") if x]
        return evs if "tel.call_rejected" in [e["type"] for e in evs] else None
    every = helpers.wait_until(rejected, 10, 0.05, "the rejection")
    assert all(e["from"] == frm for e in every), "--json keeps the string as it is"

    lines = events_raw().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(every), lines
    for line, e in zip(lines, every):
        assert line.startswith(b"%d " % e["seq"]), line
        assert (b" +13125550150\\n999 1999-01-01T00:00:00Z tel.call_verified forged\\r\\t\\\\x\\x7f"
                b"\\x1b[2J \xc3\xa9\xe2\x98\x8e\\xc2\\x85 -> ") in line, line


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


def test_cert_issue_out_checked_before_issuing(make_gate):
    g = make_gate(standin=False, stages=("spine",))
    run_ok(g, "issuer", "init")
    key = os.path.join(g.root, "holder.key")
    pub = run_ok(g, "keygen", key).strip()
    issue = ["cert", "issue", "--namespace", "alice.x", "--pubkey", pub, "--phone", "+13125550160"]

    def issued():
        return [e for e in g.events() if e["type"] == "ns.cert_issued"]

    # an --out that cannot be written: exit 1 and nothing issued
    for bad in (os.path.join(g.root, "no-such-dir", "cert.json"), g.root):
        r = g.telctl(*issue, "--out", bad)
        assert r.returncode == 1, (bad, r.returncode, r.stdout, r.stderr)
        assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and bad in r.stderr, r.stderr
        assert "not issued" in r.stderr, r.stderr
    assert issued() == [] and run_ok(g, "cert", "list") == ""

    # a good --out (an existing file is replaced): issued once, same JSON on stdout and in the file
    out = os.path.join(g.root, "cert.json")
    with open(out, "w") as f:
        f.write("old content that is longer than nothing at all\n" * 100)
    printed = json.loads(run_ok(g, *issue, "--out", out))
    with open(out) as f:
        assert json.loads(f.read()) == printed
    assert [e["data"]["serial"] for e in issued()] == [printed["serial"]]

    # the spine is not running: not issued, and the new --out file is not left behind
    g.stop("spine")
    fresh = os.path.join(g.root, "fresh.json")
    r = g.telctl(*issue, "--out", fresh, timeout=20)
    assert r.returncode == 1 and "not issued" in r.stderr, r.stderr
    assert not os.path.exists(fresh)


def test_token_input_files_that_cannot_be_read_exit_1(make_gate):
    g = make_gate(standin=False, stages=("spine",))
    run_ok(g, "issuer", "init")
    key = os.path.join(g.root, "holder.key")
    pub = run_ok(g, "keygen", key).strip()
    out = os.path.join(g.root, "cert.json")
    with open(out, "w") as f:
        f.write(run_ok(g, "cert", "issue", "--namespace", "alice.x", "--pubkey", pub, "--phone", "+13125550160"))

    # an input file that cannot be read fails the operation (1), --cert like --key
    token = ["token", "--key", key, "--cert", out, "--from", "+13125550160", "--to", MAIN_NUMBER]
    assert run_ok(g, *token).strip()
    missing = os.path.join(g.root, "missing")
    not_json = os.path.join(g.root, "not.json")
    with open(not_json, "w") as f:
        f.write("not json\n")
    for i, bad in ((2, missing), (4, missing), (4, not_json)):
        args = list(token)
        args[i] = bad
        r = g.telctl(*args)
        assert r.returncode == 1 and bad in r.stderr, (args, r.returncode, r.stderr)
