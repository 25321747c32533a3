# test_diskfull.py - the ingress when its journal cannot be written (SPEC 3:
# 503, Telnyx retries; /health 503 with the reason) and its recovery once
# space returns: a full tmpfs as DATA_DIR/journal, and RLIMIT_FSIZE.
import errno
import json
import os
import resource
import signal
import subprocess
import time
import uuid

import pytest

from helpers import (MAIN_NUMBER, announce_done, envelope, http_req, initiated_payload,
                     journal_records, wait_until)

TMPFS_SIZE = "1m"
FILLER = "zz-filler.tmp"       # not a *.dump name: the journal ignores it


def health(g):
    status, _, raw = http_req(g.http_port, "GET", "/health", timeout=3)
    return status, json.loads(raw)


def fake_call_body():
    """A signed-able call.initiated for a call the stand-in does not know:
    processed into inbound + decision (+ a failed answer outcome)."""
    return envelope("call.initiated", initiated_payload("v3:df-" + uuid.uuid4().hex,
                                                        "+13125557777", MAIN_NUMBER))


def fill(path):
    """Write path until the file system is full (ENOSPC).  Returns bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 64, 1):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                    n += chunk
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return n


def inbound_of(eids):
    def pred(events):
        have = {e.get("webhook_id") for e in events if e["type"] == "tel.call_inbound"}
        return set(eids) <= have
    return pred


def once_each(events, eids):
    for eid in eids:
        n = sum(1 for e in events if e.get("webhook_id") == eid and e["type"] == "tel.call_inbound")
        assert n == 1, "webhook %s: %d tel.call_inbound events" % (eid, n)


@pytest.fixture
def tmpfs_gate(make_gate):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    g = make_gate(start=False, standin_args=["--retry-base-ms", "500"])
    journal = os.path.join(g.data_dir, "journal")
    os.makedirs(journal)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % TMPFS_SIZE,
                        "tmpfs", journal], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs in this sandbox: %s" % (r.stderr.strip() or r.returncode))
    try:
        g.start()
        yield g, journal
    finally:
        try:
            if g.proc("ingress"):
                g.stop("ingress")      # releases the journal's files (asserts exit 0)
        finally:
            r = subprocess.run(["umount", journal], capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", journal], capture_output=True, timeout=10)


def test_full_journal_answers_503_and_recovers(tmpfs_gate):
    g, journal = tmpfs_gate
    call = g.standin.call("+13125557001", MAIN_NUMBER)
    g.wait_events(announce_done(call["call_control_id"]), 15, "a call before the disk is full")

    filler = os.path.join(journal, FILLER)
    fill(filler)
    # The journal file's last page may still have room for a record or two,
    # and the zeros the ingress keeps written after its records (protocol.md
    # section 3) are space it already holds: records still go there.
    newest = os.path.join(journal, sorted(n for n in os.listdir(journal) if n.endswith(".dump"))[-1])
    recs, data = journal_records(newest)
    assert recs, "no record in %s" % newest
    reserve = len(data) - (recs[-1][0] + recs[-1][1])
    attempts = 8 + reserve // (min(n for _, n in recs) // 2)
    accepted, refused = [], None
    for _ in range(attempts):
        body, eid = fake_call_body()
        status, answer, raw = g.post_signed(body)
        if status == 200:
            accepted.append(eid)
            continue
        refused = (status, answer, raw)
        break
    assert refused is not None, "%d webhooks accepted on a full file system" % attempts
    status, answer, raw = refused
    assert status == 503, raw
    assert answer and answer.get("error") and answer.get("detail"), raw
    st, h = health(g)
    assert st == 503, h
    reason = h.get("reason") or h.get("detail") or ""
    assert "space" in reason.lower(), "/health does not say why: %s" % h

    # Telnyx (the stand-in) retries a 503: this call gets through once space returns.
    during = g.standin.call("+13125557002", MAIN_NUMBER)
    first = g.standin.call_state(during["call_control_id"])["webhooks"][0]
    assert first["status"] == 503, first
    assert g.proc("ingress").alive(), "ingress died on a full disk:\n" + g.proc("ingress").log_text()

    os.unlink(filler)
    body, eid = fake_call_body()
    status, answer, raw = g.post_signed(body)
    assert status == 200, raw
    accepted.append(eid)
    st, h = health(g)
    assert st == 200, h

    g.wait_events(announce_done(during["call_control_id"]), 30, "the call retried by the stand-in")
    events = g.wait_events(inbound_of(accepted), 15, "every accepted webhook processed")
    once_each(events, accepted)

    # The failed writes left no torn record: a restart recovers the journal whole.
    g.stop("ingress")
    g.start_one("ingress")
    g.wait_health()
    corrupt = [n for n in os.listdir(journal) if n.endswith(".corrupt")]
    assert not corrupt, "journal files set aside after recovery: %s" % corrupt
    late = g.standin.call("+13125557003", MAIN_NUMBER)
    events = g.wait_events(announce_done(late["call_control_id"]), 15, "a call after the restart")
    once_each(events, accepted)


def test_file_size_limit_answers_503_and_recovers(gate):
    """RLIMIT_FSIZE on the running ingress: a journal write past it must fail
    with 503 (EFBIG), not kill the ingress with SIGXFSZ."""
    g = gate
    call = g.standin.call("+13125557101", MAIN_NUMBER)
    g.wait_events(announce_done(call["call_control_id"]), 15, "a call before the limit")
    journal = os.path.join(g.data_dir, "journal")
    dumps = sorted(n for n in os.listdir(journal) if n.endswith(".dump"))
    assert dumps, "no journal dump file"
    recs, _ = journal_records(os.path.join(journal, dumps[-1]))
    assert recs, "no record in " + dumps[-1]
    used = recs[-1][0] + recs[-1][1]     # zeros may follow (protocol.md section 3)
    pid = g.proc("ingress").p.pid
    limit = used + 4096
    # Lower the soft limit only: raising a hard limit again needs
    # CAP_SYS_RESOURCE, which a sandbox may not grant even to root.
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    try:
        accepted, refused = [], None
        for _ in range(20):
            body, eid = fake_call_body()
            try:
                status, answer, raw = g.post_signed(body)
            except OSError as e:
                refused = (0, None, repr(e).encode())
                break
            if status == 200:
                accepted.append(eid)
                continue
            refused = (status, answer, raw)
            break
        time.sleep(0.2)
        ing = g.proc("ingress")
        if not ing.alive():
            log = ing.log_text()
            st = g.forget_dead("ingress")
            pytest.fail("the ingress died when its journal hit RLIMIT_FSIZE (exit status %s%s); "
                        "expected 503 and to keep running. Log tail:\n%s" % (
                            st, " = SIGXFSZ" if st == -signal.SIGXFSZ else "", log[-1500:]))
        assert refused is not None, "20 webhooks accepted past the file size limit"
        status, answer, raw = refused
        assert status == 503, raw
        st, h = health(g)
        assert st == 503, h
    finally:
        if g.proc("ingress") and g.proc("ingress").alive():
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    body, eid = fake_call_body()
    status, answer, raw = g.post_signed(body)
    assert status == 200, raw
    accepted.append(eid)
    wait_until(lambda: health(g)[0] == 200, 5, what="/health 200 again")
    events = g.wait_events(inbound_of(accepted), 15, "every accepted webhook processed")
    once_each(events, accepted)
