"""Unprivileged helper of the Yama rig (runs as uid 1000 inside the VM, Python 3.14).

Modes:
  probe.py serve            line-driven helper that plays a raw client: reads one command
                            per line on stdin, answers one JSON line on stdout. It stays
                            alive between commands so that a grant made to its pid holds.
      pid                     -> {"pid": N}
      send DIR WORDS...       -> {"reply": LINE} | {"error": MSG}   (raw FIFO request)
      grant DIR               -> same, for "GRANT_ACCESS <own pid>"
      exec PID                -> {"result": "allowed"|"denied"|"noeffect"|"error", ...}
      child-exec PID          -> the same, tried by a child process of this helper
  probe.py exec PID         one sys.remote_exec attempt, printed as JSON
  probe.py rules SCOPE      the kernel's Yama rules, checked without the project's
                            binaries; prints "PASS name" / "FAIL name: detail" lines

Why sys.remote_exec is the probe: it needs the same PTRACE_MODE_ATTACH permission as
`python3.14 -m pdb -p` (process_vm_writev), and the injected script leaves a marker file,
so "allowed" means the target really ran our code, not only that no error was raised.
"""

import ctypes
import errno
import json
import os
import subprocess
import sys
import tempfile
import time

PR_SET_PTRACER = 0x59616D61  # b"Yama"
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "fixtures", "counter.py")


def wait_for(pred, timeout):
    """Bounded wait for a condition that has no event to block on (a file appearing)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def run_in(pid, body, timeout=15.0):
    """sys.remote_exec a script into PID; returns (result, detail, output-of-script)."""
    d = tempfile.mkdtemp(prefix="probe-")
    marker = os.path.join(d, "done")
    script = os.path.join(d, "inject.py")
    with open(script, "w") as f:
        f.write(body.replace("@MARKER@", repr(marker)))
    try:
        sys.remote_exec(pid, script)
    except PermissionError as e:
        return "denied", f"{type(e).__name__}: {e}", None
    except Exception as e:  # noqa: BLE001 - anything else is reported, not hidden
        return "error", f"{type(e).__name__}: {e}", None
    if not wait_for(lambda: os.path.exists(marker), timeout):
        return "noeffect", "no error, but the script did not run within %.0fs" % timeout, None
    with open(marker) as f:
        return "allowed", "", f.read()


MARK = """
with open(@MARKER@ + ".tmp", "w") as f:
    f.write("ran")
import os
os.rename(@MARKER@ + ".tmp", @MARKER@)
"""


def try_exec(pid):
    result, detail, _ = run_in(int(pid), MARK)
    return {"result": result, "detail": detail}


def fifo_request(pipe_dir, line, timeout=30.0):
    """One raw request on the controller's FIFOs (the wire protocol of the project).

    `response` is opened non-blocking *before* the command is written, so the reply can
    not be missed, and the reply is awaited with poll() and a deadline."""
    import select

    try:
        resp = os.open(os.path.join(pipe_dir, "response"), os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return {"error": f"cannot open the response pipe: {e}"}
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ctl = os.open(os.path.join(pipe_dir, "control"), os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                # ENXIO: no reader at this instant (the controller is between two opens).
                if e.errno != errno.ENXIO or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
        try:
            os.write(ctl, (line + "\n").encode())
        finally:
            os.close(ctl)
        buf = b""
        poller = select.poll()
        poller.register(resp, select.POLLIN)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return {"error": f"no reply to {line!r} within {timeout:.0f}s"}
            for _fd, ev in poller.poll(left * 1000):
                chunk = os.read(resp, 4096) if ev & (select.POLLIN | select.POLLHUP) else b""
                if not chunk and ev & select.POLLHUP:
                    # The writer closed without a full line: keep waiting for a new writer.
                    poller.unregister(resp)
                    os.close(resp)
                    resp = os.open(os.path.join(pipe_dir, "response"), os.O_RDONLY | os.O_NONBLOCK)
                    poller.register(resp, select.POLLIN)
                buf += chunk
        return {"reply": buf.split(b"\n", 1)[0].decode(errors="replace")}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        os.close(resp)


def serve():
    for raw in sys.stdin:
        words = raw.split()
        if not words:
            continue
        try:
            out = serve_one(words[0], words[1:])
        except Exception as e:  # noqa: BLE001 - one JSON line per command, always
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


def serve_one(cmd, args):
    if cmd == "pid":
        return {"pid": os.getpid()}
    if cmd == "send":
        return fifo_request(args[0], " ".join(args[1:]))
    if cmd == "grant":
        return fifo_request(args[0], f"GRANT_ACCESS {os.getpid()}")
    if cmd == "exec":
        return try_exec(args[0])
    if cmd == "child-exec":
        p = subprocess.run([sys.executable, __file__, "exec", args[0]],
                           capture_output=True, text=True, timeout=60)
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"result": "error", "detail": f"child said {p.stdout!r} {p.stderr!r}"}
    return {"error": f"unknown command {cmd!r}"}


class Helper:
    """A `probe.py serve` child: a process other than the target's parent."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, __file__, "serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.pid = self.ask("pid")["pid"]

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        reply = self.p.stdout.readline()
        if not reply:
            raise RuntimeError(f"helper {self.p.pid} died on {line!r}")
        return json.loads(reply)

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


def rules(scope):
    """Kernel rules at SCOPE, with this process in the controller's place (the target's
    parent) and helper children in the clients' place (the target's siblings)."""
    results = []

    def check(name, got, want, detail=""):
        ok = got == want
        results.append(ok)
        extra = "" if ok else f": expected {want}, got {got} {detail}".rstrip()
        print(f"{'PASS' if ok else 'FAIL'} {name}{extra}", flush=True)

    def declare(pid):
        """Make the target run prctl(PR_SET_PTRACER, pid) from inside, as the controller does."""
        body = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.prctl({PR_SET_PTRACER}, ctypes.c_ulong({pid}), 0, 0, 0)
err = ctypes.get_errno()
with open(@MARKER@ + ".tmp", "w") as f:
    f.write(f"{{rc}} {{err}}")
import os
os.rename(@MARKER@ + ".tmp", @MARKER@)
"""
        result, detail, out = run_in(target.pid, body)
        return result if result != "allowed" else ("ok" if out.split()[0] == "0" else f"prctl failed: {out}")

    allowed_parent = "allowed" if scope in (0, 1) else "denied"
    allowed_sibling = "allowed" if scope == 0 else "denied"
    target = subprocess.Popen([sys.executable, FIXTURE])
    helpers = []
    try:
        a = Helper()
        helpers.append(a)
        r = try_exec(target.pid)
        check("the parent may write into its child" if scope < 2 else
              "even the parent is refused", r["result"], allowed_parent, r["detail"])
        r = a.ask(f"exec {target.pid}")
        check("a sibling (e.g. a helper interpreter of the parent) is refused" if scope else
              "a sibling may write (classic rules)", r["result"], allowed_sibling, r["detail"])
        if scope == 1:
            b = Helper()
            helpers.append(b)
            check("the target can declare a tracer (prctl PR_SET_PTRACER)", declare(a.pid), "ok")
            r = a.ask(f"exec {target.pid}")
            check("the declared tracer may write", r["result"], "allowed", r["detail"])
            r = a.ask(f"child-exec {target.pid}")
            check("a child of the declared tracer may write", r["result"], "allowed", r["detail"])
            r = b.ask(f"exec {target.pid}")
            check("an undeclared process stays refused", r["result"], "denied", r["detail"])
            check("the target can re-declare another tracer", declare(b.pid), "ok")
            r = a.ask(f"exec {target.pid}")
            check("the replaced tracer is refused", r["result"], "denied", r["detail"])
            r = b.ask(f"exec {target.pid}")
            check("the new tracer may write", r["result"], "allowed", r["detail"])
            check("the target can revoke (prctl 0)", declare(0), "ok")
            r = b.ask(f"exec {target.pid}")
            check("after revocation the tracer is refused", r["result"], "denied", r["detail"])
    finally:
        for h in helpers:
            h.close()
        target.kill()
        target.wait()
    return 0


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "serve":
        serve()
    elif mode == "exec":
        print(json.dumps(try_exec(sys.argv[2])), flush=True)
    elif mode == "rules":
        sys.exit(rules(int(sys.argv[2])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
