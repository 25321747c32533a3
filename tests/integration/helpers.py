# helpers.py - shared machinery of the telgate integration tests: free ports,
# bounded waits, webhook signing, the Telnyx stand-in and the process set
# (spine, actuator, verifiers, ingress) run against it on 127.0.0.1.
import base64
import http.client
import json
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid

import nacl.signing

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PYTHON = "/usr/bin/python3"
STANDIN = os.path.join(REPO, "tests", "telnyx_standin.py")
BIN = os.path.abspath(os.environ.get("TELGATE_BIN", os.path.join(REPO, "bin")))

STOP_TIMEOUT_S = 5.0
START_TIMEOUT_S = 10.0
DEFAULT_ANNOUNCE = "This number only accepts calls from verified namespace holders."
MAIN_NUMBER = "+13125550199"
FORWARD_NUMBER = "+13125550188"
FORWARD_TARGET = "+13125550111"
EVENT_KEYS = ("seq", "time", "type", "actor", "id", "webhook_id", "call_control_id",
              "call_session_id", "from", "to", "data", "prev_hash", "hash")


def binary(name):
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        raise AssertionError("binary %s not found (set TELGATE_BIN; now %s)" % (name, BIN))
    return path


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_tmpdir(prefix="tg"):
    """A temp dir with a short path: ipc:// socket paths are limited to ~107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value or timeout seconds pass.
    Returns the value; raises AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --- signing ---------------------------------------------------------------

def read_seed(key_file):
    with open(key_file) as f:
        seed = base64.b64decode(f.read().strip())
    assert len(seed) == 32, "stand-in key file does not hold a 32-byte seed"
    return seed


def sign_headers(seed, body, ts=None):
    """Telnyx-style signature headers for body (bytes) with the Ed25519 seed."""
    ts = str(int(time.time()) if ts is None else ts)
    sk = nacl.signing.SigningKey(seed)
    sig = sk.sign(ts.encode() + b"|" + body).signature
    return {"telnyx-signature-ed25519": base64.b64encode(sig).decode(),
            "telnyx-timestamp": ts,
            "Content-Type": "application/json",
            "User-Agent": "telnyx-webhooks"}


def new_keypair():
    """(seed, base64 public key) of a fresh Ed25519 key."""
    sk = nacl.signing.SigningKey.generate()
    return bytes(sk), base64.b64encode(bytes(sk.verify_key)).decode()


def envelope(event_type, payload, event_id=None):
    """A compact Telnyx webhook body (bytes) and its data.id."""
    event_id = event_id or str(uuid.uuid4())
    body = {"data": {"event_type": event_type, "id": event_id,
                     "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                     "payload": payload, "record_type": "event"},
            "meta": {"attempt": 1, "delivered_to": "http://127.0.0.1/webhooks/telnyx"}}
    return json.dumps(body, separators=(",", ":")).encode(), event_id


def initiated_payload(ccid, frm, to, direction="incoming", attestation=None, session=None):
    p = {"call_control_id": ccid, "call_leg_id": str(uuid.uuid4()),
         "call_session_id": session or str(uuid.uuid4()), "client_state": None,
         "connection_id": "7267000000000000000", "direction": direction,
         "from": frm, "to": to, "state": "parked", "custom_headers": []}
    if attestation:
        p["shaken_stir_attestation"] = attestation
        p["shaken_stir_validated"] = True
    return p


# --- HTTP --------------------------------------------------------------------

def http_req(port, method, path, body=None, headers=None, timeout=5.0):
    """One request to 127.0.0.1:port. Returns (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def http_json(port, method, path, obj=None, timeout=10.0):
    body = None if obj is None else json.dumps(obj).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    status, _, data = http_req(port, method, path, body, hdrs, timeout)
    return status, (json.loads(data) if data.strip() else None)


JOURNAL_HDR = 12            # dump record header: magic, payload length, CRC-32C
JOURNAL_MAGIC = b"TGJ1"


def journal_records(path):
    """[(offset, length incl. header)] of the whole records of a dump file,
    and the file's bytes.  A running ingress keeps zeros written after the
    last record (protocol.md section 3); they, like any other non-record,
    end the list."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off + JOURNAL_HDR <= len(data) and data[off:off + 4] == JOURNAL_MAGIC:
        (n,) = struct.unpack(">I", data[off + 4:off + 8])
        if off + JOURNAL_HDR + n > len(data):
            break
        out.append((off, JOURNAL_HDR + n))
        off += JOURNAL_HDR + n
    return out, data


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --- processes -----------------------------------------------------------------

class Proc:
    """A child process with stdout+stderr captured to a log file."""

    def __init__(self, name, argv, log_path, env=None, cwd=None, stdout_pipe=False):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE if stdout_pipe else self.log,
                                  stderr=self.log, env=env, cwd=cwd)

    def alive(self):
        return self.p.poll() is None

    def log_text(self):
        if not self.log.closed:     # wait() closes it
            self.log.flush()
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def terminate(self):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)

    def wait(self, timeout):
        """Exit status, or None if still running after timeout (then SIGKILLed)."""
        try:
            return self.p.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None
        finally:
            if self.p.stdout:
                self.p.stdout.close()
            self.log.close()


def stop_procs(procs, timeout=STOP_TIMEOUT_S):
    """SIGTERM every process at once; return [(name, status or None)]."""
    for pr in procs:
        pr.terminate()
    deadline = time.monotonic() + timeout
    return [(pr.name, pr.wait(deadline - time.monotonic())) for pr in procs]


class ReadLines:
    """Line reader over a pipe with a deadline."""

    def __init__(self, f):
        self.f = f
        self.buf = b""

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.f], [], [], left)
            if not r:
                return None
            chunk = os.read(self.f.fileno(), 65536)
            if not chunk:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line.decode()
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


# --- the Telnyx stand-in ---------------------------------------------------

class Standin:
    def __init__(self, root, webhook_port, extra_args=(), api_key="test-key"):
        self.port = free_port()
        self.key_file = os.path.join(root, "standin.key")
        self.record = os.path.join(root, "standin-commands.jsonl")
        argv = [PYTHON, STANDIN, "serve", "--listen", "127.0.0.1:%d" % self.port,
                "--webhook-url", "http://127.0.0.1:%d/webhooks/telnyx" % webhook_port,
                "--key-file", self.key_file, "--record", self.record]
        if api_key:
            argv += ["--api-key", api_key]
        argv += list(extra_args)
        self.proc = Proc("standin", argv, os.path.join(root, "standin.log"), stdout_pipe=True)
        lines = ReadLines(self.proc.p.stdout)
        self.public_key = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = lines.readline(deadline - time.monotonic())
            if line is None:
                break
            if line.startswith("public_key="):
                self.public_key = line.split("=", 1)[1].strip()
            if line.startswith("listening="):
                break
        if not self.public_key:
            self.proc.terminate()
            self.proc.wait(2)
            raise AssertionError("stand-in did not start:\n" + self.proc.log_text())
        self.seed = read_seed(self.key_file)
        wait_until(lambda: port_open(self.port), 5, what="stand-in port")

    def api(self, method, path, obj=None):
        status, data = http_json(self.port, method, path, obj)
        assert status == 200, "stand-in %s %s -> %s %r" % (method, path, status, data)
        return data

    def call(self, frm, to, **kw):
        body = {"from": frm, "to": to}
        body.update(kw)
        return self.api("POST", "/_control/call", body)

    def send_webhook(self, body, headers=None, sign=True):
        req = {"body": body, "sign": sign}
        if headers:
            req["headers"] = headers
        return self.api("POST", "/_control/webhook", req)

    def commands(self, ccid=None):
        path = "/_control/commands"
        if ccid:
            path += "?call_control_id=" + ccid
        return self.api("GET", path)

    def call_state(self, ccid):
        return self.api("GET", "/_control/calls/" + ccid)

    def fail(self, action, status, times=1, delay_ms=None):
        req = {"action": action, "status": status, "times": times}
        if delay_ms is not None:
            req["delay_ms"] = delay_ms
        return self.api("POST", "/_control/fail", req)

    def caller_hangup(self, ccid):
        """The caller hangs up (the stand-in ends the call and sends call.hangup)."""
        return self.api("POST", "/_control/calls/%s/hangup" % ccid, {})

    def command_api(self, ccid, action, body):
        """Send a Call Control command directly, as a Telnyx client would."""
        data = json.dumps(body).encode()
        status, _, out = http_req(self.port, "POST", "/v2/calls/%s/actions/%s" % (ccid, action), data,
                              {"Content-Type": "application/json",
                               "Authorization": "Bearer test-key"})
        return status, out

    def stop(self):
        return stop_procs([self.proc])[0][1]


# --- the pipeline --------------------------------------------------------------

class Gate:
    """A stand-in plus the telgate processes, in their own temp directory."""

    def __init__(self, conf=None, verifiers=2, standin_args=(), numbers=None,
                 start=True, standin=True, stages=("spine", "actuator", "verifier", "ingress"),
                 stage_env=None):
        self.root = short_tmpdir()
        # Extra environment per stage name ("verifier": {...}), e.g. fault injection.
        self.stage_env = dict(stage_env or {})
        self.data_dir = os.path.join(self.root, "var")
        self.http_port = free_port()
        self.conf_path = os.path.join(self.root, "tel.conf")
        self.numbers_path = os.path.join(self.root, "numbers.conf")
        self.procs = []
        self.stopped = []
        self.standin = Standin(self.root, self.http_port, standin_args) if standin else None
        with open(self.numbers_path, "w") as f:
            f.write(numbers if numbers is not None else
                    "# test numbers\n%s label=main\n%s label=sales forward_to=%s\n"
                    % (MAIN_NUMBER, FORWARD_NUMBER, FORWARD_TARGET))
        self.conf = {
            "http_listen": "127.0.0.1:%d" % self.http_port,
            "data_dir": self.data_dir,
            "telnyx_api_key": "test-key",
            "numbers_file": self.numbers_path,
            "command_backoff_initial_ms": "20",
            "command_backoff_max_ms": "200",
            "command_resend_ms": "2000",
            "redeliver_after_ms": "2000",
            "log_level": "info",
        }
        if self.standin:
            self.conf["telnyx_public_key"] = self.standin.public_key
            self.conf["telnyx_api_url"] = "http://127.0.0.1:%d/v2" % self.standin.port
        for k, v in (conf or {}).items():
            if v is None:
                self.conf.pop(k, None)
            else:
                self.conf[k] = str(v)
        self.write_conf()
        self.verifiers = verifiers
        if start:
            try:
                self.start(stages)
            except BaseException:
                self.kill_all()
                raise

    def write_conf(self):
        with open(self.conf_path, "w") as f:
            f.write("# integration test configuration\n")
            for k, v in self.conf.items():
                f.write("%s = %s\n" % (k, v))

    @property
    def events_endpoint(self):
        return self.conf.get("events_endpoint") or "ipc://%s/run/events.sock" % os.path.realpath(self.data_dir)

    def start_one(self, name, tag=None):
        tag = tag or name
        pr = Proc(tag, [binary(name), "-c", self.conf_path],
                  os.path.join(self.root, tag + ".log"), env=self.env(name))
        self.procs.append(pr)
        return pr

    def env(self, name=None):
        """The environment of a child: ours without TEL* keys, plus
        stage_env[name] when a stage name is given."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEL")}
        env.update(self.stage_env.get(name, {}) if name else {})
        return env

    def start(self, stages=("spine", "actuator", "verifier", "ingress")):
        for name in stages:
            if name == "verifier":
                for i in range(self.verifiers):
                    self.start_one("verifier", "verifier%d" % (i + 1))
            else:
                self.start_one(name)
        if "ingress" in stages:
            self.wait_health()
        for pr in self.procs:
            assert pr.alive(), "%s exited early (status %s):\n%s" % (pr.name, pr.p.poll(), pr.log_text())

    def wait_health(self, timeout=START_TIMEOUT_S):
        def healthy():
            ing = self.proc("ingress")
            if ing and not ing.alive():
                raise AssertionError("ingress exited (status %s):\n%s" % (ing.p.poll(), ing.log_text()))
            try:
                return http_req(self.http_port, "GET", "/health", timeout=1)[0] == 200
            except OSError:
                return False
        wait_until(healthy, timeout, 0.05, "ingress /health == 200")

    def proc(self, tag):
        for pr in self.procs:
            if pr.name == tag:
                return pr
        return None

    def stop(self, tag):
        """SIGTERM one stage; asserts it exits 0 within 5 s."""
        pr = self.proc(tag)
        self.procs.remove(pr)
        (name, status), = stop_procs([pr])
        assert status == 0, "%s: exit status %s after SIGTERM (None = not within 5 s):\n%s" % (
            name, status, pr.log_text())

    def stop_all(self):
        """SIGTERM all stages; asserts each exits 0 within 5 s.  Returns the logs."""
        procs, self.procs = self.procs, []
        results = stop_procs(procs)
        bad = ["%s: exit status %s (None = not within %.0f s)\n%s" % (n, s, STOP_TIMEOUT_S, pr.log_text())
               for (n, s), pr in zip(results, procs) if s != 0]
        if self.standin:
            self.standin.stop()
        assert not bad, "stages did not stop cleanly:\n" + "\n".join(bad)

    def kill_all(self):
        for pr in self.procs:
            if pr.alive():
                pr.p.kill()
            pr.wait(2)
        self.procs = []
        if self.standin and self.standin.proc.alive():
            self.standin.proc.p.kill()
            self.standin.proc.wait(2)

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.root)):
            if name.endswith(".log"):
                with open(os.path.join(self.root, name), "rb") as f:
                    out.append("----- %s -----\n%s" % (name, f.read().decode(errors="replace")[-8000:]))
        return "\n".join(out)

    # --- webhooks ---------------------------------------------------------

    def post(self, body, headers=None, path="/webhooks/telnyx"):
        """POST raw bytes to the ingress. Returns (status, parsed JSON or None, raw)."""
        status, _, data = http_req(self.http_port, "POST", path, body, headers)
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        return status, parsed, data

    def post_signed(self, body, ts=None, headers=None):
        h = sign_headers(self.standin.seed, body, ts)
        h.update(headers or {})
        return self.post(body, h)

    # --- telctl -----------------------------------------------------------

    def telctl(self, *args, timeout=10):
        return subprocess.run([binary("telctl"), "-c", self.conf_path] + list(args),
                              capture_output=True, text=True, timeout=timeout, env=self.env())

    def events(self, *args):
        r = self.telctl("events", "--json", *args)
        assert r.returncode == 0, "telctl events failed (%d): %s" % (r.returncode, r.stderr)
        # split("\n"), not splitlines(): that also splits at U+0085 and U+2028,
        # which may appear (unescaped, as JSON allows) inside a string
        return [json.loads(line) for line in r.stdout.split("\n") if line.strip()]

    def wait_events(self, pred, timeout=10, what="events"):
        """Poll telctl events until pred(events) is truthy; returns the events."""
        holder = {}

        def check():
            holder["ev"] = self.events()
            return pred(holder["ev"])
        try:
            wait_until(check, timeout, 0.05, what)
        except AssertionError as e:
            raise AssertionError("%s\nlast events:\n%s" % (
                e, "\n".join(json.dumps(x) for x in holder.get("ev", [])[-30:])))
        return holder["ev"]


    # --- crash and restart (fault tests) --------------------------------------

    def kill(self, tag, sig=signal.SIGKILL):
        """Send sig (default SIGKILL) to stage tag, reap it and forget it, so
        the teardown's exit-status check does not count it.  Returns its exit
        status (negative signal number), or None if tag is not running."""
        pr = self.proc(tag)
        if pr is None:
            return None
        self.procs.remove(pr)
        if pr.alive():
            pr.p.send_signal(sig)
        return pr.wait(STOP_TIMEOUT_S)

    def forget_dead(self, tag):
        """If stage tag has exited, reap it, drop it from the process list and
        return its exit status; None while it is running (or unknown)."""
        pr = self.proc(tag)
        if pr is None or pr.alive():
            return None
        self.procs.remove(pr)
        return pr.wait(0)

    def restart(self, tag, port_timeout=10.0):
        """Start stage tag again (tag "verifier2" runs the verifier binary).
        For the ingress, first waits until its HTTP port can be bound again;
        does not wait for /health."""
        name = stage_name(tag)
        if name == "ingress":
            wait_until(lambda: port_free(self.http_port), port_timeout, 0.05,
                       "ingress port %d free" % self.http_port)
        return self.start_one(name, tag)


def stage_name(tag):
    """The binary of a stage tag: "verifier2" -> "verifier"."""
    return tag.rstrip("0123456789")


def port_free(port):
    """True if nothing listens on 127.0.0.1:port and it can be bound (with
    SO_REUSEADDR, as servers do)."""
    if port_open(port):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def assert_chain(g, events):
    """The log is sound: seq gap-free from 1, event ids unique, and
    `telctl verify` passes."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), "seq not gap-free from 1: %s" % seqs[:50]
    ids = [e["id"] for e in events]
    seen, dup = set(), set()
    for i in ids:
        (dup if i in seen else seen).add(i)
    dup = sorted(dup)
    assert not dup, "duplicate event ids: %s" % dup[:10]
    r = g.telctl("verify")
    assert r.returncode == 0, "telctl verify failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr)

# --- event predicates --------------------------------------------------------

def of_call(events, ccid):
    return [e for e in events if e.get("call_control_id") == ccid]


def types(events):
    return [e["type"] for e in events]


def commands_ev(events, ccid=None, action=None):
    return [e for e in events if e["type"] == "tel.command"
            and (ccid is None or e.get("call_control_id") == ccid)
            and (action is None or e["data"].get("action") == action)]


def announce_done(ccid):
    """Predicate: the announce flow of ccid finished (hangup recorded and the
    outcomes of answer, speak and hangup committed)."""
    def pred(events):
        ev = of_call(events, ccid)
        acts = {e["data"].get("action") for e in ev if e["type"] == "tel.command"}
        return "tel.call_hangup" in types(ev) and {"answer", "speak", "hangup"} <= acts
    return pred


def busy_done(ccid):
    def pred(events):
        ev = of_call(events, ccid)
        acts = {e["data"].get("action") for e in ev if e["type"] == "tel.command"}
        return "tel.call_hangup" in types(ev) and "reject" in acts
    return pred
