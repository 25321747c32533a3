# test_stream.py - the spine's live event stream (SPEC 5): two-frame messages
# [type, msgpack event] on events_endpoint, published after commit, filterable
# by prefix; and `telctl tail` following it.
import json
import os
import signal
import subprocess
import time

import msgpack
import zmq

import helpers
from helpers import EVENT_KEYS, MAIN_NUMBER, ReadLines, announce_done

FLOW_TYPES = {"tel.call_inbound", "tel.call_rejected", "tel.call_answered", "tel.call_hangup",
              "tel.command"}


def as_str(v):
    return v.decode() if isinstance(v, bytes) else v


def receive(sock, until, timeout, check=None):
    """Receive messages until until(msgs) or timeout; every message is
    checked by check(frames, event) as it arrives.  Returns [(type, event)]."""
    msgs = []
    deadline = time.monotonic() + timeout
    while not until(msgs):
        left = deadline - time.monotonic()
        assert left > 0, "stream: timed out; got %s" % [t for t, _ in msgs]
        if not sock.poll(int(left * 1000) + 1):
            continue
        frames = sock.recv_multipart()
        assert len(frames) == 2, "want 2 frames, got %d" % len(frames)
        event = msgpack.unpackb(frames[1], raw=False)
        assert isinstance(event, dict), event
        event = {as_str(k): v for k, v in event.items()}
        if check:
            check(frames, event)
        msgs.append((frames[0].decode(), event))
    return msgs


def sub(ctx, endpoint, prefix):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, prefix)
    s.connect(endpoint)
    return s


def hangup_of(ccid):
    return lambda msgs: any(t == "tel.call_hangup" and e.get("call_control_id") == ccid for t, e in msgs)


def test_raw_subscriber(gate):
    g = gate
    ctx = zmq.Context()
    everything = sub(ctx, g.events_endpoint, b"")
    only_cmd = sub(ctx, g.events_endpoint, b"tel.command")
    try:
        def committed(frames, event):
            assert frames[0].decode() == event["type"]
            missing = [k for k in EVENT_KEYS if k not in event]
            assert not missing, "published event lacks %s: %s" % (missing, event)
            assert isinstance(event["data"], dict)
            stored = g.events("--from", str(event["seq"]), "--limit", "1")
            assert stored and stored[0]["seq"] == event["seq"], \
                "seq %d published before it is visible to telctl events" % event["seq"]
            assert stored[0]["hash"] == as_str(event["hash"]) and stored[0]["id"] == as_str(event["id"])

        # Warm-up call: proves the subscription is live before the real one.
        warm = g.standin.call("+13125550131", MAIN_NUMBER)
        receive(everything, hangup_of(warm["call_control_id"]), 15, committed)
        call = g.standin.call("+13125550132", MAIN_NUMBER)
        ccid = call["call_control_id"]
        msgs = receive(everything, hangup_of(ccid), 15, committed)
        g.wait_events(announce_done(ccid), 10, "flow done")
        def cmds_of(m):
            return sum(1 for t, e in m if t == "tel.command" and e.get("call_control_id") == ccid)
        msgs += receive(everything, lambda m: cmds_of(msgs + m) >= 3, 10, committed)
        mine = [e for t, e in msgs if e.get("call_control_id") == ccid]
        assert {e["type"] for e in mine} >= FLOW_TYPES, [e["type"] for e in mine]
        stored = [e for e in g.events() if e.get("call_control_id") == ccid]
        got = sorted(e["seq"] for e in mine)
        assert got == sorted(e["seq"] for e in stored), "stream and log differ for the call"

        cmds = receive(only_cmd, lambda m: sum(1 for t, e in m if e.get("call_control_id") == ccid) >= 3,
                       10)
        assert cmds and all(t.startswith("tel.command") for t, _ in cmds), [t for t, _ in cmds]
    finally:
        everything.close()
        only_cmd.close()
        ctx.term()


def start_tail(g, *args):
    p = subprocess.Popen([helpers.binary("telctl"), "-c", g.conf_path, "tail"] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=g.env())
    return p, ReadLines(p.stdout)


def read_until(lines, pred, timeout):
    out = []
    deadline = time.monotonic() + timeout
    while not pred(out):
        left = deadline - time.monotonic()
        line = lines.readline(left) if left > 0 else None
        assert line is not None, "tail: no more lines within %ss; got %s" % (timeout, out)
        if line.strip():
            out.append(json.loads(line))
    return out


def stop_tail(p):
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = None
    err = p.stderr.read().decode(errors="replace")
    p.stdout.close()
    p.stderr.close()
    assert rc == 0, "telctl tail exit %s on SIGTERM: %s" % (rc, err)


def test_telctl_tail(gate):
    g = gate
    p, lines = start_tail(g, "--json")
    pf, flines = start_tail(g, "--type", "tel.command", "--json")
    try:
        warm = g.standin.call("+13125550133", MAIN_NUMBER)
        wid = warm["call_control_id"]
        read_until(lines, lambda o: any(e["type"] == "tel.call_hangup" and e["call_control_id"] == wid
                                        for e in o), 15)
        read_until(flines, lambda o: any(e["call_control_id"] == wid for e in o), 15)

        call = g.standin.call("+13125550134", MAIN_NUMBER)
        ccid = call["call_control_id"]
        t0 = time.monotonic()
        first = read_until(lines, lambda o: any(e.get("call_control_id") == ccid for e in o), 5)
        assert time.monotonic() - t0 < 3, "tail was slow to print"
        assert all(set(EVENT_KEYS) <= set(e) for e in first)
        def flow_seen(o):
            mine = [e for e in first + o if e.get("call_control_id") == ccid]
            return sum(1 for e in mine if e["type"] == "tel.command") >= 3 and \
                any(e["type"] == "tel.call_hangup" for e in mine)
        got = first + read_until(lines, flow_seen, 15)
        mine = [e for e in got if e.get("call_control_id") == ccid]
        assert {e["type"] for e in mine} >= FLOW_TYPES, [e["type"] for e in mine]
        seqs = [e["seq"] for e in got]
        assert seqs == sorted(seqs), "tail printed out of order"
        filtered = read_until(flines, lambda o: sum(1 for e in o if e.get("call_control_id") == ccid) >= 3, 15)
        assert all(e["type"].startswith("tel.command") for e in filtered), [e["type"] for e in filtered]
    finally:
        stop_tail(p)
        stop_tail(pf)


# --- tail across gaps in the stream ------------------------------------------
#
# A fake publisher (XPUB, so the test knows when tail has subscribed) on an
# endpoint of its own plays back the events of a real spine database with
# some left out, as a spine restart (events published before tail
# reconnected) or a slow reader (events dropped) would.

def recorded_events(g):
    """A gate's events after one announce call (at least 7), pipeline stopped."""
    call = g.standin.call("+13125550135", MAIN_NUMBER)
    every = g.wait_events(announce_done(call["call_control_id"]), 15, "announce flow")
    g.stop_all()
    assert len(every) >= 7, every
    return every


class FakeStream:
    def __init__(self, g, data_dir, *args):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        endpoint = "ipc://%s/fake-events.sock" % g.root
        self.pub.bind(endpoint)
        env = g.env()
        env.update({"TEL_EVENTS_ENDPOINT": endpoint, "TEL_DATA_DIR": data_dir})
        self.p = subprocess.Popen([helpers.binary("telctl"), "-c", g.conf_path, "tail"] + list(args),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.lines = ReadLines(self.p.stdout)
        assert self.pub.poll(5000), "telctl tail did not subscribe"
        self.pub.recv()                 # the subscription

    def send(self, events):
        for e in events:
            self.pub.send_multipart([e["type"].encode(), msgpack.packb(e)])

    def close(self):
        """Stop tail; returns its stderr."""
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(5)
        err = self.p.stderr.read().decode(errors="replace")
        self.p.stdout.close()
        self.p.stderr.close()
        self.pub.close()
        self.ctx.term()
        assert rc == 0, "telctl tail exit %s: %s" % (rc, err)
        return err


def test_tail_fills_a_gap_from_the_database(gate):
    g = gate
    every = recorded_events(g)
    n = len(every)
    sent = every[:3] + every[6:]                        # seq 4..6 never published

    t = FakeStream(g, g.data_dir, "--json")
    try:
        t.send(sent)
        got = read_until(t.lines, lambda o: len(o) >= n, 10)
    finally:
        err = t.close()
    assert [e["seq"] for e in got] == list(range(1, n + 1)), [e["seq"] for e in got]
    assert got == every, "events filled from the database differ from telctl events"
    assert "missed" not in err, err

    # With --type, tail still sees every seq: a gap that holds tel.command
    # events is noticed and filled, and only tel.command events are printed.
    lo = max(1, min(i for i, e in enumerate(every) if e["type"] == "tel.command"))
    sent = every[:lo] + every[lo + 3:]
    cmds = [e for e in every if e["type"] == "tel.command"]
    assert [e for e in every[lo:lo + 3] if e in cmds], "no tel.command in the gap"
    t = FakeStream(g, g.data_dir, "--type", "tel.command", "--json")
    try:
        t.send(sent)
        got = read_until(t.lines, lambda o: len(o) >= len(cmds), 10)
    finally:
        err = t.close()
    assert got == cmds, [e["seq"] for e in got]
    assert "missed" not in err, err


def test_tail_reports_a_gap_it_cannot_fill(gate):
    g = gate
    every = recorded_events(g)
    other = os.path.join(g.root, "empty")               # a data_dir without these events
    os.mkdir(other)
    # A stream whose chain is not the database's: events 4..6 are there, but
    # do not link to the event 3 or the event 7 received.
    unlinked3, unlinked7 = dict(every[2]), dict(every[6])
    unlinked3["hash"] = unlinked7["prev_hash"] = "ab" * 32
    for data_dir, sent in ((other, every[:3] + every[6:]),
                           (g.data_dir, every[:2] + [unlinked3] + every[6:]),
                           (g.data_dir, every[:3] + [unlinked7] + every[7:])):
        t = FakeStream(g, data_dir, "--json")
        try:
            t.send(sent)
            got = read_until(t.lines, lambda o: len(o) >= len(every) - 3, 10)
        finally:
            err = t.close()
        assert [e["seq"] for e in got] == [1, 2, 3] + list(range(7, len(every) + 1))
        lines = [x for x in err.splitlines() if "missed" in x]
        assert len(lines) == 1 and "missed events 4..6" in lines[0] and "--from 4" in lines[0], err


def test_tail_text_is_one_line_per_event(gate):
    g = gate
    every = recorded_events(g)
    forged = dict(every[0])
    forged["from"] = "+13125550135\n999 1999-01-01T00:00:00Z tel.call_verified forged"
    t = FakeStream(g, g.data_dir)
    try:
        t.send([forged] + every[1:3])
        got = []
        while len(got) < 3:
            line = t.lines.readline(10)
            assert line is not None, "tail: %s" % got
            got.append(line)
    finally:
        t.close()
    assert [x.split(" ", 1)[0] for x in got] == ["1", "2", "3"], got
    assert "\\n999 1999-01-01T00:00:00Z tel.call_verified forged" in got[0], got[0]
