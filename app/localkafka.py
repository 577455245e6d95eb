"""Local single-node Apache Kafka (KRaft, combined mode) for development and tests.

Stdlib only. The Kafka jars are fetched once with Maven (``tools/kafka/pom.xml``)
into ``<cache>/kafka-<version>/libs`` and the broker runs as a detached ``java``
process whose config, pid file, log file and log dirs all live under one data
directory.

CLI::

    python -m app.localkafka start|stop|status|classpath
        [--data-dir DIR] [--port N] [--controller-port N]
        [--cache-dir DIR] [--timeout S]

Python (e.g. from a pytest fixture)::

    from app import localkafka
    port = localkafka.free_port()
    bootstrap = localkafka.start(tmp / "kafka", port, localkafka.free_port())
    ...
    localkafka.stop(tmp / "kafka")
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "HOST",
    "LocalKafkaError",
    "classpath",
    "ensure_jars",
    "free_port",
    "is_running",
    "kafka_version",
    "start",
    "status",
    "stop",
]

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
DEFAULT_DATA_DIR = Path(".data/kafka")
DEFAULT_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
MIN_JAVA = 17
NODE_ID = 1

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3

_POM_NS = "{http://maven.apache.org/POM/4.0.0}"
_MARKER = ".complete"
_PID_FILE = "broker.pid"
_LOG_FILE = "broker.log"
_CONFIG_FILE = "server.properties"
_LOG4J_FILE = "log4j2.properties"
_LOG_DIRS = "logs"
_DATADIR_PROP = "-Dpostroom.localkafka.datadir="

# Kafka wire protocol bits used by the readiness probe.
_API_METADATA = 3
_API_VERSIONS = 18
_ERR_UNSUPPORTED_VERSION = 35
_CLIENT_ID = b"postroom-localkafka"

# Tiny launcher run with the current interpreter: it spawns the broker in a new
# session and exits at once, so the broker is re-parented away from the caller
# (no zombie / ResourceWarning in long-lived callers such as pytest).
_LAUNCHER = """\
import subprocess, sys
log, cwd, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "ab") as out:
    p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True,
                         close_fds=True)
print(p.pid)
"""

_LOG4J2 = """\
# Written by app/localkafka.py. Everything goes to stdout (-> broker.log);
# WARN for most loggers so the file stays small.
status = warn
name = postroom-localkafka
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = INFO
"""


class LocalKafkaError(RuntimeError):
    """Raised when the local broker cannot be fetched, started or stopped."""


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(f"localkafka: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1 (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    # SO_REUSEADDR like the JVM does, so TIME_WAIT leftovers of a previous
    # broker do not count as "taken"; only a live listener does.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :]
    except OSError:
        return f"(no {path})"
    text = data.decode("utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(text) if text else f"({path} is empty)"


def _resolve(path: Path | str) -> Path:
    return Path(path).expanduser().resolve()


# --------------------------------------------------------------------------
# jars
# --------------------------------------------------------------------------


def _pom_path() -> Path:
    candidates = [
        Path(__file__).resolve().parent.parent / "tools" / "kafka" / "pom.xml",
        Path.cwd() / "tools" / "kafka" / "pom.xml",
    ]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise LocalKafkaError(f"cannot find tools/kafka/pom.xml (looked at {candidates[0]})")


def kafka_version() -> str:
    """The Kafka version pinned in tools/kafka/pom.xml (property kafka.version)."""
    pom = _pom_path()
    try:
        root = ET.parse(pom).getroot()
    except ET.ParseError as exc:
        raise LocalKafkaError(f"{pom}: {exc}") from exc
    node = root.find(f"{_POM_NS}properties/{_POM_NS}kafka.version")
    if node is None or not (node.text or "").strip():
        raise LocalKafkaError(f"{pom}: no <kafka.version> property")
    return (node.text or "").strip()


def _default_cache_dir() -> Path:
    env = os.environ.get("POSTROOM_CACHE_DIR")
    return _resolve(env) if env else _resolve(Path.home() / ".cache" / "postroom")


def _libs_dir(cache_dir: Path | None) -> Path:
    base = _resolve(cache_dir) if cache_dir is not None else _default_cache_dir()
    return base / f"kafka-{kafka_version()}" / "libs"


def _find_tool(name: str) -> str | None:
    if name == "java":
        java_home = os.environ.get("JAVA_HOME")
        if java_home:
            cand = Path(java_home) / "bin" / "java"
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    return shutil.which(name)


def _missing_tool(name: str) -> LocalKafkaError:
    return LocalKafkaError(
        f"'{name}' not found on PATH: the local Kafka broker needs "
        f"Java {MIN_JAVA}+ (java) and Maven 3 (mvn, to fetch the jars once)"
    )


def _require_java() -> str:
    java = _find_tool("java")
    if java is None:
        raise _missing_tool("java")
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"cannot run '{java} -version': {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):
            major = int(match.group(2))
        if major < MIN_JAVA:
            raise LocalKafkaError(
                f"{java} is Java {major}; the local Kafka broker needs Java {MIN_JAVA}+"
            )
    return java


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Fetch the Kafka jars once (Maven) and return the libs directory."""
    pom = _pom_path()
    pom_bytes = pom.read_bytes()
    stamp = hashlib.sha256(pom_bytes).hexdigest()
    libs = _libs_dir(cache_dir)
    root = libs.parent
    marker = root / _MARKER

    def complete() -> bool:
        try:
            return marker.read_text(encoding="utf-8").strip() == stamp and libs.is_dir()
        except OSError:
            return False

    if complete():
        return libs
    with _locked(root / ".fetch.lock"):
        if complete():  # another process finished the fetch meanwhile
            return libs
        mvn = _find_tool("mvn")
        if mvn is None:
            raise _missing_tool("mvn")
        version = kafka_version()
        _say(f"fetching Apache Kafka {version} jars with Maven into {libs} (once) ...")
        began = time.monotonic()
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        # Run Maven on a copy of the pom in the cache so nothing (target/) is
        # written into the source tree.
        (root / "pom.xml").write_bytes(pom_bytes)
        cmd = [
            mvn, "-q", "-B", "-f", str(root / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ]  # fmt: skip
        try:
            res = subprocess.run(
                cmd, cwd=root, stdin=subprocess.DEVNULL, capture_output=True,
                text=True, check=False,
            )  # fmt: skip
        except OSError as exc:
            raise LocalKafkaError(f"cannot run Maven: {exc}") from exc
        jars = list(libs.glob("*.jar")) if libs.is_dir() else []
        if res.returncode != 0 or not any(j.name.startswith("kafka_") for j in jars):
            out = "\n".join((res.stdout + res.stderr).strip().splitlines()[-30:])
            raise LocalKafkaError(
                f"Maven failed to fetch the Kafka jars (exit {res.returncode}):\n{out}"
            )
        _write_atomic(marker, stamp + "\n")
        _say(f"fetched {len(jars)} jars in {time.monotonic() - began:.1f}s")
    return libs


def classpath(cache_dir: Path | None = None) -> str:
    """Java classpath glob (``<libs>/*``) for the broker and the perf tools."""
    return f"{ensure_jars(cache_dir)}{os.sep}*"


# --------------------------------------------------------------------------
# process bookkeeping
# --------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return []
    except OSError:
        return []
    try:  # no procfs (macOS): ask ps
        res = subprocess.run(
            ["ps", "-ww", "-o", "command=", "-p", str(pid)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    except OSError:
        return []
    return res.stdout.split()


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap if it happens to be our child
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    if pid <= 0 or not _alive(pid):
        return False
    args = _cmdline(pid)
    if not args or Path(args[0]).name != "java":
        return False
    return f"{_DATADIR_PROP}{data_dir}" in args


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / _PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _scan_brokers(data_dir: Path) -> list[int]:
    """Pids of java processes started for this data dir (Linux /proc scan)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found: list[int] = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and _is_our_broker(int(entry.name), data_dir):
            found.append(int(entry.name))
    return found


def _running_pid(data_dir: Path) -> int | None:
    pid = _read_pid(data_dir)
    if pid is not None and _is_our_broker(pid, data_dir):
        return pid
    others = _scan_brokers(data_dir)
    return others[0] if others else None


def _configured_port(data_dir: Path) -> int | None:
    try:
        text = (data_dir / _CONFIG_FILE).read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^advertised\.listeners=PLAINTEXT://[^:]+:(\d+)\s*$", text, re.M)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------
# readiness probe (Kafka protocol, stdlib only)
# --------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _roundtrip(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    # Request header v1 (non-flexible): key, version, correlation id, client id.
    header = struct.pack(">hhih", api_key, version, corr, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if not 4 <= size <= 64 * 1024 * 1024:
        raise ConnectionError(f"bad response size {size}")
    resp = _recv_exact(sock, size)
    (got,) = struct.unpack(">i", resp[:4])
    if got != corr:
        raise ConnectionError(f"correlation id mismatch ({got} != {corr})")
    return resp[4:]  # response header v0 is just the correlation id


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ConnectionError("truncated response")
        vals = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return vals

    def string(self) -> str | None:
        (n,) = self.take(">h")
        if n < 0:
            return None
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")


def _probe(port: int, timeout: float = 2.0) -> bool:
    """True if a Kafka broker on 127.0.0.1:port answers ApiVersions and a
    Metadata request that lists itself at the advertised address."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            rd = _Reader(_roundtrip(sock, _API_VERSIONS, 0, 1, b""))
            (err,) = rd.take(">h")
            if err == _ERR_UNSUPPORTED_VERSION:
                return True  # a Kafka broker answered; it just dislikes v0
            if err != 0:
                return False
            (count,) = rd.take(">i")
            ranges = {}
            for _ in range(max(count, 0)):
                key, lo, hi = rd.take(">hhh")
                ranges[key] = (lo, hi)
            if _API_METADATA not in ranges:
                return False  # e.g. a controller-only listener
            lo, hi = ranges[_API_METADATA]
            version = max(lo, 4)
            if version > min(hi, 8):  # no non-flexible version we can speak
                return True
            body = struct.pack(">ib", -1, 0)  # all topics, no auto-creation
            if version >= 8:
                body += struct.pack(">bb", 0, 0)  # no authorized-operations
            rd = _Reader(_roundtrip(sock, _API_METADATA, version, 2, body))
            rd.take(">i")  # throttle_time_ms
            (nbrokers,) = rd.take(">i")
            for _ in range(max(nbrokers, 0)):
                (node_id,) = rd.take(">i")
                host = rd.string()
                (bport,) = rd.take(">i")
                rd.string()  # rack
                if node_id == NODE_ID and host == HOST and bport == port:
                    return True
            return False
    except (OSError, ConnectionError, struct.error):
        return False


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------


def _server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    return f"""\
# Written by app/localkafka.py on every start; edits are overwritten.
# Single-node KRaft broker+controller for local development and tests.
process.roles=broker,controller
node.id={NODE_ID}
controller.quorum.voters={NODE_ID}@{HOST}:{controller_port}
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs={data_dir / _LOG_DIRS}
auto.create.topics.enable=false
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
# 4 instead of 50 partitions: the first consumer group / producer id on a
# fresh broker is ready ~2 s sooner.
offsets.topic.num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A restarted broker+controller rejects its own new incarnation
# (DUPLICATE_BROKER_REGISTRATION) until the previous session expires:
# the 9 s default session would add ~10 s to every restart.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
log.segment.bytes=67108864
# The log cleaner compacts the tables' changelogs. Unthrottled, its first pass over
# a busy changelog's rolled segments (about a minute into a steady 750 orders/s) made
# the broker answer the worker's produce requests 100-140 ms late, on a machine whose
# cores it shares with the worker. Throttled, the pass is spread over several seconds.
log.cleaner.io.max.bytes.per.second=8388608
log.retention.hours=168
num.recovery.threads.per.data.dir=2
"""


def _new_cluster_id() -> str:
    while True:  # like org.apache.kafka.common.Uuid.randomUuid(): no leading '-'
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _jvm_base(java: str, libs: Path, data_dir: Path, heap: Sequence[str]) -> list[str]:
    return [
        java,
        *heap,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={data_dir / _LOG4J_FILE}",
        f"{_DATADIR_PROP}{data_dir}",
        "-cp",
        f"{libs}{os.sep}*",
    ]


def _format_storage(java: str, libs: Path, data_dir: Path) -> None:
    if (data_dir / _LOG_DIRS / "meta.properties").is_file():
        return
    cmd = _jvm_base(java, libs, data_dir, ["-Xmx256m"])
    # The marker property would make the storage tool look like "our broker";
    # drop it for this short-lived process.
    cmd = [a for a in cmd if not a.startswith(_DATADIR_PROP)]
    cmd += [
        "kafka.tools.StorageTool", "format",
        "--cluster-id", _new_cluster_id(),
        "--config", str(data_dir / _CONFIG_FILE),
        "--ignore-formatted",
    ]  # fmt: skip
    res = subprocess.run(
        cmd, cwd=data_dir, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        out = "\n".join((res.stdout + res.stderr).strip().splitlines()[-30:])
        raise LocalKafkaError(f"kafka StorageTool format failed (exit {res.returncode}):\n{out}")


# --------------------------------------------------------------------------
# start / stop / status
# --------------------------------------------------------------------------


def _wait_ready(pid: int, port: int, data_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not _alive(pid):
            raise LocalKafkaError(
                f"the broker (pid {pid}) exited during startup; "
                f"tail of {data_dir / _LOG_FILE}:\n{_tail(data_dir / _LOG_FILE)}"
            )
        if _probe(port):
            return
        if time.monotonic() >= deadline:
            raise LocalKafkaError(
                f"the broker did not answer on {HOST}:{port} within {timeout:g}s; "
                f"tail of {data_dir / _LOG_FILE}:\n{_tail(data_dir / _LOG_FILE)}"
            )
        time.sleep(0.2)


def start(
    data_dir: Path,
    port: int,
    controller_port: int,
    cache_dir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Start (or reuse) the broker for ``data_dir``; return ``"127.0.0.1:port"``.

    Blocks until the broker answers Kafka requests. Raises LocalKafkaError.
    """
    data_dir = _resolve(data_dir)
    java = _find_tool("java")
    if java is None:
        raise _missing_tool("java")
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir / ".lock"):
        pid = _running_pid(data_dir)
        if pid is not None:
            running_port = _configured_port(data_dir) or port
            if running_port != port:
                raise LocalKafkaError(
                    f"a broker for {data_dir} is already running on port {running_port} "
                    f"(pid {pid}), not {port}; stop it first"
                )
            _say(f"already running (pid {pid}) on {HOST}:{port}")
            _wait_ready(pid, port, data_dir, timeout)
            _write_atomic(data_dir / _PID_FILE, f"{pid}\n")
            return f"{HOST}:{port}"
        (data_dir / _PID_FILE).unlink(missing_ok=True)  # stale

        if port == controller_port:
            raise LocalKafkaError("--port and --controller-port must differ")
        for what, p in (("client", port), ("controller", controller_port)):
            if not _port_free(p):
                raise LocalKafkaError(
                    f"{what} port {HOST}:{p} is already in use by another process "
                    f"(not a broker for {data_dir}); pick another port"
                )

        java = _require_java()
        libs = ensure_jars(cache_dir)
        began = time.monotonic()
        _write_atomic(data_dir / _CONFIG_FILE, _server_properties(data_dir, port, controller_port))
        _write_atomic(data_dir / _LOG4J_FILE, _LOG4J2)
        (data_dir / _LOG_DIRS).mkdir(exist_ok=True)
        _format_storage(java, libs, data_dir)

        log = data_dir / _LOG_FILE
        if log.exists():
            os.replace(log, log.with_name(_LOG_FILE + ".1"))  # keep one previous log
        cmd = _jvm_base(java, libs, data_dir, ["-Xmx1g", "-Xms512m"])
        cmd += ["kafka.Kafka", str(data_dir / _CONFIG_FILE)]
        res = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(log), str(data_dir), *cmd],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        try:
            pid = int(res.stdout.strip())
        except ValueError:
            raise LocalKafkaError(f"could not launch java: {res.stderr.strip()}") from None
        _write_atomic(data_dir / _PID_FILE, f"{pid}\n")
        _say(f"started broker pid {pid}, waiting for {HOST}:{port} ...")
        try:
            _wait_ready(pid, port, data_dir, timeout)
        except LocalKafkaError:
            _terminate(pid, data_dir)
            (data_dir / _PID_FILE).unlink(missing_ok=True)
            raise
        _say(f"broker ready on {HOST}:{port} after {time.monotonic() - began:.1f}s")
        return f"{HOST}:{port}"


def _terminate(pid: int, data_dir: Path) -> None:
    if not _is_our_broker(pid, data_dir):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    _say(f"broker pid {pid} ignored SIGTERM for {STOP_TIMEOUT:g}s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not _alive(pid):
            return
        time.sleep(0.05)


def stop(data_dir: Path) -> None:
    """Stop the broker for ``data_dir`` (SIGTERM, SIGKILL after 30 s). Idempotent."""
    data_dir = _resolve(data_dir)
    if not data_dir.is_dir():  # deleted under a running broker? still stop it
        for p in _scan_brokers(data_dir):
            _terminate(p, data_dir)
        return
    with _locked(data_dir / ".lock"):
        pids: list[int] = []
        pid = _read_pid(data_dir)
        if pid is not None and _is_our_broker(pid, data_dir):
            pids.append(pid)
        pids += [p for p in _scan_brokers(data_dir) if p not in pids]
        for p in pids:
            _terminate(p, data_dir)
        (data_dir / _PID_FILE).unlink(missing_ok=True)


def is_running(data_dir: Path) -> bool:
    """True if a broker process for ``data_dir`` is alive (not necessarily ready)."""
    return _running_pid(_resolve(data_dir)) is not None


def status(data_dir: Path, port: int = DEFAULT_PORT) -> tuple[bool, str]:
    """Return (running_and_answering, one-line description)."""
    data_dir = _resolve(data_dir)
    port = _configured_port(data_dir) or port
    pid = _running_pid(data_dir)
    if pid is None:
        return False, f"stopped (bootstrap {HOST}:{port}, data dir {data_dir})"
    if _probe(port):
        return True, f"running (pid {pid}), bootstrap {HOST}:{port}"
    return False, f"starting or unresponsive (pid {pid}), bootstrap {HOST}:{port}"


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app.localkafka",
        description="Local single-node Apache Kafka (KRaft) for development and tests.",
    )
    p.add_argument("command", choices=["start", "stop", "status", "classpath"])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="config, pid, log and log dirs (default: %(default)s)")  # fmt: skip
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="client (PLAINTEXT) port (default: %(default)s)")  # fmt: skip
    p.add_argument("--controller-port", type=int, default=DEFAULT_CONTROLLER_PORT,
                   help="KRaft controller port (default: %(default)s)")  # fmt: skip
    p.add_argument("--host", choices=[HOST], default=HOST,
                   help="listen address (fixed: %(default)s)")  # fmt: skip
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="jar cache (default: $POSTROOM_CACHE_DIR, ~/.cache/postroom)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds start waits for the broker (default: %(default)s)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    try:
        if args.command == "start":
            bootstrap = start(
                args.data_dir, args.port, args.controller_port, args.cache_dir, args.timeout
            )
            print(bootstrap, file=out)
            return 0
        if args.command == "stop":
            was = is_running(args.data_dir)
            stop(args.data_dir)
            print("stopped" if was else "not running", file=out)
            return 0
        if args.command == "status":
            ok, line = status(args.data_dir, args.port)
            print(line, file=out)
            return 0 if ok else EXIT_NOT_RUNNING
        print(classpath(args.cache_dir), file=out)
        return 0
    except LocalKafkaError as exc:
        print(f"localkafka: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
