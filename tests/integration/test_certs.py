# test_certs.py - namespace certificates end to end (SPEC sections 4 and 7):
# telctl issues and revokes through the spine, verifiers decide by token or by
# registry with the STIR/SHAKEN minimum, and the calls flow accordingly.
import json
import os
import stat

import pytest

from helpers import (FORWARD_NUMBER, FORWARD_TARGET, MAIN_NUMBER, announce_done, of_call, types)

CALLER = "+13125550100"
SPOOFED = "+19995550000"


def ok(r):
    assert r.returncode == 0, "exit %d: %s%s" % (r.returncode, r.stdout, r.stderr)
    return r.stdout


class Holder:
    """A namespace holder: key pair and certificate issued by the gate's operator."""

    def __init__(self, g, namespace="alice.x", phones=(CALLER,), days=None):
        self.key = os.path.join(g.root, namespace + ".key")
        self.cert_file = os.path.join(g.root, namespace + ".cert.json")
        self.pub = ok(g.telctl("keygen", self.key)).strip()
        args = ["cert", "issue", "--namespace", namespace, "--pubkey", self.pub, "--out", self.cert_file]
        for p in phones:
            args += ["--phone", p]
        if days:
            args += ["--days", str(days)]
        self.cert = json.loads(ok(g.telctl(*args)))
        self.g = g

    def token(self, frm, to=MAIN_NUMBER):
        return ok(self.g.telctl("token", "--key", self.key, "--cert", self.cert_file,
                                "--from", frm, "--to", to)).strip()


@pytest.fixture
def issuer_gate(make_gate):
    g = make_gate()
    ok(g.telctl("issuer", "init"))
    return g


def decision(g, call):
    ccid = call["call_control_id"]

    def decided(events):
        t = types(of_call(events, ccid))
        return "tel.call_verified" in t or "tel.call_rejected" in t
    ev = of_call(g.wait_events(decided, 15, "decision for %s" % ccid), ccid)
    return [e for e in ev if e["type"] in ("tel.call_verified", "tel.call_rejected")][0]


def sent_actions(g, ccid, n):
    g_cmds = {}

    def have():
        g_cmds["c"] = g.standin.commands(ccid)
        return len(g_cmds["c"]) >= n
    from helpers import wait_until
    wait_until(have, 10, 0.05, "%d commands for %s" % (n, ccid))
    return [c["action"] for c in g_cmds["c"]]


def test_issue_then_registry_call_verified_and_answered(issuer_gate):
    g = issuer_gate
    h = Holder(g)
    assert len(h.cert["serial"]) == 16 and h.cert["namespace"] == "alice.x"
    issued = g.events("--type", "ns.cert_issued")
    assert [e["data"]["serial"] for e in issued] == [h.cert["serial"]]

    call = g.standin.call(CALLER, MAIN_NUMBER, attestation="A", validated=True)
    d = decision(g, call)
    assert d["type"] == "tel.call_verified", d
    assert d["data"] == {"namespace": "alice.x", "method": "registry", "serial": h.cert["serial"]}
    assert sent_actions(g, call["call_control_id"], 1) == ["answer"]
    ev = g.wait_events(lambda e: "tel.call_answered" in types(of_call(e, call["call_control_id"])), 10)
    assert "tel.call_hangup" not in types(of_call(ev, call["call_control_id"]))


def test_verified_call_to_forwarding_number_is_transferred(issuer_gate):
    g = issuer_gate
    Holder(g)
    call = g.standin.call(CALLER, FORWARD_NUMBER, attestation="A")
    assert decision(g, call)["type"] == "tel.call_verified"
    assert sent_actions(g, call["call_control_id"], 1) == ["transfer"]
    body = g.standin.commands(call["call_control_id"])[0]["body"]
    assert body["to"] == FORWARD_TARGET, body


def test_revoke_then_next_call_rejected(issuer_gate):
    g = issuer_gate
    h = Holder(g)
    assert decision(g, g.standin.call(CALLER, MAIN_NUMBER, attestation="A"))["type"] == "tel.call_verified"
    out = ok(g.telctl("cert", "revoke", h.cert["serial"]))
    assert h.cert["serial"] in out
    # takes effect for the very next call, no restart
    call = g.standin.call(CALLER, MAIN_NUMBER, attestation="A")
    d = decision(g, call)
    assert d["type"] == "tel.call_rejected" and d["data"]["reason"] == "cert_revoked", d
    g.wait_events(announce_done(call["call_control_id"]), 15, "announcement after revocation")
    # the token of a revoked certificate is refused too
    call = g.standin.call(SPOOFED, MAIN_NUMBER, token=h.token(SPOOFED))
    d = decision(g, call)
    assert d["data"]["reason"] == "token_invalid", d
    revoked = g.events("--type", "ns.cert_revoked")
    assert [e["data"]["serial"] for e in revoked] == [h.cert["serial"]]
    listed = [json.loads(x) for x in ok(g.telctl("cert", "list", "--json")).splitlines()]
    assert [(c["serial"], c["state"]) for c in listed] == [(h.cert["serial"], "revoked")]
    assert ok(g.telctl("verify")).startswith("verify: ok")


def test_token_with_attestation_c_is_verified(issuer_gate):
    g = issuer_gate
    h = Holder(g)
    call = g.standin.call(SPOOFED, MAIN_NUMBER, attestation="C", validated=False, token=h.token(SPOOFED))
    d = decision(g, call)
    assert d["type"] == "tel.call_verified", d
    assert d["data"]["method"] == "token" and d["data"]["namespace"] == "alice.x", d


def test_registry_below_minimum_attestation_rejected(issuer_gate):
    g = issuer_gate
    Holder(g)
    for att in ("B", "C", None):
        kw = {"attestation": att} if att else {}
        call = g.standin.call(CALLER, MAIN_NUMBER, **kw)
        d = decision(g, call)
        assert d["type"] == "tel.call_rejected", (att, d)
        assert d["data"]["reason"] == "attestation_insufficient", (att, d)


def test_min_attestation_b_accepts_b(make_gate):
    g = make_gate(conf={"min_attestation": "B"})
    ok(g.telctl("issuer", "init"))
    Holder(g)
    assert decision(g, g.standin.call(CALLER, MAIN_NUMBER, attestation="B"))["type"] == "tel.call_verified"
    d = decision(g, g.standin.call(CALLER, MAIN_NUMBER, attestation="C"))
    assert d["data"]["reason"] == "attestation_insufficient"


def test_bad_token_decides_alone(issuer_gate):
    """A call with a token is decided by the token: the registry (which would
    verify this caller with attestation A) is not consulted."""
    g = issuer_gate
    h = Holder(g)
    wrong_to = h.token(CALLER, to=FORWARD_NUMBER)
    call = g.standin.call(CALLER, MAIN_NUMBER, attestation="A", token=wrong_to)
    d = decision(g, call)
    assert d["type"] == "tel.call_rejected" and d["data"]["reason"] == "token_invalid", d
    call = g.standin.call(CALLER, MAIN_NUMBER, attestation="A", token="not-a-token")
    assert decision(g, call)["data"]["reason"] == "token_invalid"


def test_unknown_caller_no_namespace_and_untrusted_issuer(make_gate, tmp_path):
    g = make_gate()
    ok(g.telctl("issuer", "init"))
    d = decision(g, g.standin.call("+13125550177", MAIN_NUMBER, attestation="A"))
    assert d["data"]["reason"] == "no_namespace"
    # a certificate from another installation's issuer is worthless here
    other = make_gate()
    ok(other.telctl("issuer", "init"))
    h = Holder(other, namespace="bob.y")
    d = decision(g, g.standin.call(SPOOFED, MAIN_NUMBER, token=h.token(SPOOFED)))
    assert d["data"]["reason"] == "token_invalid", d


def test_trusted_issuers_admit_other_operators(make_gate):
    other = make_gate()
    other_pub = ok(other.telctl("issuer", "init")).strip()
    h = Holder(other, namespace="bob.y")
    g = make_gate(conf={"trusted_issuers": other_pub})
    ok(g.telctl("issuer", "init"))
    d = decision(g, g.standin.call(SPOOFED, MAIN_NUMBER, token=h.token(SPOOFED)))
    assert d["type"] == "tel.call_verified" and d["data"]["namespace"] == "bob.y", d


def test_cli_validation(issuer_gate):
    g = issuer_gate
    key = os.path.join(g.root, "k.key")
    pub = ok(g.telctl("keygen", key)).strip()
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert g.telctl("keygen", key).returncode == 1          # never overwrites a key
    bad = [
        ["--namespace", "Alice", "--pubkey", pub, "--phone", CALLER],
        ["--namespace", "alice.x", "--pubkey", "AAAA", "--phone", CALLER],
        ["--namespace", "alice.x", "--pubkey", pub, "--phone", "3125550100"],
        ["--namespace", "alice.x", "--pubkey", pub],
        ["--namespace", "alice.x", "--pubkey", pub, "--phone", CALLER, "--days", "0"],
        ["--namespace", "alice.x", "--pubkey", pub, "--phone", CALLER, "--bogus"],
    ]
    for args in bad:
        r = g.telctl("cert", "issue", *args)
        assert r.returncode == 2 and r.stderr.strip(), (args, r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert g.telctl("cert", "revoke", "0123456789abcdef").returncode == 1
    assert g.telctl("cert", "frobnicate").returncode == 2
    # a secret key readable by others is refused
    h = Holder(g)
    os.chmod(h.key, 0o644)
    r = g.telctl("token", "--key", h.key, "--cert", h.cert_file, "--from", CALLER, "--to", MAIN_NUMBER)
    assert r.returncode == 1 and "group or others" in r.stderr, r.stderr
    os.chmod(h.key, 0o600)
    # the token must be made with the holder's own key
    r = g.telctl("token", "--key", key, "--cert", h.cert_file, "--from", CALLER, "--to", MAIN_NUMBER)
    assert r.returncode == 1, r.stderr
    tok = h.token(CALLER)
    assert len(tok) < 500 and not any(ch in tok for ch in ' ",;\t')


def test_issue_without_issuer_key_fails(make_gate):
    g = make_gate()
    pub = ok(g.telctl("keygen", os.path.join(g.root, "x.key"))).strip()
    r = g.telctl("cert", "issue", "--namespace", "alice.x", "--pubkey", pub, "--phone", CALLER)
    assert r.returncode == 1 and "issuer init" in r.stderr, r.stderr


def test_issue_needs_the_spine(make_gate):
    g = make_gate(stages=("actuator", "verifier", "ingress"))
    ok(g.telctl("issuer", "init"))
    pub = ok(g.telctl("keygen", os.path.join(g.root, "x.key"))).strip()
    r = g.telctl("cert", "issue", "--namespace", "alice.x", "--pubkey", pub, "--phone", CALLER, timeout=20)
    assert r.returncode == 1 and "spine" in r.stderr, r.stderr
