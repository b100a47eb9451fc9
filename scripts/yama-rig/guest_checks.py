"""The Yama rig's job inside the VM: runs every check and writes the results.

Runs as root in the chroot (only root may change kernel.yama.ptrace_scope between the
phases); every process under test is started as uid 1000 with no supplementary groups.
Usage: guest_checks.py WORKDIR   (WORKDIR/config.json is written by test-yama.sh)

Writes WORKDIR/results ("PASS name" / "FAIL name: detail", one line per check, then
"DONE" when the job got to its end) and WORKDIR/logs/*.log (output of each process).
Phases run in the order of config["scopes"]; scope 3 must be last since the kernel does
not let it be lowered until reboot (test-yama.sh sorts it last).
"""

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback

WORK = sys.argv[1]
CFG = json.load(open(os.path.join(WORK, "config.json")))
PY = CFG["python"]
# Interpreters of other minor versions (3.15): their targets get the scope-1 seed session.
MORE_PYTHONS = CFG.get("more_pythons", [])
RIG = CFG["rig"]
PROBE = os.path.join(RIG, "probe.py")
FIXTURE = CFG["fixture"]
FIXTURES = os.path.dirname(FIXTURE)
BIN = CFG.get("bin")
CONTROLLER = BIN and os.path.join(BIN, "heli-controller")
CLIENT = BIN and os.path.join(BIN, "heli-client")
UID = GID = 1000
LOGS = os.path.join(WORK, "logs")
os.makedirs(LOGS, exist_ok=True)
RESULTS = open(os.path.join(WORK, "results"), "w", buffering=1)

USER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/run/tmp",
    "TMPDIR": "/run/tmp",
    "LANG": "C.UTF-8",
    # The host root is read-only here: byte code comes precompiled from this prefix,
    # otherwise every process recompiles its imports (3x slower under emulation).
    "PYTHONPYCACHEPREFIX": CFG["pycache_prefix"],
    "PYTHONDONTWRITEBYTECODE": "1",
}
PDB_VALUE = re.compile(r"\(Pdb\) (-?\d+)\s*$", re.M)
T0 = time.monotonic()


def say(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80]


counts = {"pass": 0, "fail": 0}


def record(name, ok, detail="", log=None):
    """One line of the summary. The full output of a failed check goes to the console."""
    counts["pass" if ok else "fail"] += 1
    line = f"PASS {name}" if ok else f"FAIL {name}: {detail}"
    RESULTS.write(line + "\n")
    say(line)
    if log is not None:
        path = os.path.join(LOGS, slug(name) + ".log")
        with open(path, "w") as f:
            f.write(log)
        if not ok:
            print("    | " + "\n    | ".join(log.rstrip().splitlines()[-60:]), flush=True)


def user_kw(env_extra=None):
    env = dict(USER_ENV)
    env.update(env_extra or {})
    return dict(user=UID, group=GID, extra_groups=[], cwd="/run/tmp", env=env)


def run_user(argv, stdin_text="", timeout=60, env_extra=None):
    """Run argv as uid 1000; returns (exit status or None on timeout, output)."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         **user_kw(env_extra))
    try:
        out, _ = p.communicate(stdin_text, timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return None, out + f"\n[rig: killed after {timeout}s]"


def user_pids():
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == UID:
                    pids.append(int(d))
            except FileNotFoundError:
                pass
    return pids


def kill_user_processes():
    """Nothing from one check may leak into the next (a live client keeps its grant)."""
    for pid in user_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while user_pids() and time.monotonic() < deadline:
        time.sleep(0.05)


def ppid_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class Probe:
    """A `probe.py serve` helper running as uid 1000: a raw client of the controller."""

    def __init__(self, name):
        self.name = name
        self.p = subprocess.Popen([PY, PROBE, "serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  **user_kw())
        self.pid = self.ask("pid").get("pid")

    def ask(self, line, timeout=90):
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            return {"error": f"probe {self.name} is gone"}
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        reply = self.p.stdout.readline() if ready else ""
        if not reply:
            return {"error": f"probe {self.name}: no answer to {line!r}"}
        try:
            return json.loads(reply)
        except ValueError:
            return {"error": f"probe {self.name} said {reply!r}"}

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()


class Controller:
    """heli-controller as uid 1000, serving PIPE_DIR, with the counter fixture as target.
    Its output goes to a log through a copier thread, which also reports the controller's
    `listening on` line: readiness is that event, not the appearance of files."""

    def __init__(self, tag, env_extra=None, python=PY, target=(FIXTURE,)):
        self.tag = tag
        self.dir = f"/run/tmp/heli-{tag}"
        self.logpath = os.path.join(LOGS, f"controller-{tag}.log")
        self.log = open(self.logpath, "w", buffering=1)
        self.listening = threading.Event()
        self.p = subprocess.Popen([CONTROLLER, "--pipe-dir", self.dir, "--python", python,
                                   *target],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, **user_kw(env_extra))
        self.copier = threading.Thread(target=self._copy, daemon=True)
        self.copier.start()

    def _copy(self):
        for raw in self.p.stdout:
            line = raw.decode(errors="replace")
            self.log.write(line)
            if "listening on" in line:
                self.listening.set()
        self.listening.set()  # output ended: wait_ready then sees the exit

    def wait_ready(self, timeout=60):
        if not self.listening.wait(timeout):
            return f"no `listening on` line after {timeout}s"
        if self.p.poll() is not None:
            return f"controller exited with status {self.p.returncode}"
        return None

    def output(self):
        self.log.flush()
        with open(self.logpath) as f:
            return f.read()

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.copier.join(timeout=10)
        self.log.close()
        # The journal outlives the pipes; keep it with the run's logs (a real session under
        # Yama, for tests/fixtures/sessions).
        for name in sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else []:
            if name.startswith("journal-") and name.endswith(".jsonl"):
                with open(os.path.join(self.dir, name), "rb") as src, \
                        open(os.path.join(LOGS, f"journal-{self.tag}.jsonl"), "wb") as dst:
                    dst.write(src.read())


def set_scope(n):
    with open("/proc/sys/kernel/yama/ptrace_scope", "w") as f:
        f.write(str(n))
    with open("/proc/sys/kernel/yama/ptrace_scope") as f:
        return int(f.read())


def pdb_values(out):
    return [int(v) for v in PDB_VALUE.findall(out)]


# ---------------------------------------------------------------------------------------
def setup_checks():
    """uid 1000 must reach the interpreter, the rig and the build: fail clearly if not."""
    rc, out = run_user([PY, "-c", "import sys, pdb; assert sys.version_info[:2] == (3, 14); print(sys.version)"])
    record("setup: uid 1000 runs python3.14 " + PY, rc == 0, f"status {rc}", out)
    rc2, out2 = run_user([PY, "-c", "import sys; open(sys.argv[1]).close(); open(sys.argv[2]).close()",
                          PROBE, FIXTURE])
    record("setup: uid 1000 reads the rig and the fixture", rc2 == 0, f"status {rc2}", out2)
    ok = rc == 0 and rc2 == 0
    for py in MORE_PYTHONS:
        rc4, out4 = run_user([py, "-c", "import sys, pdb; print(sys.version)"])
        record(f"setup: uid 1000 runs {py}", rc4 == 0, f"status {rc4}", out4)
        ok = ok and rc4 == 0
    if BIN:
        rc3, out3 = run_user(["/bin/sh", "-c", 'test -x "$0" && test -x "$1"', CONTROLLER, CLIENT])
        record(f"setup: uid 1000 can run {BIN}/heli-controller and heli-client", rc3 == 0,
               "not executable by uid 1000 (or missing)", out3)
        ok = ok and rc3 == 0
    return ok


def rules_checks(scope):
    rc, out = run_user([PY, PROBE, "rules", str(scope)], timeout=180)
    lines = [l for l in out.splitlines() if l.startswith(("PASS ", "FAIL "))]
    for l in lines:
        ok = l.startswith("PASS ")
        name, _, detail = l[5:].partition(": ")
        record(f"scope {scope} kernel: {name}", ok, detail)
    if rc != 0 or not lines:
        record(f"scope {scope} kernel: rule checks ran to the end", False, f"status {rc}", out)


def heli_scope1(break_grant):
    env = {"HELI_DISABLE_GRANT": "1"} if break_grant else None
    ctl = Controller("s1", env)
    probes = []
    try:
        err = ctl.wait_ready()
        record("scope 1 heli: controller starts and serves its pipes", err is None, err or "",
               ctl.output() if err else None)
        if err:
            return
        a = Probe("A")
        probes.append(a)
        r = a.ask(f"send {ctl.dir} GET_TARGET_PID")
        m = re.fullmatch(r"TARGET_PID (\d+)", r.get("reply", ""))
        target = int(m.group(1)) if m else None
        # The target is the controller's grandchild: the keeper (which stops the whole
        # tree however the controller ends) sits between them.
        record("scope 1 heli: GET_TARGET_PID names the controller's grandchild, under its keeper",
               bool(m) and ppid_of(ppid_of(target) or 0) == ctl.p.pid,
               f"{r}, controller pid {ctl.p.pid}")
        if target is None:
            return

        # Negative controls: no grant, no attach.
        rc, out = run_user([PY, "-m", "pdb", "-p", str(target)], "p counter\nq\n", timeout=60)
        record("scope 1 heli: plain `python3.14 -m pdb -p TARGET` without a grant is refused",
               rc not in (0, None) and not pdb_values(out) and "permission" in out.lower(),
               f"status {rc}, pdb values {pdb_values(out)}", out)
        r = a.ask(f"exec {target}")
        record("scope 1 heli: sys.remote_exec from a non-granted process is refused",
               r.get("result") == "denied", str(r))

        # The grant goes to A: A and its children may attach, a second client may not.
        r = a.ask(f"grant {ctl.dir}")
        record("scope 1 heli: GRANT_ACCESS <pid of A> answers READY", r.get("reply") == "READY", str(r))
        r = a.ask(f"exec {target}")
        record("scope 1 heli: the granted client A may write into the target",
               r.get("result") == "allowed", str(r))
        r = a.ask(f"child-exec {target}")
        record("scope 1 heli: a child of A (where pdb runs) may write into the target",
               r.get("result") == "allowed", str(r))
        b = Probe("B")
        probes.append(b)
        r = b.ask(f"exec {target}")
        record("scope 1 heli: a second client B is refused while the grant is A's",
               r.get("result") == "denied", str(r))

        # The grant moves to B: A loses it.
        r = b.ask(f"grant {ctl.dir}")
        record("scope 1 heli: GRANT_ACCESS <pid of B> answers READY", r.get("reply") == "READY", str(r))
        r = a.ask(f"exec {target}")
        record("scope 1 heli: the first client A is refused after the grant went to B",
               r.get("result") == "denied", str(r))
        r = b.ask(f"exec {target}")
        record("scope 1 heli: B may write into the target after its grant",
               r.get("result") == "allowed", str(r))

        # B detaches: it gives the grant back, and may no longer attach without a new one.
        r = b.ask(f"send {ctl.dir} REVOKE_ACCESS {b.pid}")
        record("scope 1 heli: REVOKE_ACCESS <pid of B> answers READY", r.get("reply") == "READY", str(r))
        taken_back = f"took back the grant of pid {b.pid}"
        deadline = time.monotonic() + 30
        while taken_back not in ctl.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        record("scope 1 heli: the controller took B's grant back in the target",
               taken_back in ctl.output(), "", ctl.output())
        r = b.ask(f"exec {target}")
        record("scope 1 heli: after its grant was taken back, B is refused again",
               r.get("result") == "denied", str(r))
        for p in probes:
            p.close()
        probes.clear()

        # The happy path with the real client and the real pdb, reattach included.
        alive = ctl.p.poll() is None
        record("scope 1 heli: the controller is still running after the raw clients",
               alive, f"exited with status {ctl.p.returncode}", None if alive else ctl.output())
        if not alive:
            return
        script = "attach\np counter\nq\nattach\np counter\nq\nterminate\n"
        rc, out = run_user([CLIENT, "--pipe-dir", ctl.dir, "--python", PY], script, timeout=150)
        vals = pdb_values(out)
        record("scope 1 heli: heli-client attach/p counter/q/attach/p counter/q/terminate exits 0",
               rc == 0, f"status {rc}", out)
        record("scope 1 heli: pdb printed `counter` twice, bigger the second time",
               len(vals) == 2 and vals[0] < vals[1], f"values {vals}")
        n = out.count("Debugger detached")
        record("scope 1 heli: the client said `Debugger detached` after each pdb session",
               n == 2, f"{n} times")
        try:
            status = ctl.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            status = None
        gone = not os.path.exists(f"/proc/{target}") or ppid_of(target) is None
        pipes_left = [n for n in ("control", "response") if os.path.exists(os.path.join(ctl.dir, n))]
        # 0 after TERMINATE (the controller's doc) or 128+SIGTERM (the target's status);
        # anything else (a panic: 101) is not a clean stop.
        record("scope 1 heli: terminate stops the target and the controller, pipes removed",
               status in (0, 128 + signal.SIGTERM) and gone and not pipes_left,
               f"controller status {status}, target gone {gone}, pipes left {pipes_left}", ctl.output())
    finally:
        for p in probes:
            p.close()
        ctl.stop()
        kill_user_processes()


def wait_in_log(ctl, needle, timeout=60):
    """The line of the controller's log (the target's output too) holding NEEDLE."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in ctl.output().splitlines():
            if needle in line:
                return line
        time.sleep(0.05)
    return None


def heli_scope1_waiting():
    """Issues 10 and 11 at scope 1, as uid 1000: targets that wait in a system call are
    woken (SIGURG) for the grant and for pdb's own injection, and a child of the target
    (a fresh "spawn" interpreter) is attached with `attach PID`."""
    for tag, script, ready, expr in [
        ("s1-sleep", "sleep_until_usr1.py", "sleeping 300 s", "counter"),
        ("s1-asyncio", "wait_asyncio_server.py", "listening on port", "served"),
    ]:
        ctl = Controller(tag, target=(os.path.join(FIXTURES, script),))
        try:
            err = ctl.wait_ready()
            line = None if err else wait_in_log(ctl, ready)
            record(f"scope 1 waiting {script}: the target starts and waits",
                   line is not None, err or f"no {ready!r}", ctl.output())
            if line is None:
                continue
            # The waker is installed while the target starts; a grant installs it too.
            wait_in_log(ctl, "SIGURG waker", timeout=20)
            started = time.monotonic()
            rc, out = run_user([CLIENT, "--pipe-dir", ctl.dir, "--python", PY,
                                "--attach-timeout", "60s"],
                               f"attach\np {expr}\nq\nterminate\n", timeout=150)
            took = time.monotonic() - started
            vals = pdb_values(out)
            record(f"scope 1 waiting {script}: attach, p {expr}, q, terminate exits 0 "
                   f"with a value ({took:.1f} s under emulation)",
                   rc == 0 and vals == [0], f"status {rc}, values {vals}", out + ctl.output())
        finally:
            ctl.stop()
            kill_user_processes()

    ctl = Controller("s1-child", target=(os.path.join(FIXTURES, "spawned_child.py"),))
    try:
        err = ctl.wait_ready()
        line = None if err else wait_in_log(ctl, " ready")
        m = re.search(r"child (\d+) ready", line or "")
        record("scope 1 child: the target started its spawned child", bool(m),
               err or "no `child N ready`", ctl.output())
        if not m:
            return
        child = m.group(1)
        rc, out = run_user([PY, "-m", "pdb", "-p", child], "p secret\nq\n", timeout=60)
        record("scope 1 child: plain `python3.14 -m pdb -p CHILD` without a grant is refused",
               rc not in (0, None) and "child-ticks" not in out, f"status {rc}", out)
        rc, out = run_user([CLIENT, "--pipe-dir", ctl.dir, "--python", PY],
                           f"attach {child}\np secret\nq\nquit\n", timeout=150)
        record("scope 1 child: heli-client `attach CHILD` prints the child's local",
               rc == 0 and "'child-ticks'" in out, f"status {rc}", out + ctl.output())
        a = Probe("A")
        try:
            r = a.ask(f"send {ctl.dir} GRANT_ACCESS {a.pid} 1")
        finally:
            a.close()
        record("scope 1 child: a grant in a process outside the tree is refused",
               "not in the supervised tree" in r.get("reply", "") or
               "is init" in r.get("reply", ""), str(r))
    finally:
        ctl.stop()
        kill_user_processes()


def version_of(py):
    rc, out = run_user([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.strip() if rc == 0 else os.path.basename(py)


def heli_scope1_seed(py, break_grant):
    """The seed session with a target of another minor version: the grant reads that
    version's layout, and the client runs pdb from the target's own interpreter (no
    --python: a pdb of another minor refuses the target)."""
    version = version_of(py)
    name = f"scope 1 heli {version}"
    env = {"HELI_DISABLE_GRANT": "1"} if break_grant else None
    ctl = Controller(f"s1-{version}", env, python=py)
    try:
        err = ctl.wait_ready()
        record(f"{name}: controller starts and serves its pipes", err is None, err or "",
               ctl.output() if err else None)
        if err:
            return
        a = Probe("A")
        try:
            r = a.ask(f"send {ctl.dir} GET_TARGET_PID")
        finally:
            a.close()
        m = re.fullmatch(r"TARGET_PID (\d+)", r.get("reply", ""))
        if not m:
            record(f"{name}: GET_TARGET_PID", False, str(r))
            return
        target = int(m.group(1))
        rc, out = run_user([py, "-m", "pdb", "-p", str(target)], "p counter\nq\n", timeout=60)
        record(f"{name}: plain `python{version} -m pdb -p TARGET` without a grant is refused",
               rc not in (0, None) and not pdb_values(out) and "permission" in out.lower(),
               f"status {rc}, pdb values {pdb_values(out)}", out)
        script = "attach\np counter\nq\nattach\np counter\nq\nterminate\n"
        rc, out = run_user([CLIENT, "--pipe-dir", ctl.dir], script, timeout=150)
        vals = pdb_values(out)
        record(f"{name}: heli-client attach/p counter/q/attach/p counter/q/terminate exits 0",
               rc == 0, f"status {rc}", out)
        record(f"{name}: pdb printed `counter` twice, bigger the second time",
               len(vals) == 2 and vals[0] < vals[1], f"values {vals}")
        n = out.count("Debugger detached")
        record(f"{name}: the client said `Debugger detached` after each pdb session",
               n == 2, f"{n} times")
        try:
            status = ctl.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            status = None
        gone = not os.path.exists(f"/proc/{target}") or ppid_of(target) is None
        pipes_left = [n for n in ("control", "response") if os.path.exists(os.path.join(ctl.dir, n))]
        record(f"{name}: terminate stops the target and the controller, pipes removed",
               status in (0, 128 + signal.SIGTERM) and gone and not pipes_left,
               f"controller status {status}, target gone {gone}, pipes left {pipes_left}", ctl.output())
    finally:
        ctl.stop()
        kill_user_processes()


def heli_scope0():
    ctl = Controller("s0")
    try:
        err = ctl.wait_ready()
        record("scope 0 heli: controller starts and serves its pipes", err is None, err or "",
               ctl.output() if err else None)
        if err:
            return
        a = Probe("A")
        r = a.ask(f"send {ctl.dir} GET_TARGET_PID")
        a.close()
        m = re.fullmatch(r"TARGET_PID (\d+)", r.get("reply", ""))
        if not m:
            record("scope 0 heli: GET_TARGET_PID", False, str(r))
            return
        rc, out = run_user([PY, "-m", "pdb", "-p", m.group(1)], "p counter\nq\n", timeout=60)
        record("scope 0 heli: plain `python3.14 -m pdb -p TARGET` works without a grant",
               rc == 0 and len(pdb_values(out)) == 1, f"status {rc}, values {pdb_values(out)}", out)
        rc, out = run_user([CLIENT, "--pipe-dir", ctl.dir, "--python", PY],
                           "attach\np counter\nq\nterminate\n", timeout=90)
        record("scope 0 heli: heli-client attach/p counter/q/terminate works",
               rc == 0 and len(pdb_values(out)) == 1, f"status {rc}, values {pdb_values(out)}", out)
    finally:
        ctl.stop()
        kill_user_processes()


def start_live_controller(scope):
    """A controller started at scope 1, before the scope is raised to SCOPE: the only way
    a client can meet a running controller at 2 or 3 (a new controller refuses)."""
    set_scope(1)
    ctl = Controller(f"s{scope}-live")
    err = ctl.wait_ready()
    record(f"scope {scope} heli: (setup) a controller started at scope 1 before the raise",
           err is None, err or "", ctl.output() if err else None)
    return ctl


def heli_scope_high(scope, live):
    """At 2 and 3 no grant can help: both tools must say so and stop, not hang."""
    d = f"/run/tmp/heli-s{scope}"
    before = set(user_pids())
    rc, out = run_user([CONTROLLER, "--pipe-dir", d, "--python", PY, FIXTURE], timeout=30)
    record(f"scope {scope} heli: heli-controller refuses to start (exit 125, names ptrace_scope)",
           rc == 125 and "ptrace_scope" in out, f"status {rc}", out)
    left = sorted(set(user_pids()) - before)
    record(f"scope {scope} heli: the refusing controller leaves no process behind", not left,
           f"uid 1000 processes: {left}")
    if live.p.poll() is None:
        rc, out = run_user([CLIENT, "--pipe-dir", live.dir, "--python", PY], "attach\n", timeout=30)
        record(f"scope {scope} heli: heli-client attach exits non-zero, says no grant can help",
               rc not in (0, None) and ("ptrace_scope" in out or "no grant can help" in out),
               f"status {rc}", out)
    live.stop()
    kill_user_processes()


def heli_scope2_root():
    """At scope 2 root (CAP_SYS_PTRACE) may attach and needs no grant: one policy says so
    to the controller, the core and the client alike (it used to let root start, then
    refuse every grant)."""
    d = "/run/tmp/heli-s2-root"
    log = open(os.path.join(LOGS, "controller-s2-root.log"), "w", buffering=1)
    env = dict(USER_ENV)
    ctl = subprocess.Popen([CONTROLLER, "--pipe-dir", d, "--python", PY, FIXTURE],
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                           cwd="/run/tmp", env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and ctl.poll() is None:
            with open(log.name) as f:
                if "listening on" in f.read():
                    break
            time.sleep(0.05)
        with open(log.name) as f:
            started = "listening on" in f.read()
        record("scope 2 heli as root: the controller starts (root may attach at scope 2)",
               started and ctl.poll() is None, f"status {ctl.poll()}")
        if not started:
            return
        p = subprocess.run([CLIENT, "--pipe-dir", d, "--python", PY],
                           input="attach\np counter\nq\nterminate\n", capture_output=True,
                           text=True, timeout=120, cwd="/run/tmp", env=env)
        out = p.stdout + p.stderr
        record("scope 2 heli as root: attach, p counter, terminate exits 0 with a value",
               p.returncode == 0 and len(pdb_values(out)) == 1, f"status {p.returncode}", out)
        try:
            ctl.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with open(log.name) as f:
            said = f.read()
        record("scope 2 heli as root: the controller answered READY without a grant",
               "needs no grant" in said, "", said)
    finally:
        if ctl.poll() is None:
            os.killpg(ctl.pid, signal.SIGKILL)
            ctl.wait()
        log.close()


def main():
    say(f"rig job: scopes {CFG['scopes']}, checks {CFG['only']}, break grant {CFG['break_grant']}")
    if not setup_checks():
        RESULTS.write("DONE\n")
        return
    heli_on = CFG["only"] != "rules"
    for scope in CFG["scopes"]:
        live = start_live_controller(scope) if heli_on and scope >= 2 else None
        got = set_scope(scope)
        record(f"scope {scope}: kernel.yama.ptrace_scope set", got == scope, f"reads {got}")
        if got != scope:
            continue
        phases = []
        if heli_on:
            heli = {1: lambda: heli_scope1(CFG["break_grant"]), 0: heli_scope0}
            phases.append(("heli", heli.get(scope, lambda: heli_scope_high(scope, live))))
            if scope == 2:
                phases.append(("heli as root", heli_scope2_root))
            if scope == 1:
                phases.append(("heli waiting and the tree", heli_scope1_waiting))
                for py in MORE_PYTHONS:
                    phases.append((f"heli {py}", lambda py=py: heli_scope1_seed(py, CFG["break_grant"])))
        # After the heli phase: the kernel-rule phase kills every uid-1000 process.
        phases.append(("kernel rules", lambda: rules_checks(scope)))
        for label, phase in phases:
            try:
                phase()
            except Exception:  # a bug in the rig must show as a failure, not stop the run
                record(f"scope {scope} {label}: phase ran to the end", False,
                       "the rig raised an exception", traceback.format_exc())
            kill_user_processes()
    # Denials are logged by the kernel ("ptrace attach of ... was attempted by ...").
    subprocess.run(["dmesg"], stdout=open(os.path.join(LOGS, "dmesg.log"), "w"),
                   stderr=subprocess.STDOUT)
    say(f"{counts['pass']} passed, {counts['fail']} failed")
    RESULTS.write("DONE\n")


if __name__ == "__main__":
    main()
