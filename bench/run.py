# bench/run.py - the telgate benchmark driver behind `make bench` (via
# bench/run.sh): runs each part for a fixed time on 127.0.0.1, each figure
# next to a reference measured in the same invocation, prints one table and
# writes bench/results/latest.json.
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

STOP_TIMEOUT_S = 5.0
START_TIMEOUT_S = 10.0
CALLER = "+13125550100"
CALLED = "+13125550199"
HTTP_THREADS = 64           # the ingress default (http_threads); the reference uses the same


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))


def http_ok(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class Proc:
    def __init__(self, name, argv, root):
        self.name = name
        self.log_path = os.path.join(root, name + ".log")
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                  env={k: v for k, v in os.environ.items() if not k.startswith("TEL")})

    def alive(self):
        return self.p.poll() is None

    def proc_field(self, name, key):
        """The number after "key:" in /proc/<pid>/<name>, or None."""
        try:
            with open("/proc/%d/%s" % (self.p.pid, name)) as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def vm(self, key):
        """VmHWM / VmRSS in kB from /proc, or None."""
        return self.proc_field("status", key)

    def io(self, key):
        """A counter of /proc/<pid>/io (e.g. wchar: bytes passed to write calls), or None."""
        return self.proc_field("io", key)

    def cpu_s(self):
        """User + system CPU seconds used so far, or None."""
        try:
            with open("/proc/%d/stat" % self.p.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        self.log.close()
        return rc

    def tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""


def run_json(argv, timeout, what):
    """Run a benchmark program that prints one JSON object; return it."""
    log("%s: %s" % (what, " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError("%s failed (exit %d):\n%s" % (what, r.returncode, r.stderr[-3000:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


def write_conf(path, conf):
    with open(path, "w") as f:
        f.write("# written by bench/run.py\n")
        for k, v in conf.items():
            f.write("%s = %s\n" % (k, v))


def device_written(path):
    """Bytes written so far to the block device holding path (/proc/diskstats), or None."""
    dev = os.stat(path).st_dev
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                p = line.split()
                if int(p[0]) == os.major(dev) and int(p[1]) == os.minor(dev):
                    return int(p[9]) * 512
    except (OSError, ValueError, IndexError):
        return None
    return None


def disk_usage(paths):
    """(allocated bytes, apparent bytes) of every file under paths."""
    alloc = size = 0
    for top in paths:
        for d, _, files in os.walk(top):
            for name in files:
                try:
                    st = os.stat(os.path.join(d, name))
                except OSError:
                    continue
                alloc += st.st_blocks * 512
                size += st.st_size
    return alloc, size


class Bench:
    def __init__(self, args):
        self.bin = os.path.abspath(args.bin)
        self.bench = os.path.abspath(args.bench)
        self.quick = args.quick
        self.parts = args.parts.split(",")
        self.root = tempfile.mkdtemp(prefix="tgb", dir="/tmp")
        self.raw = {}
        self.figures = []
        self.procs = []

    def dur(self, seconds):
        return max(1.0, seconds / 3) if self.quick else seconds

    def prog(self, name):
        return os.path.join(self.bench, name)

    def tool(self, name):
        return os.path.join(self.bin, name)

    def start(self, name, argv):
        pr = Proc(name, argv, self.root)
        self.procs.append(pr)
        return pr

    def stop_all(self):
        for pr in self.procs:
            if pr.alive():
                pr.p.send_signal(signal.SIGTERM)
        for pr in self.procs:
            pr.stop()
        self.procs = []

    def figure(self, part, name, value, unit, reference=None, ratio=None, target=None, ok=None):
        self.figures.append({"part": part, "figure": name, "value": value, "unit": unit,
                             "reference": reference, "ratio": ratio, "target": target, "pass": ok})

    def keygen(self, conf_path, key_path):
        r = subprocess.run([self.tool("telctl"), "-c", conf_path, "keygen", key_path],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError("telctl keygen: " + r.stderr)
        return r.stdout.strip()

    def loadgen(self, what, port, seed, extra, timeout=120):
        argv = [self.prog("loadgen"), "--port", str(port), "--seed-file", seed] + [str(a) for a in extra]
        return run_json(argv, timeout, what)

    # --- 1 + 2 + 5: ingress, end to end, footprint ------------------------

    def part_reference_http(self, seed):
        d = os.path.join(self.root, "ref")
        os.makedirs(d)
        port = free_port()
        ref = self.start("ref_ingress", [self.prog("ref_ingress"), "127.0.0.1:%d" % port, str(HTTP_THREADS),
                                         os.path.join(d, "journal")])
        wait_until(lambda: self.port_open(port), START_TIMEOUT_S, "ref_ingress port")
        out = {}
        out["keepalive"] = self.loadgen("reference, keep-alive", port, seed,
                                        ["--conns", 32, "--duration", self.dur(5), "--max", 400000,
                                         "--run", "rk"])
        out["newconn"] = self.loadgen("reference, new connection per request", port, seed,
                                      ["--conns", 32, "--keepalive", 0, "--duration", self.dur(5),
                                       "--max", 300000, "--run", "rn"])
        for rate in self.rates():
            out["open_%d" % rate] = self.loadgen("reference, open loop %d/s" % rate, port, seed,
                                                 ["--conns", 64, "--rate", rate, "--duration", self.dur(3),
                                                  "--run", "ro%d" % rate])
        ref.stop()
        self.procs.remove(ref)
        self.raw["reference_http"] = out
        return out

    def rates(self):
        return (100, 1000, 5000)

    @staticmethod
    def port_open(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    def part_pipeline(self, seed_conf, seed, pubkey, ref):
        d = os.path.join(self.root, "pipe")
        data = os.path.join(d, "var")
        os.makedirs(data)
        http_port, sink_port = free_port(), free_port()
        numbers = os.path.join(d, "numbers.conf")
        with open(numbers, "w") as f:
            f.write("%s label=main\n" % CALLED)
        conf = os.path.join(d, "tel.conf")
        write_conf(conf, {"http_listen": "127.0.0.1:%d" % http_port, "data_dir": data,
                          "telnyx_public_key": pubkey, "telnyx_api_url": "http://127.0.0.1:%d/v2" % sink_port,
                          "telnyx_api_key": "bench", "numbers_file": numbers, "log_level": "warn",
                          "http_threads": HTTP_THREADS})
        stages = {}
        for name in ("spine", "actuator", "verifier", "ingress"):
            stages[name] = self.start(name, [self.tool(name), "-c", conf])
        wait_until(lambda: http_ok(http_port, "/health"), START_TIMEOUT_S, "ingress /health")
        for name, pr in stages.items():
            if not pr.alive():
                raise RuntimeError("%s exited early:\n%s" % (name, pr.tail()))
        disk_paths = [os.path.join(data, "journal"), os.path.join(data, "spine")]
        disk0 = disk_usage(disk_paths)
        dev0 = device_written(data)
        wchar0 = {name: stages[name].io("wchar") for name in ("ingress", "spine")}
        sink = ["--sink-port", sink_port, "--sink-wait", 20]
        out = {}
        out["keepalive"] = self.loadgen("pipeline, keep-alive", http_port, seed,
                                        ["--conns", 32, "--duration", self.dur(5), "--max", 200000,
                                         "--run", "pk"] + sink)
        out["newconn"] = self.loadgen("pipeline, new connection per request", http_port, seed,
                                      ["--conns", 32, "--keepalive", 0, "--duration", self.dur(5),
                                       "--max", 200000, "--run", "pn"] + sink)
        for rate in self.rates():
            out["open_%d" % rate] = self.loadgen("pipeline, open loop %d/s" % rate, http_port, seed,
                                                 ["--conns", 64, "--rate", rate, "--duration", self.dur(3),
                                                  "--run", "po%d" % rate] + sink)
        # Saturation: more connections than worker threads, back to back.
        out["saturation"] = self.loadgen("pipeline, saturation (%d connections)" % (HTTP_THREADS * 2),
                                         http_port, seed,
                                         ["--conns", HTTP_THREADS * 2, "--duration", self.dur(4),
                                          "--max", 200000, "--run", "ps"] + sink)
        accepted = sum(o["ok"] for o in out.values())
        time.sleep(1.5)       # let the spine's last batch and the ingress's progress file settle
        disk1 = disk_usage(disk_paths)
        rss = {}
        for name, pr in stages.items():
            rss[name] = {"hwm_kb": pr.vm("VmHWM"), "rss_kb": pr.vm("VmRSS"), "anon_kb": pr.vm("RssAnon"),
                         "cpu_s": pr.cpu_s(),
                         "file_kb": pr.vm("RssFile"), "threads": pr.vm("Threads"), "alive": pr.alive()}
        jd = disk_usage([os.path.join(data, "journal")])
        dev1 = device_written(data)
        for name in ("ingress", "spine"):
            w0, w1 = wchar0[name], stages[name].io("wchar")
            rss[name]["written_bytes"] = w1 - w0 if w0 is not None and w1 is not None else None
        self.stop_all()
        out["footprint"] = {"rss": rss, "accepted": accepted,
                            "disk_alloc_bytes": disk1[0] - disk0[0], "disk_size_bytes": disk1[1] - disk0[1],
                            "journal_size_bytes": jd[1],
                            "device_written_bytes": dev1 - dev0 if dev0 is not None and dev1 is not None else None}
        self.raw["pipeline"] = out

        ka, nc = out["keepalive"], out["newconn"]
        rk, rn = ref["keepalive"], ref["newconn"]
        self.figure("1 ingress", "accepted/s, keep-alive, 32 conns", ka["ok_per_s"], "req/s", rk["ok_per_s"],
                    ratio(ka["ok_per_s"], rk["ok_per_s"]), ">= 0.40 x ref",
                    ratio(ka["ok_per_s"], rk["ok_per_s"]) >= 0.40)
        self.figure("1 ingress", "p50 / p99 response, keep-alive", "%.2f / %.2f" % (ka["response"]["p50_ms"],
                    ka["response"]["p99_ms"]), "ms", "%.2f / %.2f" % (rk["response"]["p50_ms"],
                    rk["response"]["p99_ms"]), None, "p99 <= 5 ms", ka["response"]["p99_ms"] <= 5)
        self.figure("1 ingress", "accepted/s, new connection per request", nc["ok_per_s"], "req/s",
                    rn["ok_per_s"], ratio(nc["ok_per_s"], rn["ok_per_s"]), ">= 0.40 x ref",
                    ratio(nc["ok_per_s"], rn["ok_per_s"]) >= 0.40)
        self.figure("1 ingress", "p50 / p99 response, new connection", "%.2f / %.2f" % (nc["response"]["p50_ms"],
                    nc["response"]["p99_ms"]), "ms", "%.2f / %.2f" % (rn["response"]["p50_ms"],
                    rn["response"]["p99_ms"]), None, "p99 <= 5 ms", nc["response"]["p99_ms"] <= 5)
        sat = out["saturation"]
        self.figure("1 ingress", "saturation (%d conns): ok/s, 503 shed, p99, max" % (HTTP_THREADS * 2),
                    "%.0f, %d, %.2f, %.0f ms" % (sat["ok_per_s"], sat["shed_503"], sat["response"]["p99_ms"],
                                                 sat["response"]["max_ms"]),
                    "", None, None, "p99 <= 5 ms, errors 0",
                    sat["response"]["p99_ms"] <= 5 and sat["errors"] == 0)
        for rate in self.rates():
            o, r = out["open_%d" % rate], ref["open_%d" % rate]
            e = o["e2e"]
            target, ok = None, None
            if rate == 1000:
                target = "p50 <= 1, p99 <= 5 ms"
                ok = e["p50_ms"] <= 1 and e["p99_ms"] <= 5 and o["e2e_missing"] == 0
            self.figure("2 end-to-end", "%d calls/s: webhook -> answer p50/p99/p99.9" % rate,
                        "%.2f / %.2f / %.2f" % (e["p50_ms"], e["p99_ms"], e["p999_ms"]), "ms",
                        "%.2f / %.2f / %.2f" % (r["response"]["p50_ms"], r["response"]["p99_ms"],
                                                r["response"]["p999_ms"]), None, target, ok)
            if o["e2e_missing"] or o["shed_503"] or o["errors"]:
                self.figure("2 end-to-end", "%d calls/s: missing answers / 503 / errors" % rate,
                            "%d / %d / %d" % (o["e2e_missing"], o["shed_503"], o["errors"]), "", None, None,
                            "0 / 0 / 0", False)
        fp = out["footprint"]
        for name in ("ingress", "verifier", "spine", "actuator"):
            hwm = fp["rss"][name]["hwm_kb"]
            mb = hwm / 1024.0 if hwm is not None else float("nan")
            anon = fp["rss"][name]["anon_kb"]
            self.figure("5 footprint", "peak RSS %s (anon now %s MB)" % (
                        name, "?" if anon is None else "%.1f" % (anon / 1024.0)),
                        round(mb, 1), "MB", None, None, "<= 20 MB", hwm is not None and mb <= 20)
        n = max(fp["accepted"], 1)
        for name in ("ingress", "verifier", "spine", "actuator"):
            cpu = fp["rss"][name].get("cpu_s")
            if cpu is not None:
                self.figure("5 footprint", "CPU per webhook, %s (all pipeline runs)" % name,
                            round(cpu * 1e6 / n, 1), "us", None, None, None, None)
        self.figure("5 footprint", "disk per webhook, journal + spine (allocated)",
                    round(fp["disk_alloc_bytes"] / n), "B", ka["body_bytes"], None, None, None)
        self.figure("5 footprint", "disk per webhook, journal + spine (file sizes)",
                    round(fp["disk_size_bytes"] / n), "B", ka["body_bytes"], None, None, None)
        self.figure("5 footprint", "journal bytes per webhook", round(fp["journal_size_bytes"] / n), "B",
                    ka["body_bytes"], None, None, None)
        for name in ("ingress", "spine"):
            w = fp["rss"][name].get("written_bytes")
            if w is not None:
                self.figure("5 footprint", "bytes written per webhook, %s (write calls)" % name,
                            round(w / n), "B", ka["body_bytes"], None, None, None)
        if fp["device_written_bytes"] is not None:
            self.figure("5 footprint", "bytes written to the disk device per webhook (whole machine)",
                        round(fp["device_written_bytes"] / n), "B", ka["body_bytes"], None, None, None)

    # --- 3: spine -----------------------------------------------------------

    def part_spine(self):
        d = os.path.join(self.root, "spine")
        os.makedirs(d)
        conf = os.path.join(d, "tel.conf")
        numbers = os.path.join(d, "numbers.conf")
        with open(numbers, "w") as f:
            f.write("%s label=main\n" % CALLED)
        write_conf(conf, {"data_dir": os.path.join(d, "var"), "numbers_file": numbers, "log_level": "warn"})
        n = 10000 if self.quick else 30000
        o = run_json([self.prog("spine_bench"), "-c", conf, d, str(n), "64", str(self.dur(20))], 120,
                     "spine, RESULTs in commits of 64")
        self.raw["spine"] = o
        r = ratio(o["spine_events_per_s"], o["raw_events_per_s"])
        self.figure("3 spine", "events/s committed (64 RESULTs/commit, %d events)" % o["events"],
                    o["spine_events_per_s"], "ev/s", o["raw_events_per_s"], r, ">= 0.60 x raw LMDB", r >= 0.60)

    # --- 4: verifier --------------------------------------------------------

    def part_verifier(self):
        d = os.path.join(self.root, "verif")
        data = os.path.join(d, "var")
        os.makedirs(data)
        numbers = os.path.join(d, "numbers.conf")
        with open(numbers, "w") as f:
            f.write("%s label=main\n" % CALLED)
        conf = os.path.join(d, "tel.conf")
        write_conf(conf, {"data_dir": data, "numbers_file": numbers, "log_level": "warn", "min_attestation": "A"})
        spine = self.start("spine-certs", [self.tool("spine"), "-c", conf])
        telctl = [self.tool("telctl"), "-c", conf]
        r = subprocess.run(telctl + ["issuer", "init"], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError("telctl issuer init: " + r.stderr)
        holder = os.path.join(d, "holder.key")
        pk = self.keygen(conf, holder)
        cert = os.path.join(d, "cert.json")
        r = subprocess.run(telctl + ["cert", "issue", "--namespace", "bench.x", "--pubkey", pk, "--phone", CALLER,
                                     "--out", cert], capture_output=True, text=True, timeout=15)
        if r.returncode != 0:
            raise RuntimeError("telctl cert issue: " + r.stderr)
        spine.stop()
        self.procs.remove(spine)

        base = [self.prog("verifier_bench"), "-c", conf]
        o = run_json(base + ["inproc", cert, holder, CALLER, CALLED, str(self.dur(3))], 60,
                     "verifier in one process, token and registry paths")
        scale = {}
        count = int(max(2000, min(o["token_per_s"] * self.dur(3), 60000)))
        for procs in (1, 2, 4):
            scale[procs] = run_json(base + ["scale", cert, holder, CALLER, CALLED, self.tool("verifier"),
                                            str(procs), str(count)], 90,
                                    "%d verifier process(es), %d token calls" % (procs, count))
        o["scale"] = scale
        self.raw["verifier"] = o
        rt = ratio(o["token_per_s"], o["raw_verify_per_s"])
        self.figure("4 verifier", "token-path decisions/s (1 process, in-process)", o["token_per_s"], "dec/s",
                    o["raw_verify_per_s"], rt, ">= 0.75 x raw Ed25519 verify", rt >= 0.75)
        rr = ratio(o["registry_per_s"], o["raw_verify_per_s"])
        self.figure("4 verifier", "registry-path decisions/s (1 process, in-process)", o["registry_per_s"],
                    "dec/s", o["raw_verify_per_s"], rr, None, None)
        one = scale[1]["decisions_per_s"]
        for procs in (1, 2, 4):
            v = scale[procs]["decisions_per_s"]
            self.figure("4 verifier", "token decisions/s, %d verifier process(es) over zmq" % procs, v, "dec/s",
                        one, ratio(v, one), None, None)

    # --- run ------------------------------------------------------------------

    def run(self):
        keys = os.path.join(self.root, "keys")
        os.makedirs(keys)
        kconf = os.path.join(keys, "tel.conf")
        write_conf(kconf, {"data_dir": keys})
        seed = os.path.join(keys, "telnyx.key")
        pubkey = self.keygen(kconf, seed)
        if "ingress" in self.parts:
            ref = self.part_reference_http(seed)
            self.part_pipeline(kconf, seed, pubkey, ref)
        if "spine" in self.parts:
            self.part_spine()
        if "verifier" in self.parts:
            self.part_verifier()


def ratio(a, b):
    return round(a / b, 3) if b else 0.0


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.0f" % v if abs(v) >= 100 else "%.2f" % v
    return str(v)


def print_table(figures):
    rows = [("part", "figure", "value", "unit", "reference", "ratio", "target", "result")]
    for f in figures:
        res = "-" if f["pass"] is None else ("pass" if f["pass"] else "MISS")
        rows.append((f["part"], f["figure"], fmt(f["value"]), f["unit"], fmt(f["reference"]),
                     fmt(f["ratio"]), f["target"] or "-", res))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(widths[j]) if j < 2 or j >= 6 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main():
    ap = argparse.ArgumentParser(description="telgate benchmarks")
    ap.add_argument("--bin", default="bin", help="telgate binaries (bin/)")
    ap.add_argument("--bench", default="build/bench", help="benchmark programs ($(BUILD)/bench)")
    ap.add_argument("--out", default="bench/results/latest.json")
    ap.add_argument("--quick", action="store_true", help="a third of the durations (smoke run)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--parts", default="ingress,spine,verifier",
                    help="comma-separated subset of ingress (parts 1, 2 and 5: the pipeline), spine, verifier")
    args = ap.parse_args()
    unknown = set(args.parts.split(",")) - {"ingress", "spine", "verifier"}
    if unknown:
        ap.error("unknown part(s): " + ", ".join(sorted(unknown)))
    b = Bench(args)
    started = time.time()
    failed = None
    try:
        b.run()
    except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
        failed = str(e)
        log("FAILED: " + failed)
        for pr in b.procs:
            log("---- %s log ----\n%s" % (pr.name, pr.tail()))
    finally:
        b.stop_all()
    result = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                    "loadavg_after": os.getloadavg()},
        "quick": args.quick,
        "failed": failed,
        "figures": b.figures,
        "raw": b.raw,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print()
    print_table(b.figures)
    misses = sum(1 for f in b.figures if f["pass"] is False)
    print("\n%d figures, %d targets met, %d missed; %.0f s; written to %s" % (
        len(b.figures), sum(1 for f in b.figures if f["pass"]), misses, time.time() - started, args.out))
    if not args.keep:
        shutil.rmtree(b.root, ignore_errors=True)
    else:
        log("scratch directory kept: " + b.root)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
