# test_chaos.py - seeded chaos test of the recovery design (protocol.md 6):
# calls flow while a killer SIGKILLs random stages and restarts them; then every
# accepted webhook has its events in the spine exactly once, every call ended its
# flow, no action went out under two command_ids and the chain verifies.
# TELGATE_CHAOS_SEED=N replays a seed; TELGATE_SOAK=1 (make soak) runs longer.
import collections
import os
import random
import signal
import threading
import time

from helpers import MAIN_NUMBER, assert_chain, of_call, types, wait_until

SOAK = os.environ.get("TELGATE_SOAK") == "1"
CALLS = 300 if SOAK else 40
DURATION_S = 180.0 if SOAK else 25.0
QUIESCE_S = 120.0 if SOAK else 60.0
VERIFIED_SHARE = 0.2
KILL_EVERY_S = (1.0, 3.0)
RESTART_AFTER_S = (0.1, 0.8)
# Half of the kills first freeze the stage (SIGSTOP) so work piles up in its
# queues and dies with it: the crash then always costs in-flight messages.
FREEZE_SHARE = 0.5
FREEZE_S = (0.3, 1.5)
TARGETS = ("ingress", "verifier1", "verifier2", "spine", "actuator")
VERIFIED_CALLERS = ["+1312555700%d" % i for i in range(4)]
CHAOS_CONF = {"redeliver_after_ms": 1000, "command_resend_ms": 1000, "max_attempts": 20}
# Webhook retries 0.5+1+2+4+8 s: a delivery outlives any ingress restart here.
STANDIN_ARGS = ["--retry-base-ms", "500", "--workers", "16"]

ANNOUNCE_TYPES = ("tel.call_inbound", "tel.call_rejected", "tel.call_answered", "tel.call_hangup")
VERIFIED_TYPES = ("tel.call_inbound", "tel.call_verified", "tel.call_answered", "tel.call_hangup")
ANNOUNCE_ACTIONS = ("answer", "hangup", "speak")
VERIFIED_ACTIONS = ("answer",)
# What each delivered webhook must have produced (event type, command action).
WEBHOOK_PRODUCES = {"call.initiated": ("tel.call_inbound", None),
                    "call.answered": ("tel.call_answered", None),
                    "call.hangup": ("tel.call_hangup", None)}


def chaos_seed():
    env = os.environ.get("TELGATE_CHAOS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 31)


def ok(r):
    assert r.returncode == 0, "telctl %s failed (%d): %s" % (r.args[3:], r.returncode, r.stderr)
    return r.stdout


def setup_verified_callers(g):
    ok(g.telctl("issuer", "init"))
    key = os.path.join(g.root, "chaos-holder.key")
    pub = ok(g.telctl("keygen", key)).strip()
    args = ["cert", "issue", "--namespace", "chaos.x", "--pubkey", pub]
    for p in VERIFIED_CALLERS:
        args += ["--phone", p]
    ok(g.telctl(*args))


class Killer(threading.Thread):
    """SIGKILLs a random stage every KILL_EVERY_S (sometimes after freezing
    it for FREEZE_S) and restarts it after RESTART_AFTER_S, until stopped.
    Records what it did."""

    def __init__(self, g, rng):
        super().__init__(daemon=True)
        self.g, self.rng = g, rng
        self.stop_ev = threading.Event()
        self.history = []
        self.error = None

    def run(self):
        try:
            while not self.stop_ev.wait(self.rng.uniform(*KILL_EVERY_S)):
                tag = self.rng.choice(TARGETS)
                freeze = self.rng.uniform(*FREEZE_S) if self.rng.random() < FREEZE_SHARE else 0.0
                pause = self.rng.uniform(*RESTART_AFTER_S)
                t0 = time.monotonic()
                pr = self.g.proc(tag)
                if freeze and pr is not None and pr.alive():
                    pr.p.send_signal(signal.SIGSTOP)
                    time.sleep(freeze)
                status = self.g.kill(tag)
                time.sleep(pause)
                self.g.restart(tag)
                self.history.append((round(t0, 2), tag, round(freeze, 2), status))
        except BaseException as e:      # reported by the test, not lost in a thread
            self.error = e


class Caller:
    """Places the scheduled calls from threads (a placement blocks while the
    stand-in delivers call.initiated) and hangs up answered verified calls."""

    def __init__(self, g):
        self.g = g
        self.lock = threading.Lock()
        self.calls = {}         # ccid -> verified?
        self.hung = set()
        self.errors = []
        self.threads = []
        self.stop_ev = threading.Event()
        self.hanger = threading.Thread(target=self._hang_loop, daemon=True)
        self.hanger.start()

    def place(self, frm, verified):
        def run():
            try:
                kw = {"attestation": "A"} if verified else {}
                c = self.g.standin.call(frm, MAIN_NUMBER, **kw)
                with self.lock:
                    self.calls[c["call_control_id"]] = verified
            except BaseException as e:
                with self.lock:
                    self.errors.append("placing %s: %r" % (frm, e))
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def _hang_loop(self):
        while not self.stop_ev.wait(0.3):
            with self.lock:
                todo = [c for c, v in self.calls.items() if v and c not in self.hung]
            for ccid in todo:
                try:
                    st = self.g.standin.call_state(ccid)["state"]
                    if st == "answered":
                        self.g.standin.caller_hangup(ccid)
                    if st in ("answered", "hungup"):
                        with self.lock:
                            self.hung.add(ccid)
                except BaseException as e:
                    with self.lock:
                        self.errors.append("hanging up %s: %r" % (ccid, e))

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "call placements still running"

    def stop(self):
        self.stop_ev.set()
        self.hanger.join(5)


def call_done(events, ccid, verified):
    ev = of_call(events, ccid)
    t = set(types(ev))
    acts = {e["data"].get("action") for e in ev if e["type"] == "tel.command"}
    want_t = VERIFIED_TYPES if verified else ANNOUNCE_TYPES
    want_a = VERIFIED_ACTIONS if verified else ANNOUNCE_ACTIONS
    return set(want_t) <= t and set(want_a) <= acts


def describe(g, events, ccid, verified):
    st = g.standin.call_state(ccid)
    return "%s (%s): stand-in state %s, webhooks %s, commands %s, events %s" % (
        ccid, "verified" if verified else "announce", st["state"],
        [(w["event_type"], w["status"], w["attempts"]) for w in st["webhooks"]],
        [(c["action"], c["status"]) for c in st["commands"]],
        [(e["type"], e["data"].get("action")) for e in of_call(events, ccid)])


def check_call(g, events, ccid, verified):
    """Every point of the test for one call; returns a list of problems."""
    bad = []
    ev = of_call(events, ccid)
    want_t = VERIFIED_TYPES if verified else ANNOUNCE_TYPES
    want_a = VERIFIED_ACTIONS if verified else ANNOUNCE_ACTIONS
    cnt = collections.Counter(types(ev))
    for typ in want_t:
        if cnt[typ] != 1:
            bad.append("%s: %d x %s (want 1)" % (ccid, cnt[typ], typ))
    other = "tel.call_rejected" if verified else "tel.call_verified"
    if cnt[other]:
        bad.append("%s: unexpected %s" % (ccid, other))
    acts = collections.Counter(e["data"].get("action") for e in ev if e["type"] == "tel.command")
    if sorted(acts.elements()) != sorted(want_a):
        bad.append("%s: tel.command actions %s, want each of %s once" % (ccid, dict(acts), want_a))
    for e in ev:
        if e["type"] == "tel.command" and not e["data"].get("ok"):
            bad.append("%s: command failed: %s" % (ccid, e["data"]))

    st = g.standin.call_state(ccid)
    if st["state"] != "hungup":
        bad.append("%s: stand-in state %s, want hungup" % (ccid, st["state"]))
    sent_ok = {c["action"] for c in st["commands"] if c["status"] == 200}
    if sent_ok != set(want_a):
        bad.append("%s: stand-in accepted actions %s, want %s" % (ccid, sorted(sent_ok), want_a))
    by_action = collections.defaultdict(set)
    for c in st["commands"]:
        by_action[c["action"]].add(c["command_id"])
    for action, cids in by_action.items():
        if len(cids) != 1:
            bad.append("%s: %s sent under %d command_ids %s" % (ccid, action, len(cids), sorted(cids)))

    by_hook = collections.Counter(e.get("webhook_id") for e in ev)
    for w in st["webhooks"]:
        if not 200 <= (w["status"] or 0) < 300:
            bad.append("%s: webhook %s %s never accepted (last status %s after %d attempts)" % (
                ccid, w["event_type"], w["id"], w["status"], w["attempts"]))
            continue
        want = WEBHOOK_PRODUCES.get(w["event_type"])
        if want and not any(e["type"] == want[0] and e.get("webhook_id") == w["id"] for e in ev):
            bad.append("%s: accepted webhook %s %s has no %s event" % (ccid, w["event_type"], w["id"], want[0]))
        if w["event_type"] == "call.initiated" and by_hook[w["id"]] != 3:
            bad.append("%s: call.initiated %s produced %d events, want inbound+decision+answer outcome"
                       % (ccid, w["id"], by_hook[w["id"]]))
    return bad


def run_chaos(make_gate, seed):
    rng = random.Random(seed)
    g = make_gate(conf=CHAOS_CONF, verifiers=2, standin_args=STANDIN_ARGS)
    setup_verified_callers(g)

    # The schedule is drawn up front so a seed fixes it.
    schedule = []
    for i in range(CALLS):
        verified = rng.random() < VERIFIED_SHARE
        frm = rng.choice(VERIFIED_CALLERS) if verified else "+1312555%04d" % (8000 + i)
        schedule.append((rng.uniform(0, DURATION_S), frm, verified))
    schedule.sort()

    caller = Caller(g)
    killer = Killer(g, random.Random(rng.random()))
    killer.start()
    t0 = time.monotonic()
    try:
        for at, frm, verified in schedule:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            caller.place(frm, verified)
        caller.join(30)
    finally:
        killer.stop_ev.set()
        killer.join(20)
    print("chaos seed %d: kills %s" % (seed, killer.history))
    assert killer.error is None, "killer failed: %r" % killer.error
    assert not killer.is_alive(), "killer did not stop"
    assert len(killer.history) >= 3, "too few kills to mean anything: %s" % killer.history
    for tag in TARGETS:
        pr = g.proc(tag)
        assert pr is not None and pr.alive(), "%s not running after the chaos:\n%s" % (
            tag, pr.log_text() if pr else "(no process)")
    g.wait_health(20)

    with caller.lock:
        calls = dict(caller.calls)
    assert len(calls) == CALLS and not caller.errors, \
        "placed %d of %d calls; errors: %s" % (len(calls), CALLS, caller.errors[:5])

    holder = {}

    def all_done():
        holder["ev"] = g.events()
        return all(call_done(holder["ev"], c, v) for c, v in calls.items())
    try:
        wait_until(all_done, QUIESCE_S, 0.5, "every call's flow in the spine")
    except AssertionError as e:
        ev = holder.get("ev", [])
        missing = [describe(g, ev, c, v) for c, v in calls.items() if not call_done(ev, c, v)]
        raise AssertionError("%s; %d of %d calls incomplete, e.g.:\n%s" % (
            e, len(missing), len(calls), "\n".join(missing[:5])))
    caller.stop()

    # Let re-publication and outbox re-sends run a few more rounds: they must add nothing.
    time.sleep(3.0)
    events = g.events()
    problems = []
    for ccid, verified in calls.items():
        problems += check_call(g, events, ccid, verified)
    seen = collections.Counter((e["type"], e.get("webhook_id"), e["data"].get("action")) for e in events)
    problems += ["event %s repeated %d times" % (k, n) for k, n in seen.items() if n > 1]
    parked = [e for e in events if e["type"] == "tel.webhook_parked"]
    problems += ["good webhook parked: %s" % e["data"] for e in parked]
    assert not problems, "%d problems:\n%s" % (len(problems), "\n".join(problems[:30]))
    assert_chain(g, events)

    by_ccid_action = collections.defaultdict(set)
    for c in g.standin.commands():
        by_ccid_action[(c["call_control_id"], c["action"])].add(c["command_id"])
    twice = {k: v for k, v in by_ccid_action.items() if len(v) != 1}
    assert not twice, "actions sent under several command_ids: %s" % twice


def test_chaos_random_kills(make_gate):
    seed = chaos_seed()
    print("chaos seed %d (replay with TELGATE_CHAOS_SEED=%d)" % (seed, seed))
    try:
        run_chaos(make_gate, seed)
    except AssertionError as e:
        raise AssertionError("[chaos seed %d; replay with TELGATE_CHAOS_SEED=%d] %s" % (seed, seed, e)) from None
