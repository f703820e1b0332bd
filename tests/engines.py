"""Real engines on this machine for the scale-out tests: a one-node SLURM cluster and a throw-away PostgreSQL.

Each is started from Debian's packages (slurm-wlm + munge, postgresql) in a temporary folder and stopped after
the tests; where a package is missing, or the process is not root (slurmd and munged run as root here), the
tests that need it are skipped with the reason.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


class Slurm:
    """slurmctld and slurmd for one node (this machine), configured in `folder`; commands get SLURM_CONF."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        host = socket.gethostname().split(".")[0]
        for sub in ("spool/ctld", "spool/d", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
        # The settings of ../shared/LIGHTNING-NOTES.md: no cgroups, processes tracked through /proc.
        self.conf.write_text(
            f"""ClusterName=test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={self.folder}/spool/ctld
SlurmdSpoolDir={self.folder}/spool/d
SlurmctldPidFile={self.folder}/slurmctld.pid
SlurmdPidFile={self.folder}/slurmd.pid
SlurmctldLogFile={self.folder}/log/slurmctld.log
SlurmdLogFile={self.folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.folder}/log/jobcomp.txt
MpiDefault=none
KillWait=30
MinJobAge=600
NodeName={host} CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
        )
        # One munged serves every cluster on the machine; two test processes may try to start it at once.
        if not munged_running():
            subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "/run/munge"], check=True)
            started = subprocess.run(["runuser", "-u", "munge", "--", "munged"], capture_output=True, text=True)
            if started.returncode != 0 and not munged_running():
                raise RuntimeError(f"munged did not start: {started.stderr}")
        for daemon in ("slurmctld", "slurmd"):
            self.processes.append(
                subprocess.Popen([daemon, "-D"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        wait_until(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T").stdout, 60, "the SLURM node to be idle")

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        words = self.run("scontrol", "show", "job", job_id).stdout.split()
        return dict(word.split("=", 1) for word in words if "=" in word)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def munged_running() -> bool:
    return subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0


def slurm_missing() -> str | None:
    if os.geteuid() != 0:
        return "the SLURM test runs slurmd and munged, which need root"
    missing = [name for name in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not found: apt-get install slurm-wlm munge"
    if not Path("/etc/munge/munge.key").exists():
        return "/etc/munge/munge.key not found: apt-get install munge"
    return None


class Postgres:
    """A PostgreSQL cluster in `folder`, listening on 127.0.0.1 only, trusting local connections."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.bin = POSTGRES_BIN[-1]
        self.user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root

    def command(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    def start(self) -> None:
        data = self.folder / "data"
        if self.user:
            shutil.chown(self.folder, self.user)
        subprocess.run(
            self.command(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"),
            check=True,
            capture_output=True,
        )
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        subprocess.run(
            self.command(str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w")
            + ["start"],
            check=True,
            capture_output=True,
        )

    def create_database(self, name: str) -> str:
        """A new database; its SQLAlchemy URL."""
        subprocess.run(
            self.command(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name),
            check=True,
            capture_output=True,
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            self.command(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"),
            capture_output=True,
        )


def postgres_missing() -> str | None:
    if not POSTGRES_BIN:
        return "PostgreSQL not found under /usr/lib/postgresql: apt-get install postgresql"
    return None
