# test_stream.py - the spine's live event stream (SPEC 5): two-frame messages
# [type, msgpack event] on events_endpoint, published after commit, filterable
# by prefix; and `telctl tail` following it.
import json
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
