"""Reach a real device over SSH with the system ``ssh``/``scp``, so the user's ~/.ssh/config (aliases, keys,
jump hosts) just works.

One multiplexed connection (ControlMaster in a private temp folder) carries every step; ``BatchMode`` means a
password prompt fails at once instead of hanging a run. Every failure ssh reports (refused, unreachable, host
key unknown or changed, login refused) becomes a one-line :class:`DeviceError` naming the fix.
``$EDGEPIPE_SSH_CONFIG`` names an ssh config file to use instead of ~/.ssh/config (the tests' local sshd).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from edgepipe.errors import DeviceError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
SSH_CONFIG_ENV = "EDGEPIPE_SSH_CONFIG"
PIP_FIX = "python3 -m pip install numpy onnxruntime"


@dataclass(frozen=True)
class Device:
    """``ssh://[USER@]HOST[:PORT][?python=PATH]`` as given (``spec``) and its parts; HOST may be an ssh-config
    alias. ``python``: the device's interpreter (a venv's, where the system python is externally managed)."""

    spec: str
    host: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"

    @property
    def name(self) -> str:
        """How rows name the device: the spec without its ?python= (that goes in the fingerprint)."""
        return self.spec.split("?", 1)[0]

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def pip_fix(self) -> str:
        if self.python == "python3":
            return f"on the device run: {PIP_FIX}"
        return f"on the device run: {self.python} -m pip install numpy onnxruntime"


def parse_device(spec: str) -> Device:
    """The device named by ``spec``; a one-line DeviceError for anything that is not ``ssh://...``."""
    fix = "fix: name it as ssh://USER@HOST[:PORT] or ssh://ALIAS (a Host in ~/.ssh/config)"
    if not spec.startswith("ssh://"):
        raise DeviceError(f"device {spec!r}: only ssh:// devices are supported; {fix}")
    parts = urlsplit(spec)
    try:
        port = parts.port
    except ValueError:
        raise DeviceError(f"device {spec!r}: the port is not a number in 1..65535; {fix}") from None
    host = parts.hostname
    if not host or parts.path not in ("", "/") or parts.fragment:
        raise DeviceError(f"device {spec!r}: no host, or something after it; {fix}")
    query = parse_qs(parts.query)
    unknown = set(query) - {"python"}
    if unknown:
        raise DeviceError(f"device {spec!r}: unknown option {sorted(unknown)[0]!r}; fix: only ?python=PATH")
    python = query.get("python", ["python3"])[-1]
    return Device(spec=spec, host=host, user=parts.username, port=port, python=python)


def quote_path(path: str) -> str:
    """A remote path for the remote shell: ``~/x`` still means the login's home, everything else is quoted."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def ssh_error(device: Device, stderr: str) -> DeviceError:
    """What ssh's exit 255 means, in one line with the fix (ssh prints the reason on stderr)."""
    text = " ".join(stderr.split())
    host = device.host if device.port is None else f"{device.host} port {device.port}"
    who = f" for {device.user}" if device.user else ""
    keyscan = f"ssh-keyscan{f' -p {device.port}' if device.port else ''} {device.host} >> ~/.ssh/known_hosts"
    cases = (
        ("REMOTE HOST IDENTIFICATION HAS CHANGED", f"the host key of {device.host} has changed; fix: if the "
         f"device was reinstalled, run ssh-keygen -R {device.host} and ssh {device.destination} once"),
        ("Host key verification failed", f"host key for {device.host} unknown; fix: ssh {device.destination} "
         f"once to accept it, or add it to known_hosts ({keyscan})"),
        ("No ED25519 host key is known", f"host key for {device.host} unknown; fix: ssh {device.destination} "
         "once to accept it"),
        ("Connection refused", f"connection refused by {host}; fix: start sshd on the device "
         "(sudo systemctl enable --now ssh) or give the right port (ssh://USER@HOST:PORT)"),
        ("Could not resolve hostname", f"cannot resolve {device.host}; fix: check the name, or add a Host "
         "entry for it to ~/.ssh/config"),
        ("Permission denied", f"{device.host} refused the login{who} (no password prompts in a run); fix: "
         f"ssh-copy-id {device.destination}, or name the key in "
         "~/.ssh/config"),
        ("timed out", f"{host} did not answer within {CONNECT_TIMEOUT_S} s; fix: check the device is on and "
         "reachable from here"),
        ("No route to host", f"no route to {device.host}; fix: check the device is on and on this "
         "network"),
        ("Network is unreachable", f"network unreachable for {device.host}; fix: check this machine's "
         "network"),
    )  # fmt: skip
    for needle, message in cases:
        if needle in text:
            return DeviceError(f"{device.spec}: {message}")
    last = stderr.strip().splitlines()[-1][:300] if stderr.strip() else "no message"
    return DeviceError(f"{device.spec}: ssh failed ({last}); fix: check that ssh {device.destination} works")


class SshSession:
    """``with SshSession(device) as s:`` one multiplexed ssh connection; :meth:`run`, :meth:`put`,
    :meth:`get`. Closing it ends the master connection and removes its private socket folder."""

    def __init__(self, device: Device, connect_timeout: int = CONNECT_TIMEOUT_S):
        self.device = device
        self.connect_timeout = connect_timeout
        self._dir: str | None = None

    def __enter__(self) -> SshSession:
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise DeviceError(f"no {tool} on this machine; fix: install the OpenSSH client "
                                  "(apt-get install openssh-client)")  # fmt: skip
        self._dir = tempfile.mkdtemp(prefix="edgepipe-ssh-")  # 0700: nobody else can use the socket
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is None:
            return
        try:
            subprocess.run(["ssh", *self._options(), "-O", "exit", self.device.destination],
                           capture_output=True, timeout=10, stdin=subprocess.DEVNULL)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def _options(self) -> list[str]:
        assert self._dir is not None, "use SshSession as a context manager"
        opts = []
        config = os.environ.get(SSH_CONFIG_ENV)
        if config:
            opts += ["-F", config]
        for option in (
            "BatchMode=yes",
            f"ConnectTimeout={self.connect_timeout}",
            "ControlMaster=auto",
            f"ControlPath={self._dir}/cm",
            "ControlPersist=120",
            "ServerAliveInterval=15",
            "ServerAliveCountMax=4",
        ):
            opts += ["-o", option]
        return opts

    def run(self, command: str, timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """``command`` in the device's login shell; ssh's own failures (exit 255) raise DeviceError."""
        port = ["-p", str(self.device.port)] if self.device.port else []
        argv = ["ssh", *self._options(), *port, self.device.destination, command]
        log.debug("device %s: %s", self.device.spec, command)
        try:
            done = subprocess.run(argv, input=stdin if stdin is not None else b"", capture_output=True,
                                  timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.device.spec}: no answer within {timeout:.0f} s; fix: check the device, "
                              "or give the run more time (--device-timeout)") from None  # fmt: skip
        if done.returncode == 255:
            raise ssh_error(self.device, done.stderr.decode(errors="replace"))
        return done

    def _scp(self, sources: list[str], target: str, timeout: float) -> None:
        port = ["-P", str(self.device.port)] if self.device.port else []
        argv = ["scp", "-q", "-r", *self._options(), *port, *sources, target]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.device.spec}: copying files took over {timeout:.0f} s; fix: fewer "
                              "--device-images, or a faster link") from None  # fmt: skip
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace")
            if done.returncode == 255 and "lost connection" not in err:
                raise ssh_error(self.device, err)
            last = err.strip().splitlines()[-1][:300] if err.strip() else f"exit status {done.returncode}"
            raise DeviceError(f"{self.device.spec}: scp failed ({last}); fix: check free space in the "
                              "device's temp folder and that its sshd allows scp/sftp")  # fmt: skip

    def put(self, files: list[Path], remote_dir: str, timeout: float = 600) -> None:
        self._scp([str(f) for f in files], f"{self.device.destination}:{remote_dir}/", timeout)

    def get(self, remote_path: str, local_dir: Path, timeout: float = 600) -> None:
        self._scp([f"{self.device.destination}:{remote_path}"], str(local_dir), timeout)


# What `python3 -` runs on the device: its fingerprint as one JSON line. Python 3.6-safe (it must get as far
# as saying the device's python is too old); imports numpy and onnxruntime, so a broken install shows here.
PROBE = r"""
import json, os, platform, socket, subprocess, sys
out = {"python": platform.python_version(), "machine": platform.machine(), "hostname": socket.gethostname(),
       "cores": os.cpu_count(), "os": platform.platform()}
try:
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                out["os"] = line.split("=", 1)[1].strip().strip('"') + " (" + platform.release() + ")"
except OSError:
    pass
for name in ("numpy", "onnxruntime"):
    try:
        out[name] = __import__(name).__version__
    except Exception as exc:
        out[name] = None
        out[name + "_error"] = (type(exc).__name__ + ": " + str(exc))[:200]
try:
    from importlib.metadata import version
    out["openvino"] = version("openvino")
except Exception:
    out["openvino"] = None
try:
    with open("/proc/cpuinfo", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("model name", "Model", "Hardware", "CPU part", "CPU implementer") and key not in out:
                out[key] = value
            elif key in ("flags", "Features") and "features" not in out:
                out["features"] = value.split()
except OSError:
    pass
try:
    text = subprocess.run(["lscpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10).stdout
    for line in text.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            out["lscpu_model"] = value.strip()
            break
except Exception:
    pass
print(json.dumps(out))
"""


def probe(session: SshSession, timeout: float = 120) -> dict:
    """The device's fingerprint (hostname, CPU model and features, cores, OS, python, numpy and runtime
    versions); a one-line DeviceError naming the fix when its python, numpy or ONNX Runtime is missing."""
    dev = session.device
    done = session.run(f"{quote_path(dev.python)} -", timeout, stdin=PROBE.encode())
    err = done.stderr.decode(errors="replace").strip()
    if done.returncode == 127 or (done.returncode != 0 and "not found" in err):
        raise DeviceError(
            f"{dev.spec}: no {dev.python} on the device; fix: on the device run: sudo "
            "apt-get install python3 python3-pip (or name its python: ssh://HOST?python=PATH)"
        )
    try:
        facts = json.loads(done.stdout.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = err.splitlines()[-1][:300] if err else f"exit status {done.returncode}"
        raise DeviceError(f"{dev.spec}: the device's {dev.python} failed to describe the device ({last}); "
                          f"fix: check that {dev.python} -c 'import json' runs there") from None  # fmt: skip
    major, minor = (int(p) for p in facts["python"].split(".")[:2])
    if (major, minor) < (3, 9):
        raise DeviceError(
            f"{dev.spec}: the device's python is {facts['python']}, the runner needs 3.9 "
            "or newer; fix: install a newer python3 there and name it: ssh://HOST?python=PATH"
        )
    for name in ("numpy", "onnxruntime"):
        if facts.get(name) is None:
            why = facts.get(f"{name}_error", "")
            what = "not installed" if "No module named" in why or not why else f"broken ({why})"
            raise DeviceError(f"{dev.spec}: {name} is {what} in the device's {dev.python}; fix: "
                              f"{dev.pip_fix()}")  # fmt: skip
    return facts


def title(facts: dict) -> str:
    """What users call the device's CPU: the board and core where the device says them, else the model."""
    core = facts.get("lscpu_model") or facts.get("model name")
    board = facts.get("Model") or facts.get("Hardware")
    if board and core and core not in board:
        return f"{board} ({core})"
    return board or core or facts.get("machine") or "unknown CPU"


def fingerprint(facts: dict) -> dict:
    """The facts every device row carries (its ``cpu``), in one stable shape."""
    keep = ("hostname", "machine", "cores", "os", "python", "python_path", "numpy", "onnxruntime",
            "openvino", "model name", "lscpu_model", "Model", "Hardware", "CPU implementer", "CPU part",
            "features")  # fmt: skip
    return {k: facts[k] for k in keep if facts.get(k) is not None}


# ONNX Runtime release -> the newest ONNX opset it implements (onnxruntime.ai/docs/reference/compatibility);
# a release newer than the table is assumed to run what this edgepipe exports.
ORT_MAX_OPSET = {
    (1, 5): 12, (1, 6): 13, (1, 7): 13, (1, 8): 14, (1, 9): 15, (1, 10): 15, (1, 11): 16, (1, 12): 17,
    (1, 13): 17, (1, 14): 18, (1, 15): 19, (1, 16): 19, (1, 17): 20, (1, 18): 21, (1, 19): 21, (1, 20): 21,
}  # fmt: skip


def runtime_too_old(ort_version: str, opset: int) -> int | None:
    """The newest opset ``ort_version`` runs when ``opset`` is beyond it, else None."""
    try:
        key = tuple(int(p) for p in ort_version.split(".")[:2])
    except ValueError:
        return None
    if key > max(ORT_MAX_OPSET):
        return None
    newest = max((v for k, v in ORT_MAX_OPSET.items() if k <= key), default=11)
    return newest if opset > newest else None


def model_opset(path: Path) -> int | None:
    """The default-domain opset a model is stamped with (None: not an ONNX file onnx can read)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any unreadable file: the runner reports it
        return None
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
