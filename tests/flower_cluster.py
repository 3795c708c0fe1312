"""A real Flower deployment on loopback for tests: SuperLink and SuperNodes as separate processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# No test's verdict may depend on the machine's speed (a shared 2-core host runs 2-3x slower in a busy hour,
# and a phase of a tiny client has been seen to take over 12 s there). Timeouts are upper bounds on waits
# for events, so a generous one costs a passing test nothing: a client is dropped because its node is gone
# (the SuperLink answers for a node whose heartbeats stopped) or because it answered with an error, never
# because a healthy client was slow. Only a test that checks the timeout itself sets a short one, with a
# client that never answers.
PHASE_TIMEOUT_S = 900.0
JOIN_TIMEOUT_S = 300.0
CLI_TIMEOUT_S = 300.0  # a Flower CLI or server process starting on a loaded machine
ROUND_WAIT_S = 1200.0  # the longest a test waits for a run to reach a round


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlowerCluster:
    def __init__(self, tmp: Path, tls: dict | None = None, superlink_args: tuple = (), supernode_args: dict | None = None,
                 resident: bool = True):
        """resident: each SuperNode's messages served by one `fedmkt flower-clientapp` process (its model loaded
        once); otherwise Flower's default, a `flwr-clientapp` process per message."""
        self.tmp = tmp
        self.resident = resident
        self.port = free_port()
        self.home = tmp / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.superlink_args = superlink_args
        self.supernode_args = supernode_args or {}
        self.env = dict(os.environ, FLWR_HOME=str(self.home), PATH=f"{BIN}:{os.environ.get('PATH', '')}",
                        PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        connection = {"address": f"127.0.0.1:{self.port}"}
        connection.update({"root-certificates": str(tls["ca"])} if tls else {"insecure": True})
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in connection.items()))
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {"superlink": self.port}

    def _start(self, key: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{key}.log", "ab")
        # A session of its own: killing the group takes the apps it spawned too.
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs[key] = proc
        return proc

    def start_superlink(self, simulation: bool = False) -> None:
        """simulation: Flower's Simulation Engine runs the clients (no SuperNodes; `run(..., supernodes=N)`)."""
        # A database file keeps node registrations across a SuperLink restart, as a deployment would.
        args = [str(BIN / "flower-superlink"), "--port", str(self.port), "--disable-runtime-dependency-installation",
                "--database", str(self.tmp / "superlink.db"), *self.superlink_args]
        args += ["--simulation"] if simulation else []
        if self.tls:
            args += ["--ssl-certfile", str(self.tls["cert"]), "--ssl-keyfile", str(self.tls["key"]),
                     "--ssl-ca-certfile", str(self.tls["ca"])]
        else:
            args += ["--insecure"]
        self._start("superlink", args)
        self.wait(lambda: self._listening(self.port), CLI_TIMEOUT_S, "SuperLink to listen")

    def start_supernode(self, name: str, claim: str | None = None, node_config: str = "") -> None:
        """A SuperNode known here as `name`, telling the server it is client `claim` (default: name)."""
        port = free_port()
        self.ports[f"supernode-{name}"] = port
        config = f'name="{claim or name}" state-dir="{self.tmp / "nodes" / name}" {node_config}'.strip()
        # Flower's SuperNode with its 3 s idle poll shortened (tests/fast_supernode.py says why).
        args = [sys.executable, str(ROOT / "tests" / "fast_supernode.py"), "--superlink", f"127.0.0.1:{self.port}",
                "--port", str(port),
                "--node-config", config, *self.supernode_args.get(name, ())]
        args += ["--root-certificates", str(self.tls["ca"])] if self.tls else ["--insecure"]
        if self.resident:
            args += ["--isolation", "process"]
        self._start(f"supernode-{name}", args)
        if self.resident:
            self.start_resident(name)

    def start_resident(self, name: str) -> None:
        """The process that serves every message of SuperNode `name` (`fedmkt flower-clientapp`)."""
        self._start(f"resident-{name}", [str(BIN / "fedmkt"), "flower-clientapp", "--runtime-api-address",
                                         f"127.0.0.1:{self.ports[f'supernode-{name}']}", "--insecure"])

    def run(self, config: dict, resume: bool = False, phase_timeout: float = PHASE_TIMEOUT_S,
            join_timeout: float = JOIN_TIMEOUT_S, supernodes: int | None = None) -> str:
        """Submit a run; `supernodes`: how many clients the Simulation Engine simulates (simulation SuperLink)."""
        path = self.tmp / f"{config['run_name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        overrides = f'config="{path}" resume={str(resume).lower()} phase-timeout={float(phase_timeout)} join-timeout={float(join_timeout)}'
        args = [str(BIN / "flwr"), "run", str(ROOT / "flower_app"), "local", "--run-config", overrides]
        args += ["--federation-config", f"num-supernodes={supernodes}"] if supernodes else []
        out = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        assert "Successfully started run" in out.stdout, out.stdout + out.stderr
        return out.stdout

    def kill(self, key: str) -> None:
        """Kill a component with the apps it runs (Flower starts those in sessions of their own)."""
        import psutil

        if key.startswith("supernode-") and f"resident-{key[len('supernode-'):]}" in self.procs:
            self.kill(f"resident-{key[len('supernode-'):]}")  # a node's executor goes down with it
        proc = self.procs.pop(key)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        if key not in self.ports:
            return
        address = f"127.0.0.1:{self.ports[key]}"
        app = "flwr-serverapp" if key == "superlink" else "flwr-clientapp"
        for other in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(other.info["cmdline"] or ())
            if app in cmdline and address in cmdline:
                other.kill()

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.tmp.glob("*.log"))

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout:.0f}s for {what}\n{self.logs()}")

    def stop(self) -> None:
        for key in list(self.procs):
            if key in self.procs:  # a node's executor went with its node
                self.kill(key)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def finished(run_dir: Path, rounds: int):
    def check() -> bool:
        try:
            return (run_dir / "summary.md").is_file() and len(metrics(run_dir)["rounds"]) == rounds
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return False
    return check


def self_signed_tls(directory: Path) -> dict:
    """A throwaway CA and a SuperLink certificate for 127.0.0.1/localhost, signed by it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmkt test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


def supernode_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC key pair in OpenSSH form, as SuperNode authentication expects."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return private, public
