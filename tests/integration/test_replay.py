# test_replay.py - `telctl replay` (SPEC section 7, protocol.md sections 3
# and 6): journal dump files re-fed into the live pipeline (a no-op for what
# is processed, new calls for a foreign journal) and replayed --into a
# separate spine with the current policy; damaged files and usage errors.
import glob
import json
import os
import pty
import re
import select
import shutil
import subprocess
import time

from helpers import (JOURNAL_HDR as HDR, MAIN_NUMBER, announce_done, binary, journal_records, of_call,
                     types, wait_until)

CALLER = "+13125550100"
HOLDER = "+13125550177"
DECISIONS = ("tel.call_inbound", "tel.call_rejected", "tel.call_verified")


def ok(r):
    assert r.returncode == 0, "exit %d:\n%s%s" % (r.returncode, r.stdout, r.stderr)
    return r.stdout


def dumps(g):
    files = sorted(glob.glob(os.path.join(g.data_dir, "journal", "*.dump")))
    assert files, "no journal dump files in %s" % g.data_dir
    return files


def settle(g, quiet_s=1.0, timeout=15):
    """Wait until the event count stops changing for quiet_s; returns the events."""
    state = {"n": -1, "since": time.monotonic()}

    def quiet():
        n = len(g.events())
        if n != state["n"]:
            state["n"], state["since"] = n, time.monotonic()
        return time.monotonic() - state["since"] >= quiet_s
    wait_until(quiet, timeout, 0.1, "the spine to settle")
    return g.events()


def place_rejected_calls(g, n, frm=CALLER, **kw):
    calls = [g.standin.call(frm, MAIN_NUMBER, **kw) for _ in range(n)]
    for c in calls:
        g.wait_events(announce_done(c["call_control_id"]), 15, "announce flow of %s" % c["call_control_id"])
    return calls


def telctl_at(g, data_dir, *args, timeout=30):
    """telctl with the gate's configuration but data_dir overridden."""
    env = g.env()
    env["TEL_DATA_DIR"] = data_dir
    return subprocess.run([binary("telctl"), "-c", g.conf_path] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=env)


def events_at(g, data_dir):
    out = ok(telctl_at(g, data_dir, "events", "--json"))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def decisions(events, ccids):
    return {c: sorted(t for t in types(of_call(events, c)) if t in DECISIONS) for c in ccids}


INTO_RE = re.compile(r"replayed (\d+) records into (.+): (\d+) events, (\d+) commands not executed "
                     r"\(no actuator\), (\d+) duplicates")
LIVE_RE = re.compile(r"replayed (\d+) records from (\d+) files \((\d+) already processed\)")


def test_live_replay_of_processed_journal_adds_nothing(gate):
    g = gate
    calls = place_rejected_calls(g, 3)
    before = settle(g)
    verify_before = ok(g.telctl("verify"))
    files = dumps(g)
    n_records = sum(len(journal_records(f)[0]) for f in files)

    out = ok(g.telctl("replay", *files, timeout=60))
    m = LIVE_RE.search(out)
    assert m, out
    assert int(m.group(1)) == n_records and int(m.group(2)) == len(files), out
    assert int(m.group(3)) == n_records, "every record should be known as processed:\n" + out

    time.sleep(1.0)                     # let verifiers and spine drop what was re-fed
    after = g.events()
    assert after == before, "replay of processed webhooks added events"
    assert ok(g.telctl("verify")) == verify_before
    for c in calls:
        assert types(of_call(after, c["call_control_id"])).count("tel.call_inbound") == 1


def test_replay_into_reproduces_decisions(make_gate):
    g = make_gate()
    ok(g.telctl("issuer", "init"))
    key = os.path.join(g.root, "holder.key")
    pub = ok(g.telctl("keygen", key)).strip()
    ok(g.telctl("cert", "issue", "--namespace", "bob.x", "--pubkey", pub, "--phone", HOLDER))
    rejected = place_rejected_calls(g, 2)
    verified = g.standin.call(HOLDER, MAIN_NUMBER, attestation="A", validated=True)
    g.wait_events(lambda ev: "tel.call_verified" in types(of_call(ev, verified["call_control_id"]))
                  and "tel.command" in types(of_call(ev, verified["call_control_id"])), 15)
    live = settle(g)
    ccids = [c["call_control_id"] for c in rejected] + [verified["call_control_id"]]

    into = os.path.join(g.root, "replay1")
    out = ok(g.telctl("replay", "--into", into, *dumps(g), timeout=60))
    m = INTO_RE.search(out)
    assert m, out
    assert m.group(2) == into and int(m.group(5)) == 0, out
    assert int(m.group(3)) > 0 and int(m.group(4)) > 0, out
    assert "TEL_DATA_DIR=%s telctl events" % into in out

    replayed = events_at(g, into)
    assert decisions(replayed, ccids) == decisions(live, ccids)
    assert decisions(replayed, ccids)[verified["call_control_id"]] == ["tel.call_inbound", "tel.call_verified"]
    assert int(m.group(3)) == len(replayed)
    assert not [e for e in replayed if e["type"] == "tel.command"], "commands must not be executed"
    ok(telctl_at(g, into, "verify"))
    # the live log is untouched, and a second replay into the same dir only finds duplicates
    assert g.events() == live
    out2 = ok(g.telctl("replay", "--into", into, *dumps(g), timeout=60))
    m2 = INTO_RE.search(out2)
    assert m2 and int(m2.group(3)) == 0 and int(m2.group(5)) == int(m2.group(1)), out2
    assert len(events_at(g, into)) == len(replayed)


def test_replay_into_shows_what_a_new_certificate_would_decide(make_gate):
    g = make_gate()
    calls = place_rejected_calls(g, 2, attestation="A", validated=True)
    live = settle(g)
    for c in calls:
        t = types(of_call(live, c["call_control_id"]))
        assert "tel.call_rejected" in t and "tel.call_verified" not in t

    ok(g.telctl("issuer", "init"))
    key = os.path.join(g.root, "alice.key")
    pub = ok(g.telctl("keygen", key)).strip()
    cert = json.loads(ok(g.telctl("cert", "issue", "--namespace", "alice.x", "--pubkey", pub,
                                  "--phone", CALLER)))

    into = os.path.join(g.root, "whatif")
    ok(g.telctl("replay", "--into", into, *dumps(g), timeout=60))
    replayed = events_at(g, into)
    for c in calls:
        ev = of_call(replayed, c["call_control_id"])
        assert "tel.call_rejected" not in types(ev), types(ev)
        v = [e for e in ev if e["type"] == "tel.call_verified"]
        assert len(v) == 1, types(ev)
        assert v[0]["data"] == {"namespace": "alice.x", "method": "registry", "serial": cert["serial"]}
    # the live decisions stay what they were
    now = g.events()
    for c in calls:
        assert "tel.call_verified" not in types(of_call(now, c["call_control_id"]))


def write_torn(path, recs, data):
    """Write a torn dump file at path: every whole record of data (recs as
    journal_records gives them), then half of a copy of the first one."""
    with open(path, "wb") as f:
        f.write(data[:recs[-1][0] + recs[-1][1]])
        f.write(data[:recs[0][1] // 2])
    return path


def test_torn_and_corrupt_files(gate):
    g = gate
    place_rejected_calls(g, 2)
    settle(g)
    src = dumps(g)[0]
    recs, data = journal_records(src)
    assert len(recs) >= 4, recs
    work = os.path.join(g.root, "damaged")
    os.mkdir(work)
    torn = write_torn(os.path.join(work, "0000000000000001.dump"), recs, data)
    # corrupt: the first two records good, a flipped byte in the third's payload
    corrupt = os.path.join(work, "0000000000000002.dump")
    buf = bytearray(data)
    off3 = recs[2][0]
    buf[off3 + HDR + (recs[2][1] - HDR) // 2] ^= 0xFF
    with open(corrupt, "wb") as f:
        f.write(bytes(buf))
    missing = os.path.join(work, "0000000000000003.dump")

    into = os.path.join(g.root, "replay-damaged")
    r = g.telctl("replay", "--into", into, torn, corrupt, missing, timeout=60)
    assert r.returncode == 1, "a file that cannot be opened fails the run:\n%s%s" % (r.stdout, r.stderr)
    m = INTO_RE.search(r.stdout)
    assert m, r.stdout + r.stderr
    assert int(m.group(1)) == len(recs) + 2, r.stdout
    assert int(m.group(5)) == 2, "the corrupt file's good records are duplicates:\n" + r.stdout
    err = r.stderr
    assert re.search(r"%s: .*at offset %d .*torn" % (re.escape(torn), recs[-1][0] + recs[-1][1]), err), err
    assert re.search(r"%s: .*offset %d .*corrupt" % (re.escape(corrupt), off3), err), err
    assert missing in err, err
    assert "\r" not in err and "replay: " not in err.replace("telctl replay: ", ""), \
        "no progress line when stderr is not a terminal:\n" + err
    ok(telctl_at(g, into, "verify"))
    assert len(events_at(g, into)) == int(m.group(3))

    # the same files into the live pipeline: all records known, torn/corrupt
    # reported, and the damage fails the run (a torn tail only counts as the
    # crash it usually is in the last file; here it is the first)
    r = g.telctl("replay", torn, corrupt, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    m = LIVE_RE.search(r.stdout)
    assert m and int(m.group(1)) == len(recs) + 2 and int(m.group(3)) == len(recs) + 2, r.stdout
    assert "torn" in r.stderr and "corrupt" in r.stderr, r.stderr
    assert "2 file(s) corrupt" in r.stderr, r.stderr


def test_damaged_file_fails_but_a_torn_last_file_does_not(gate):
    g = gate
    place_rejected_calls(g, 1)
    settle(g)
    src = dumps(g)[0]
    recs, data = journal_records(src)
    work = os.path.join(g.root, "files")
    os.mkdir(work)
    # not a journal at all: nothing replayed, and that is a failure
    text = os.path.join(work, "passwd")
    with open(text, "w") as f:
        f.write("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    # a crash cut the last record of the newest file short: a warning only
    torn = write_torn(os.path.join(work, "0000000000000001.dump"), recs, data)

    r = g.telctl("replay", text, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bad magic" in r.stderr and "1 file(s) corrupt" in r.stderr, r.stderr
    r = g.telctl("replay", "--into", os.path.join(g.root, "into1"), text, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 file(s) corrupt" in r.stderr, r.stderr
    # the good records before the damage are still replayed
    r = g.telctl("replay", "--into", os.path.join(g.root, "into2"), src, text, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    m = INTO_RE.search(r.stdout)
    assert m and int(m.group(1)) == len(recs) and int(m.group(3)) > 0, r.stdout + r.stderr

    for args in ([torn], ["--into", os.path.join(g.root, "into3"), torn], [text, src, torn]):
        r = g.telctl("replay", *args, timeout=60)
        want = 1 if text in args else 0
        assert r.returncode == want, "%s: %s%s" % (args, r.stdout, r.stderr)
        assert "torn" in r.stderr and "0000000000000001.dump" in r.stderr, r.stderr


def test_progress_line_on_a_terminal(gate):
    g = gate
    place_rejected_calls(g, 1)
    settle(g)
    files = dumps(g)
    n = sum(len(journal_records(f)[0]) for f in files)
    master, slave = pty.openpty()
    p = subprocess.Popen([binary("telctl"), "-c", g.conf_path, "replay", "--into",
                          os.path.join(g.root, "tty"), *files],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=g.env())
    os.close(slave)
    out_tty = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out_tty += chunk
        elif p.poll() is not None:
            break
    stdout = p.communicate(timeout=10)[0].decode()
    os.close(master)
    assert p.returncode == 0, stdout + out_tty.decode(errors="replace")
    text = out_tty.decode(errors="replace")
    assert "\rreplay: %d/%d records" % (n, n) in text, repr(text)
    assert "replay:" not in stdout


def test_usage_errors(gate):
    g = gate
    for args in (["replay"], ["replay", "--bogus", "x.dump"], ["replay", "--into"],
                 ["replay", "--into", os.path.join(g.root, "x")]):
        r = g.telctl(*args)
        assert r.returncode == 2, "%s -> %d: %s" % (args, r.returncode, r.stderr)
        assert r.stderr.startswith("telctl replay: "), r.stderr
    r = g.telctl("replay", os.path.join(g.root, "nonexistent.dump"))
    assert r.returncode == 1, r.stderr
    assert "nonexistent.dump" in r.stderr

    events_before = g.events()
    files = glob.glob(os.path.join(g.data_dir, "journal", "*.dump")) or [os.path.join(g.root, "x.dump")]
    r = g.telctl("replay", "--into", g.data_dir, *files)
    assert r.returncode == 2 and "live data_dir" in r.stderr, r.stdout + r.stderr
    link = os.path.join(g.root, "link-to-var")
    os.symlink(g.data_dir, link)
    r = g.telctl("replay", "--into", link + "/", *files)
    assert r.returncode == 2 and "live data_dir" in r.stderr, r.stdout + r.stderr
    assert g.events() == events_before


def test_one_writer_per_replay_target(gate):
    """replay --into a directory a spine (or another replay) holds, or a
    live replay while another one runs, exits 1 and touches nothing."""
    import fcntl
    g = gate
    into = os.path.join(g.root, "into-locked")
    os.makedirs(os.path.join(into, "run"))
    files = glob.glob(os.path.join(g.data_dir, "journal", "*.dump"))
    assert files
    for lock_dir, name, args in ((into, "spine", ["--into", into]),
                                 (g.data_dir, "replay", [])):
        with open(os.path.join(lock_dir, "run", name + ".lock"), "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            r = g.telctl("replay", *(args + files), timeout=30)
        assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
        assert "another %s is running" % name in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(into, "spine"))


def test_live_replay_of_a_foreign_journal(make_gate):
    a = make_gate()
    calls = place_rejected_calls(a, 2)
    settle(a)
    files = dumps(a)
    n = sum(len(journal_records(f)[0]) for f in files)
    b = make_gate()
    assert b.events() == []
    copy = os.path.join(b.root, "from-a")
    os.mkdir(copy)
    for f in files:
        shutil.copy(f, copy)
    copies = sorted(glob.glob(os.path.join(copy, "*.dump")))

    out = ok(b.telctl("replay", *copies, timeout=90))
    m = LIVE_RE.search(out)
    assert m and int(m.group(1)) == n and int(m.group(3)) == 0, out
    assert "new webhooks are now in the spine" in out, out
    ev = b.events()
    for c in calls:
        t = types(of_call(ev, c["call_control_id"]))
        assert t.count("tel.call_inbound") == 1 and t.count("tel.call_rejected") == 1, t
    ok(b.telctl("verify"))
    # a second time, everything is already processed and nothing is added
    out = ok(b.telctl("replay", *copies, timeout=90))
    m = LIVE_RE.search(out)
    assert m and int(m.group(3)) == n, out
    time.sleep(1.0)
    assert [e["id"] for e in b.events() if e["type"] != "tel.command"] == \
        [e["id"] for e in ev if e["type"] != "tel.command"]


def test_live_replay_without_verifiers_fails(make_gate):
    a = make_gate()
    place_rejected_calls(a, 1)
    files = dumps(a)
    b = make_gate(stages=("spine",))
    wait_until(lambda: os.path.exists(os.path.join(b.data_dir, "spine", "data.mdb")), 5, 0.02,
               "the spine to create its data_dir")
    t0 = time.monotonic()
    r = b.telctl("replay", *files, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no verifier connected" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 15
