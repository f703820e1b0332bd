"""The fork server's processes (tests/forkserver.py) end as new interpreters do: the same exit status, output,
atexit handlers, a SIGTERM and a KeyboardInterrupt, folder, environment, sys.argv and sys.path, compared with
`python SCRIPT` itself. The
script imports what the server imported (train.py does): their import-time effects (project.run.signals' one-line
Ctrl-C) are in both."""

import os
import subprocess
import sys

import pytest

from tests import forkserver
from tests.conftest import REPO
from tests.forkserver import forked

pytestmark = pytest.mark.skipif(os.environ.get("TESTS_FRESH_PROCESSES") == "1", reason="no fork server to compare")

SCRIPT = """
import atexit, os, random, signal, sys
import project.run.signals
import helper  # from PYTHONPATH
atexit.register(lambda: print("atexit ran", flush=True))
print(__name__, sys.argv[1:], os.getcwd(), os.environ["MARK"], sys.path[0] == os.path.dirname(__file__), helper.X)
print("to stderr", file=sys.stderr)
how = sys.argv[1]
if how == "exit":
    sys.exit(3)
if how == "raise":
    raise RuntimeError("broke")
if how == "signal":
    os.kill(os.getpid(), signal.SIGTERM)
if how == "interrupt":
    raise KeyboardInterrupt
print(random.random())  # a new process draws other numbers
"""


@pytest.mark.parametrize("how", ["end", "exit", "raise", "signal", "interrupt"])
def test_a_forked_process_ends_as_a_new_interpreter_does(tmp_path, how):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper.py").write_text("X = 42\n")
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "work").mkdir()
    env = {**os.environ, "MARK": "é", "PYTHONPATH": str(tmp_path / "lib")}
    args, cwd = [str(tmp_path / "script.py"), how], tmp_path / "work"
    fresh = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    runs = [forked(args, cwd, env), forked(args, cwd, env)]
    for run in runs:
        assert run.returncode == fresh.returncode
        if how == "end":  # the lines but the random number (the second of three)
            assert run.stdout.splitlines()[::2] == fresh.stdout.splitlines()[::2]
        else:
            assert run.stdout == fresh.stdout
        # A traceback shows the server's frames above the script's: its last line is the same.
        assert run.stderr.splitlines()[:1] + run.stderr.splitlines()[-1:] == (
            fresh.stderr.splitlines()[:1] + fresh.stderr.splitlines()[-1:]
        )
    assert fresh.stdout.startswith(f"__main__ ['{how}'] {cwd} é True 42\n")
    assert ("atexit ran" in fresh.stdout) == (how != "signal")
    if how == "end":
        assert runs[0].stdout != runs[1].stdout  # their own random seeds


def test_a_forked_process_that_runs_too_long_is_killed(tmp_path):
    (tmp_path / "sleep.py").write_text("import time\ntime.sleep(60)\n")
    forked(["-m", "platform"], tmp_path, dict(os.environ))
    first = forkserver.server()
    with pytest.raises(subprocess.TimeoutExpired):
        forked([str(tmp_path / "sleep.py")], tmp_path, dict(os.environ), timeout=1)
    assert forked(["-m", "platform"], tmp_path, dict(os.environ)).returncode == 0
    assert forkserver.server() is first and first.poll() is None  # the same server serves on


def test_what_only_a_new_interpreter_reads_gets_one(tmp_path):
    """PYTHONHASHSEED is read as the interpreter starts: a request that sets it runs in a new one."""
    (tmp_path / "hash.py").write_text("print(hash('template'))\n")
    env = {**os.environ, "PYTHONHASHSEED": "7"}
    fresh = subprocess.run([sys.executable, str(tmp_path / "hash.py")], env=env, capture_output=True, text=True)
    assert forked([str(tmp_path / "hash.py")], tmp_path, env).stdout == fresh.stdout


def test_a_preloaded_module_run_with_m_runs_as_main_only(tmp_path):
    """`-m project.extras.lr_find`: the server imported it already; the child runs it afresh as __main__, without
    runpy's warning about a module found in sys.modules, and prints what a new interpreter prints."""
    args = ["-m", "project.extras.lr_find", "--num_training", "3"]  # refused before any work: one line, exit 2
    fresh = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    run = forked(args, REPO, dict(os.environ))
    assert (run.returncode, run.stdout, run.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.returncode == 2 and fresh.stderr.startswith("error: --num_training takes a number of steps")


def test_a_forked_process_waits_for_its_threads_then_runs_atexit_and_keeps_unflushed_output(tmp_path):
    """The end of a child is the interpreter's, less the modules' teardown: a thread still running (not a daemon)
    is waited for, atexit's handlers run after it, and output still in the buffers is written."""
    (tmp_path / "threads.py").write_text(
        "import atexit, sys, threading, time\n"
        "atexit.register(lambda: print('atexit', flush=True))\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread'))).start()\n"
        "sys.stdout.write('unflushed ')\n"
        "sys.exit('a message')\n"
    )
    args = [str(tmp_path / "threads.py")]
    fresh = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    run = forked(args, tmp_path, dict(os.environ))
    assert (run.returncode, run.stdout, run.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert (fresh.returncode, fresh.stdout, fresh.stderr) == (1, "unflushed thread\natexit\n", "a message\n")


def test_code_run_with_c_runs_in_a_new_main_as_python_c_does(tmp_path):
    code = (
        "import sys, pickle\nclass Mark: pass\nprint(__name__, sys.argv, repr(sys.path[0]), bool(pickle.dumps(Mark())))"
    )
    args = ["-c", code, "one", "two"]
    fresh = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    run = forked(args, tmp_path, dict(os.environ))
    assert (run.returncode, run.stdout, run.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.stdout == "__main__ ['-c', 'one', 'two'] '' True\n"
