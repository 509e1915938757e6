"""Network namespaces and processes of one benchmark run, and their removal.

A bridge in a namespace of its own, one namespace per pod (veth on the bridge, loopback up,
default route), like the end-to-end tests' mesh. Every namespace and process the lab creates
is recorded and removed by `Lab.close()`, which the caller runs in a `finally` (also on
Ctrl-C). iptables rules live inside the pod namespaces and go with them.
"""

import os
import shutil
import signal
import subprocess
import time

PREFIX = "wbench"


def sh(argv, check=True, timeout=60, **kw):
    """Runs a command to completion; raises with its stderr when `check` and it fails."""
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


class Proc:
    """A process the lab started, in its own session (its pid is its session id)."""

    def __init__(self, name, popen, log):
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self):
        return self.popen.pid

    def pids(self):
        """The process and its children (same session), e.g. nginx's master and worker."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            st = read_stat(int(entry))
            if st is not None and st[3] == self.pid:
                found.append(int(entry))
        return found

    def alive(self):
        return self.popen.poll() is None

    def tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def read_stat(pid):
    """(state, ppid, pgrp, session, utime, stime) from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[11]), int(rest[12])


def cpu_seconds(procs):
    """utime + stime (all threads) of the processes' sessions, in seconds."""
    return sum(cpu_split(procs))


def cpu_split(procs):
    """(utime, stime) (all threads) of the processes' sessions, in seconds."""
    user = system = 0
    for p in procs:
        for pid in p.pids():
            st = read_stat(pid)
            if st is not None:
                user += st[4]
                system += st[5]
    hz = os.sysconf("SC_CLK_TCK")
    return user / hz, system / hz


def rss_mb(proc):
    """VmRSS summed over the process's session (nginx master + worker), in MB."""
    kb = 0
    for pid in proc.pids():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


class Pod:
    def __init__(self, name, ns, ip):
        self.name = name
        self.ns = ns
        self.ip = ip


class Lab:
    """Namespaces 10.<net>.0.0/24 on a bridge, and the processes started in them."""

    def __init__(self, workdir, subnet="10.91.0", hosts=""):
        self.workdir = workdir
        self.subnet = subnet
        self.hosts = hosts
        self.bridge_ns = f"{PREFIX}-br"
        self.namespaces = []
        self.procs = []
        self.pods = {}
        self.veths = 0

    # -- namespaces --------------------------------------------------------------------------
    def remove_leftovers(self):
        """Removes this harness's namespaces left by a run that was killed hard."""
        out = sh(["ip", "netns", "list"], check=False)
        for line in out.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(PREFIX + "-"):
                self._kill_ns_pids(name)
                sh(["ip", "netns", "del", name], check=False)
                shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)

    @staticmethod
    def _kill_ns_pids(ns):
        pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass

    def _add_ns(self, ns):
        sh(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])

    def create_bridge(self):
        self._add_ns(self.bridge_ns)
        ex = ["ip", "netns", "exec", self.bridge_ns]
        sh(ex + ["ip", "link", "add", "br0", "type", "bridge"])
        sh(ex + ["ip", "link", "set", "br0", "up"])
        sh(ex + ["ip", "addr", "add", f"{self.subnet}.1/24", "dev", "br0"])

    def add_pod(self, name, host):
        ns = f"{PREFIX}-{name}"
        ip = f"{self.subnet}.{host}"
        self.veths += 1
        veth = f"{PREFIX}v{self.veths}"
        self._add_ns(ns)
        sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        sh(["ip", "link", "set", veth, "netns", self.bridge_ns])
        bex = ["ip", "netns", "exec", self.bridge_ns]
        sh(bex + ["ip", "link", "set", veth, "master", "br0"])
        sh(bex + ["ip", "link", "set", veth, "up"])
        ex = ["ip", "netns", "exec", ns]
        sh(ex + ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
        sh(ex + ["ip", "link", "set", "eth0", "up"])
        sh(ex + ["ip", "route", "add", "default", "via", f"{self.subnet}.1"])
        # Per-namespace settings: many short connections in the handshake test.
        sh(ex + ["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"], check=False)
        sh(ex + ["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=10000 65000"], check=False)
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        with open(f"/etc/netns/{ns}/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n" + self.hosts)
        pod = Pod(name, ns, ip)
        self.pods[name] = pod
        return pod

    # -- processes ---------------------------------------------------------------------------
    def spawn(self, name, pod, argv, cpu=None, uid=None, env=None):
        """Starts a long-running process in a pod, pinned to `cpu`, logging to workdir."""
        cmd = ["ip", "netns", "exec", pod.ns]
        if cpu is not None:
            cmd += ["taskset", "-c", str(cpu)]
        if uid is not None:
            cmd += ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups"]
        cmd += argv
        log = os.path.join(self.workdir, f"{name}.log")
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log, "w") as f:
            popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                     env=full_env, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def exec(self, pod, argv, cpu=None, rt=False, timeout=120, check=False):
        """Runs a command in a pod to completion (the clients)."""
        cmd = ["ip", "netns", "exec", pod.ns]
        if cpu is not None:
            cmd += ["taskset", "-c", str(cpu)]
        if rt:
            cmd += ["chrt", "-r", "10"]
        return sh(cmd + argv, check=check, timeout=timeout)

    def stop(self, proc, grace=3.0):
        if proc.popen.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of its session (nginx workers), then the leader.
        for pid in proc.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def close(self):
        """Stops every process, then deletes every namespace (veths and iptables go with them)."""
        for proc in reversed(self.procs):
            self.stop(proc, grace=2.0)
        self.procs = []
        for ns in reversed(self.namespaces):
            self._kill_ns_pids(ns)
            for _ in range(3):
                if sh(["ip", "netns", "del", ns], check=False).returncode == 0:
                    break
                time.sleep(0.2)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        self.namespaces = []
