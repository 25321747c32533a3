# test_config.py - SPEC section 2 against the real ingress binary: where the
# configuration file comes from, TEL_<KEY> overrides, and exit status 2 with the
# offending key named for unknown keys and bad values.
import os
import shutil
import subprocess

import pytest

import helpers
from helpers import binary, free_port, http_req, wait_until


@pytest.fixture
def tmp():
    d = helpers.short_tmpdir("tgc")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_conf(path, data_dir, port, extra=""):
    _, pub = helpers.new_keypair()
    with open(path, "w") as f:
        f.write("# config test\nhttp_listen = 127.0.0.1:%d\ndata_dir = %s\n"
                "telnyx_public_key = %s\nlog_level = info\n%s" % (port, data_dir, pub, extra))
    return path


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEL")}
    env.update(extra)
    return env


def run_fail(args, env, cwd):
    """Run the ingress expecting it to refuse its configuration."""
    r = subprocess.run([binary("ingress")] + args, env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=10)
    return r


class Running:
    """The ingress started in the background; stopped with the exit-0 check."""

    def __init__(self, args, env, cwd):
        self.proc = helpers.Proc("ingress", [binary("ingress")] + args,
                                 os.path.join(cwd, "ingress-%d.log" % free_port()), env=env, cwd=cwd)

    def wait_port(self, port):
        def up():
            if not self.proc.alive():
                raise AssertionError("ingress exited (%s):\n%s" % (self.proc.p.poll(), self.proc.log_text()))
            try:
                return http_req(port, "GET", "/health", timeout=1)[0] in (200, 503)
            except OSError:
                return False
        wait_until(up, 10, 0.05, "ingress answering on port %d" % port)

    def stop(self):
        (_, status), = helpers.stop_procs([self.proc])
        assert status == 0, "ingress exit status %s after SIGTERM:\n%s" % (status, self.proc.log_text())


def listening_on(tmp, args, env, expect_port, other_ports=()):
    r = Running(args, env, tmp)
    try:
        r.wait_port(expect_port)
        for p in other_ports:
            assert not helpers.port_open(p), "ingress also listens on %d" % p
    finally:
        r.stop()


@pytest.mark.parametrize("line,key", [
    ("bogus_key = 1", "bogus_key"),
    ("max_body_bytes = abc", "max_body_bytes"),
    ("reject_mode = maybe", "reject_mode"),
    ("signature_tolerance_s = -5", "signature_tolerance_s"),
    ("min_attestation = D", "min_attestation"),
    ("http_listen = 127.0.0.1:99999", "http_listen"),
    ("http_listen = 47004s", "http_listen"),
    ("spine_endpoint = localhost:5555", "spine_endpoint"),
    ("namespace = Tel", "namespace"),
    ("announce_language = de-DE", "announce_language"),
    ("data_dir = /tmp/" + "d" * 100, "data_dir"),
])
def test_bad_file_exits_2_naming_key(tmp, line, key):
    conf = write_conf(os.path.join(tmp, "tel.conf"), os.path.join(tmp, "var"), free_port(), line + "\n")
    r = run_fail(["-c", conf], clean_env(), tmp)
    assert r.returncode == 2, "exit %d, stderr: %s" % (r.returncode, r.stderr)
    assert key in r.stderr, "stderr does not name %s: %r" % (key, r.stderr)


@pytest.mark.parametrize("var,value,key", [
    ("TEL_REJECT_MODE", "maybe", "reject_mode"),
    ("TEL_MAX_BODY_BYTES", "abc", "max_body_bytes"),
    ("TEL_HTTP_LISTEN", "foo", "http_listen"),
    ("TEL_ANNOUNCE_TEXT", "bell\x07", "announce_text"),
])
def test_bad_env_value_exits_2_naming_key(tmp, var, value, key):
    conf = write_conf(os.path.join(tmp, "tel.conf"), os.path.join(tmp, "var"), free_port())
    r = run_fail(["-c", conf], clean_env(**{var: value}), tmp)
    assert r.returncode == 2, "exit %d, stderr: %s" % (r.returncode, r.stderr)
    assert key in r.stderr, "stderr does not name %s: %r" % (key, r.stderr)


def test_missing_config_file_exits_2(tmp):
    r = run_fail(["-c", os.path.join(tmp, "nope.conf")], clean_env(), tmp)
    assert r.returncode == 2, "exit %d, stderr: %s" % (r.returncode, r.stderr)
    assert r.stderr.strip(), "no reason on stderr"


def test_inline_comments(tmp):
    """A '#' after whitespace starts a comment, also after a value (README's
    example config); a '#' inside a word stays in the value."""
    port = free_port()
    _, pub = helpers.new_keypair()
    conf = os.path.join(tmp, "tel.conf")
    with open(conf, "w") as f:
        f.write("# config test\n"
                "http_listen       = 127.0.0.1:%d    # behind your TLS terminator\n"
                "data_dir          = %s\t# state\n"
                "telnyx_public_key = %s  # from Mission Control\n"
                "announce_text     = Dial sip:#1@x   # a comment\n" % (port, os.path.join(tmp, "var"), pub))
    listening_on(tmp, ["-c", conf], clean_env(), port)


def test_env_overrides_file(tmp):
    file_port, env_port = free_port(), free_port()
    conf = write_conf(os.path.join(tmp, "tel.conf"), os.path.join(tmp, "var"), file_port)
    env = clean_env(TEL_HTTP_LISTEN="127.0.0.1:%d" % env_port)
    listening_on(tmp, ["-c", conf], env, env_port, [file_port])


def test_tel_config_selects_file(tmp):
    port = free_port()
    conf = write_conf(os.path.join(tmp, "other.conf"), os.path.join(tmp, "var"), port)
    sub = os.path.join(tmp, "cwd")
    os.mkdir(sub)
    listening_on(sub, [], clean_env(TEL_CONFIG=conf), port)


def test_tel_config_bad_file_is_used(tmp):
    """TEL_CONFIG really is read: a bad key in it makes the start fail."""
    conf = write_conf(os.path.join(tmp, "other.conf"), os.path.join(tmp, "var"), free_port(),
                      "no_such_key = 1\n")
    r = run_fail([], clean_env(TEL_CONFIG=conf), tmp)
    assert r.returncode == 2 and "no_such_key" in r.stderr, (r.returncode, r.stderr)


def test_tel_conf_in_working_directory(tmp):
    port = free_port()
    write_conf(os.path.join(tmp, "tel.conf"), os.path.join(tmp, "var"), port)
    listening_on(tmp, [], clean_env(), port)


def test_cli_wins_over_tel_config(tmp):
    env_port, cli_port = free_port(), free_port()
    env_conf = write_conf(os.path.join(tmp, "env.conf"), os.path.join(tmp, "var1"), env_port)
    cli_conf = write_conf(os.path.join(tmp, "cli.conf"), os.path.join(tmp, "var2"), cli_port)
    listening_on(tmp, ["-c", cli_conf], clean_env(TEL_CONFIG=env_conf), cli_port, [env_port])


def test_cli_wins_over_tel_config_bad(tmp):
    """With -c given, a broken TEL_CONFIG file is not even read."""
    port = free_port()
    bad = write_conf(os.path.join(tmp, "bad.conf"), os.path.join(tmp, "var1"), free_port(),
                     "no_such_key = 1\n")
    good = write_conf(os.path.join(tmp, "good.conf"), os.path.join(tmp, "var2"), port)
    listening_on(tmp, ["-c", good], clean_env(TEL_CONFIG=bad), port)


def test_data_dir_from_env(tmp):
    port = free_port()
    conf = write_conf(os.path.join(tmp, "tel.conf"), os.path.join(tmp, "var"), port)
    env_dir = os.path.join(tmp, "envdata")
    listening_on(tmp, ["-c", conf], clean_env(TEL_DATA_DIR=env_dir), port)
    assert os.path.isdir(env_dir), "TEL_DATA_DIR %s was not created" % env_dir
    assert os.listdir(env_dir), "TEL_DATA_DIR %s is empty" % env_dir
    assert not os.path.exists(os.path.join(tmp, "var")), "file's data_dir was used despite TEL_DATA_DIR"
