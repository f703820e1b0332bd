"""Processes of their own without the imports: a fork server for the tests that run `python train.py` (or
another of the template's entry points) as a user would.

Importing torch and Lightning takes 5 s a process here, and the tests start over a hundred. One server per test
process imports them once; each command is then a child forked from it, a real process: its own pid, stdin,
stdout and stderr, signal handlers, exit status, atexit handlers and threads, its cwd and environment (its
PYTHONPATH on sys.path) and fresh random seeds. It runs the entry point as `python` does (`__main__`, sys.argv)
and ends as `python` ends, less the teardown of every module (a third of a second each): an object's `__del__`
that only that teardown would run does not run, so a test of it uses a new interpreter.
What only a new interpreter shows, a signal while the libraries load or a warning raised while they import (the
server's imports raised it already), needs `run_cli(..., fresh=True)`: a new `python` process. So does what is
read as an interpreter starts or a library imports: a request whose PYTHON* (but PYTHONPATH), OMP_NUM_THREADS or
MPLBACKEND differ from the server's gets a new interpreter by itself. The children share the server's string-hash
seed (a set's order is the same in each). With TESTS_FRESH_PROCESSES=1 every command gets a new interpreter.
"""

import atexit
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AT_START = ("OMP_NUM_THREADS", "MPLBACKEND")  # read as torch's thread pool and matplotlib start
# What a run imports, brought in once: the run layer, every extra (configs/train.yaml names them by class path),
# tune.py's libraries, the tests' injected callbacks, and what a run imports on first use (pictures, images, events).
PRELOAD = """
import matplotlib.pyplot, PIL.Image, numpy, optuna, optuna_integration, sqlalchemy, torch, torch.utils.tensorboard
import project.run.cli, tests.faults.injectors, tests.slow_stages
for module in sorted(__import__("pathlib").Path("project/extras").glob("*.py")):
    __import__(f"project.extras.{module.stem}")
"""
SERVER = """
import atexit, contextlib, gc, json, os, random, runpy, select, signal, socket, struct, sys, threading, types
sys.path[0] = os.getcwd()  # as `python train.py` has it: the script's folder first
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also where the tests ignore Ctrl-C
exec(sys.argv[2])
import numpy, torch
assert not torch.cuda.is_initialized()  # a forked child could not use CUDA
# The preloaded objects out of the garbage collector's sight (gc's documented advice before a fork): a child's
# collections would touch every one, each page then copied for the child; a child's end took 1.4 s, 0.4 s frozen.
gc.freeze()


def run_and_end(run):
    # Runs the script, then ends the process as the interpreter ends one, but for its teardown of every module
    # (0.35 s here; a __del__ that only the teardown would run does not run): the exit status of SystemExit or of
    # an uncaught exception, shown by sys.excepthook; non-daemon threads joined, atexit's handlers run, the streams
    # flushed; an uncaught Ctrl-C ends by SIGINT. threading._shutdown and atexit._run_exitfuncs are private: the
    # interpreter's own steps, which multiprocessing's forked children take too; the server refuses to start where
    # they are gone.
    status, interrupted = 0, False
    try:
        run()
    except SystemExit as end:
        status = 0 if end.code is None else end.code if isinstance(end.code, int) else 1
        if not isinstance(end.code, int | None):
            print(end.code, file=sys.stderr)
    except BaseException as error:
        sys.excepthook(type(error), error, error.__traceback__)
        status, interrupted = 1, isinstance(error, KeyboardInterrupt)
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


assert callable(getattr(threading, "_shutdown", None)) and callable(getattr(atexit, "_run_exitfuncs", None)), (
    "this Python has no threading._shutdown or atexit._run_exitfuncs: run_and_end needs another way to end a child"
)

listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(sys.argv[1])
listener.listen(64)
print("ready", flush=True)
children = {}  # pid -> the connection that waits for its exit status
while True:
    if select.select([listener], [], [], 0.02)[0]:
        connection, _ = listener.accept()
        try:
            message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
            request = json.loads(message)
        except (OSError, ValueError):  # a client gone before its request: the others are served on
            connection.close()
            continue
        pid = os.fork()
        if pid == 0:  # the child: becomes `python ARGS` in the request's folder and environment
            listener.close()
            for other in [connection, *children.values()]:
                other.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            paths = [os.path.abspath(p) for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
            sys.path[1:1] = [p for p in paths if p not in sys.path]
            os.environ.clear()
            os.environ.update(request["env"])
            random.seed(), numpy.random.seed(), torch.seed()  # a new process draws other numbers
            args = request["args"]
            if args[0] == "-c":  # the code in a new __main__, as `python -c CODE ARGS` runs it
                sys.argv, sys.path[0], main = ["-c", *args[2:]], "", types.ModuleType("__main__")
                sys.modules["__main__"] = main
                run_and_end(lambda: exec(compile(args[1], "<string>", "exec"), main.__dict__))
            if args[0] == "-m":
                sys.argv, sys.path[0] = args[1:], os.getcwd()
                sys.modules.pop(args[1], None)  # preloaded: `python -m` runs it afresh, as __main__ only
                run_and_end(lambda: runpy.run_module(args[1], run_name="__main__", alter_sys=True))
            sys.argv = args
            sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
            run_and_end(lambda: runpy.run_path(args[0], run_name="__main__"))
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            connection.send(struct.pack("i", pid))
        children[pid] = connection
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        with children.pop(pid) as connection, contextlib.suppress(OSError):  # a client gone (its timeout): no one
            connection.send(struct.pack("i", os.waitstatus_to_exitcode(status)))
"""


def read_at_start(env) -> dict:
    """The variables an interpreter or a library reads once, as it starts: PYTHON* but PYTHONPATH (a child puts
    that on sys.path), and AT_START's."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONPATH" or k in AT_START}


class ForkServer:
    """The server of this test process, started on first use and ended at its exit."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="forkserver-"))
        self.socket = str(self.folder / "socket")
        self.started = read_at_start(os.environ)
        with open(self.folder / "stderr", "w") as errors:  # the server's own: why it did not start
            self.process = subprocess.Popen([sys.executable, "-c", SERVER, self.socket, PRELOAD], cwd=REPO,
                                            stdout=subprocess.PIPE, stderr=errors, text=True)  # fmt: skip
        atexit.register(self.close)
        if self.process.stdout.readline().strip() != "ready":
            self.process.wait()
            raise RuntimeError(f"the fork server did not start: {(self.folder / 'stderr').read_text()[-2000:]}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        """What subprocess.run([python, *args], capture_output=True, text=True) gives."""
        out, err = os.pipe(), os.pipe()
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection, open(os.devnull) as null:
            connection.connect(self.socket)
            request = json.dumps({"args": [str(a) for a in args], "cwd": str(cwd), "env": dict(env)}).encode()
            socket.send_fds(connection, [request], [null.fileno(), out[1], err[1]])
            os.close(out[1]), os.close(err[1])
            reply = connection.recv(4)
            if len(reply) != 4:
                raise RuntimeError(f"the fork server ended without starting {args}")
            (pid,) = struct.unpack("i", reply)
            texts = ["", ""]

            def read(index: int, fd: int) -> None:
                with open(fd, encoding="utf-8", errors="replace") as pipe:
                    texts[index] = pipe.read()

            readers = [threading.Thread(target=read, args=(i, p[0])) for i, p in enumerate((out, err))]
            for reader in readers:
                reader.start()
            connection.settimeout(timeout)
            try:
                reply = connection.recv(4)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                reply = b""
            for reader in readers:
                reader.join()
        if len(reply) != 4:
            raise subprocess.TimeoutExpired(args, timeout, *texts)
        return subprocess.CompletedProcess([sys.executable, *args], struct.unpack("i", reply)[0], *texts)


_server: ForkServer | None = None
_starting = threading.Lock()  # two threads of a test (two runs at once) share one server


def forked(args: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGS` (a script and its arguments, -m MODULE ..., or -c CODE ...) as a child of this test process's
    server; in a new interpreter where TESTS_FRESH_PROCESSES=1 (to compare, or to rule the server out), or where env
    sets what only a new interpreter reads."""
    global _server
    with _starting:
        if os.environ.get("TESTS_FRESH_PROCESSES") != "1" and (_server is None or _server.process.poll() is not None):
            _server = ForkServer()
    if _server is None or read_at_start(env) != _server.started:
        return fresh(args, cwd, env, timeout)
    return _server.run(args, cwd, env, timeout)


def server() -> subprocess.Popen | None:
    """The server process of this test process, once started (None before, or with TESTS_FRESH_PROCESSES=1)."""
    return _server.process if _server is not None else None


def fresh(args: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGS` in a new interpreter, Ctrl-C taken as in a terminal (also where the tests ignore it)."""
    command = [sys.executable, *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
