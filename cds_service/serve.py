"""``cds-service serve``: nginx in front of gunicorn, supervised as one service (or gunicorn alone).

With nginx (see :mod:`cds_service.proxy`)::

    cds-service serve            the supervisor: forwards signals, reaps, cleans up
    ├── gunicorn master          on <runtime dir>/gunicorn.sock, its workers below it
    └── nginx master             on HOST:PORT, its workers below it

gunicorn starts first; its master checks settings, content and database (one line and exit 2 on
a mistake) and only then creates its socket, and only then is nginx started. SIGTERM stops nginx
gracefully first (it finishes what it has taken in, at most a few seconds), then gunicorn (it
finishes what nginx passed it); SIGINT stops both at once. When either process exits, the other
is stopped and the supervisor exits. The children stay in the supervisor's process group and get
SIGTERM if the supervisor itself dies, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cds_service.config import Settings
from cds_service.errors import OperatorError
from cds_service.proxy import (
    MAX_WORKER_PROCESSES,
    SHUTDOWN_SECONDS,
    WORKER_CONNECTIONS,
    NginxLayout,
    choose_proxy,
    listen_address,
    render_nginx_conf,
)
from cds_service.ready import READY_DIR_VARIABLE, Announcer, browsable_base, ready_line
from cds_service.worker_sockets import ENV as WORKER_SOCKETS_ENV
from cds_service.worker_sockets import slot_paths

APP = "cds_service:create_app()"
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD}
START_SECONDS = 120  # gunicorn's master checks content and database before it creates its socket
GUNICORN_STOP_SECONDS = 25  # its graceful_timeout is 20 s
NGINX_STOP_SECONDS = SHUTDOWN_SECONDS + 5


def gunicorn_command(*extra: str) -> list[str]:
    """gunicorn with the shared config (python:cds_service.gunicorn_conf) and the app."""
    return [sys.executable, "-m", "gunicorn", "-c", "python:cds_service.gunicorn_conf", *extra, APP]


def serve(settings: Settings, host: str, port: int) -> int:
    """Run the service on ``host:port`` until it is stopped; the exit status to return."""
    choice = choose_proxy(settings)
    if choice.notice:
        print(choice.notice, file=sys.stderr, flush=True)
    check_listen(host, port)
    if choice.nginx is None:
        env = {**os.environ, "HOST": host, "PORT": str(port)}
        command = gunicorn_command()
        os.execvpe(command[0], command, env)
    runtime_dir = _runtime_dir()
    try:
        return _serve_behind_nginx(settings, choice.nginx, host, port, runtime_dir)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def check_listen(host: str, port: int) -> None:
    """Refuse in one line an address that cannot be listened on, before anything starts."""
    where = listen_address(host, port)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError):
        raise OperatorError(f"cannot listen on {where}: unknown host {host!r}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            reason = {
                errno.EADDRINUSE: "the port is in use",
                errno.EACCES: "permission denied (ports below 1024 need privileges)",
                errno.EADDRNOTAVAIL: "not an address of this machine",
            }.get(error.errno or 0, error.strerror)
            raise OperatorError(f"cannot listen on {where}: {reason}") from None


def _runtime_dir() -> Path:
    """A private (0700) directory for the socket, nginx.conf, pid and temp files."""
    path = Path(tempfile.mkdtemp(prefix="footdrop-cds-"))
    if len(str(path / "gunicorn.sock")) > 100:  # sun_path holds 108 bytes
        path.rmdir()
        path = Path(tempfile.mkdtemp(prefix="footdrop-cds-", dir="/tmp"))
    return path


def _serve_behind_nginx(
    settings: Settings, nginx: str, host: str, port: int, runtime_dir: Path
) -> int:
    sock = runtime_dir / "gunicorn.sock"
    conf = runtime_dir / "nginx.conf"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    connections, open_files = _raise_open_files_limit()
    workers = _gunicorn_workers()
    slots = slot_paths(runtime_dir, workers)
    layout = NginxLayout(
        listen=listen_address(host, port),
        # One socket per worker, balanced by nginx; the shared one only if none answers.
        upstreams=[*(f"unix:{slot} max_fails=0" for slot in slots), f"unix:{sock} backup"],
        runtime_dir=runtime_dir,
        worker_processes=max(1, min(MAX_WORKER_PROCESSES, cpus or 1)),
        worker_connections=connections,
        open_files=open_files,
        user=_root_identity(),
    )
    conf.write_text(render_nginx_conf(settings, layout))
    nginx_command = [nginx, "-e", "stderr", "-p", str(runtime_dir), "-c", str(conf)]
    _test_nginx_conf(nginx_command)
    extra = ["--bind", f"unix:{sock}"]
    if _gunicorn_has("control_socket"):  # gunicorn >= 25.1: its gunicornc socket
        # defaults to one path in $HOME shared by every instance; here it is this instance's own.
        extra += ["--control-socket", str(runtime_dir / "gunicorn.ctl")]
    gunicorn = gunicorn_command(*extra)
    base = browsable_base(host, port)
    line = ready_line(base, landing_page=not settings.is_production)
    ready_dir = runtime_dir / "ready"
    ready_dir.mkdir()
    announcer = Announcer(base, line, _say, ready_dir, workers)
    supervisor = Supervisor(gunicorn, nginx_command, sock, slots=slots, announcer=announcer)
    supervisor.env["gunicorn"] = {
        **os.environ,
        READY_DIR_VARIABLE: str(ready_dir),
        WORKER_SOCKETS_ENV: f"{runtime_dir}:{workers}",
        # Metrics files in the runtime directory: removed with it even if gunicorn is killed.
        "PROMETHEUS_MULTIPROC_DIR": os.environ.get(
            "PROMETHEUS_MULTIPROC_DIR", str(runtime_dir / "metrics")
        ),
    }
    return supervisor.run()


def _gunicorn_workers() -> int:
    """How many workers gunicorn will start (its config, as gunicorn reads it)."""
    from cds_service import gunicorn_conf

    return int(gunicorn_conf.workers)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _gunicorn_has(setting: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(known.name == setting for known in KNOWN_SETTINGS)


def _raise_open_files_limit() -> tuple[int, int]:
    """nginx's connections per worker and its open-file limit, the soft limit raised to fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * WORKER_CONNECTIONS + 256
    limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return max(256, min(WORKER_CONNECTIONS, (limit - 256) // 2)), limit


def _root_identity() -> tuple[str, str] | None:
    """Started as root, nginx's workers would switch to ``nobody``: keep the supervisor's user."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def _test_nginx_conf(nginx_command: list[str]) -> None:
    """``nginx -t``: a configuration nginx refuses is one line, before anything starts."""
    try:
        done = subprocess.run(
            [*nginx_command, "-t", "-q"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OperatorError(f"nginx ({nginx_command[0]}) cannot be run: {error}") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no reason given"]
        reason = lines[0].removeprefix("nginx: ").split("] ", 1)[-1]
        raise OperatorError(f"nginx refused its configuration: {reason}")


def _libc() -> ctypes.CDLL | None:
    """The C library when it has ``prctl`` (Linux), else None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl  # noqa: B018 - raises AttributeError where there is no prctl
    except (OSError, AttributeError):
        return None
    return libc


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _child_setup(parent: int) -> Callable[[], None]:
    """In each child before exec: default signal mask, SIGTERM when the supervisor dies."""
    libc = _libc()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl
            os._exit(1)

    return setup


def _own_children() -> list[int]:
    """Every process whose parent is this one (from /proc; empty where there is none)."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


class Supervisor:
    """gunicorn on its socket, then nginx; signals forwarded; both stopped when either exits."""

    def __init__(
        self,
        gunicorn: list[str],
        nginx: list[str],
        sock: Path,
        *,
        slots: list[Path] | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        self.commands = {"gunicorn": gunicorn, "nginx": nginx}
        self.sock = sock
        self.slots = slots or []  # every worker's own socket (nginx balances over them)
        self.announcer = announcer  # prints where to click once the service answers
        self.env: dict[str, dict[str, str]] = {}  # a child's environment, when not ours
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.exit_codes: dict[str, int] = {}

    def run(self) -> int:
        libc = _libc()
        if libc is not None:
            # An nginx worker outlives a killed nginx master: as a subreaper the supervisor
            # inherits it (instead of init) and stops it with the rest.
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            return self._run()
        finally:
            if self.announcer is not None:
                self.announcer.stop()
            self._kill_leftovers()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    def _run(self) -> int:
        self._start("gunicorn")
        deadline = time.monotonic() + START_SECONDS
        # The shared socket, then every worker's own (nginx would log each miss otherwise).
        while not (self.sock.exists() and all(slot.exists() for slot in self.slots)):
            if "gunicorn" in self.exit_codes:  # the master's check printed its one line
                return self.exit_codes["gunicorn"]
            if time.monotonic() > deadline:
                self.stop(graceful=False)
                raise OperatorError(f"gunicorn did not open its socket within {START_SECONDS} s")
            signo = self._wait_signal(0.05)
            if signo in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                self.stop(graceful=signo != signal.SIGINT)
                return 0
        self._start("nginx")
        if self.announcer is not None:
            self.announcer.start()
        while True:
            signo = self._wait_signal(1.0)
            if self.exit_codes:
                return self._one_exited()
            if signo in (signal.SIGTERM, signal.SIGQUIT):
                self.stop(graceful=True)
                return 0
            if signo == signal.SIGINT:
                self.stop(graceful=False)
                return 0
            if signo == signal.SIGHUP:  # gunicorn reloads its workers, nginx its configuration
                self._send("gunicorn", signal.SIGHUP)
                self._send("nginx", signal.SIGHUP)

    def _start(self, name: str) -> None:
        self.children[name] = subprocess.Popen(
            self.commands[name], preexec_fn=_child_setup(os.getpid()), env=self.env.get(name)
        )

    def _one_exited(self) -> int:
        name, code = next(iter(self.exit_codes.items()))
        other = "nginx" if name == "gunicorn" else "gunicorn"
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        print(f"cds-service: {name} {how}; stopping {other}", file=sys.stderr, flush=True)
        self.stop(graceful=True)
        return code if code >= 0 else 128 - code

    def stop(self, *, graceful: bool) -> None:
        """Graceful: nginx finishes what it took in, then gunicorn; else both at once."""
        if graceful:
            self._send("nginx", signal.SIGQUIT)
            self._wait_exit("nginx", NGINX_STOP_SECONDS)
            self._send("gunicorn", signal.SIGTERM)
            self._wait_exit("gunicorn", GUNICORN_STOP_SECONDS)
        else:
            self._send("nginx", signal.SIGTERM)
            self._send("gunicorn", signal.SIGINT)
            self._wait_exit("nginx", NGINX_STOP_SECONDS)
            self._wait_exit("gunicorn", GUNICORN_STOP_SECONDS)

    def _send(self, name: str, signo: int) -> None:
        child = self.children.get(name)
        if child is not None and name not in self.exit_codes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signo)

    def _wait_exit(self, name: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while name in self.children and name not in self.exit_codes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wait_signal(min(remaining, 1.0)) == signal.SIGINT:  # a second Ctrl-C
                self._send("nginx", signal.SIGTERM)
                self._send("gunicorn", signal.SIGINT)

    def _wait_signal(self, seconds: float) -> int | None:
        """The next signal (None after ``seconds``); every exited child reaped first."""
        info = signal.sigtimedwait(SIGNALS, seconds)
        self._reap()
        return info.si_signo if info is not None else None

    def _reap(self) -> None:
        """Collect every exited child: ours (status kept), and orphans when we are PID 1."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for name, child in self.children.items():
                if child.pid == pid:
                    child.returncode = os.waitstatus_to_exitcode(status)
                    self.exit_codes[name] = child.returncode

    def _kill_leftovers(self) -> None:
        """SIGKILL whatever is still running: ours, and orphans inherited as a subreaper."""
        for name, child in self.children.items():
            if name not in self.exit_codes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.wait()
        orphans = _own_children()
        for signo in (signal.SIGTERM, signal.SIGKILL):
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signo)
            deadline = time.monotonic() + 2
            while orphans and time.monotonic() < deadline:
                time.sleep(0.05)
                self._reap()
                orphans = [pid for pid in orphans if _alive_child(pid)]


def _alive_child(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False
