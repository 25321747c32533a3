# test_single_instance.py - one spine, one actuator and one ingress per data
# directory (stage_claim, DATA_DIR/run/<stage>.lock): a second copy started on
# the same configuration exits 1 with one line naming the stage and the lock,
# and the running set goes on screening calls; a SIGKILLed stage leaves no lock
# behind, so its restart starts (and holds the lock in turn).
import signal

from helpers import MAIN_NUMBER, announce_done

CALLER = "+13125550100"
EXIT_TIMEOUT_S = 5.0
SINGLE = ("spine", "actuator", "ingress")
ALL_TAGS = ("spine", "actuator", "verifier1", "verifier2", "ingress")


def refused_line(g, name):
    return "%s: another %s is running on %s (lock %s/run/%s.lock held)" % (
        name, name, g.data_dir, g.data_dir, name)


def start_second(g, name):
    """Start another copy of stage name on g's configuration.  Returns its exit
    status (None if it still ran after EXIT_TIMEOUT_S; it is then killed) and
    the non-empty lines of its output."""
    pr = g.start_one(name, name + "-second")
    g.procs.remove(pr)          # not part of the set the teardown stops
    status = pr.wait(EXIT_TIMEOUT_S)
    return status, [line for line in pr.log_text().splitlines() if line.strip()]


def assert_refused(g, name):
    status, lines = start_second(g, name)
    assert status == 1 and lines == [refused_line(g, name)], (
        "second %s: exit status %s (None = still running after %.0f s), output %r; wanted 1 and %r"
        % (name, status, EXIT_TIMEOUT_S, lines, refused_line(g, name)))


def assert_screens(g):
    """A call from an unknown caller is still answered, announced and hung up."""
    call = g.standin.call(CALLER, MAIN_NUMBER, attestation="A")
    ccid = call["call_control_id"]
    g.wait_events(announce_done(ccid), 15, "announce flow of %s" % ccid)
    sent = [c["action"] for c in g.standin.commands(ccid)]
    assert sent == ["answer", "speak", "hangup"], sent


def assert_all_alive(g):
    for tag in ALL_TAGS:
        pr = g.proc(tag)
        assert pr is not None and pr.alive(), "%s is not running:\n%s" % (
            tag, pr.log_text() if pr else "")


def test_second_copy_refused(gate):
    for name in SINGLE:
        assert_refused(gate, name)
    assert_all_alive(gate)
    assert_screens(gate)


def test_restart_after_sigkill(gate):
    for name in SINGLE:
        assert gate.kill(name) == -signal.SIGKILL
        gate.restart(name)
    gate.wait_health()
    assert_all_alive(gate)
    assert_screens(gate)
    for name in SINGLE:         # the restarted ones hold the locks now
        assert_refused(gate, name)
    assert_screens(gate)
