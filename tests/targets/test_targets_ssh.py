"""`edgepipe bench --on ssh://...` against a real sshd on 127.0.0.1: device rows, every bad case in one line.

The "device" is this machine reached through OpenSSH's own server (started here, on a free loopback port, with
a generated host key and user key) and a python venv that has numpy and onnxruntime but no torch, so the
runner proves it needs nothing else. Devices are named through an ssh config file (``$EDGEPIPE_SSH_CONFIG``,
as a user's ~/.ssh/config): an alias, keys and known_hosts as a user has them. Without sshd the tests skip
here, but fail in CI (make targets installs openssh-server: a CI run that skipped would prove nothing).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgepipe.cli import app
from edgepipe.errors import DeviceError
from edgepipe.targets.ssh import SSH_CONFIG_ENV, parse_device, runtime_too_old
from tests.bench.test_bench_cli import FAST, zoo  # noqa: F401  (zoo: module fixture)

SSHD = "/usr/sbin/sshd"
ALIAS = "edgepipe-test-device"
runner = CliRunner()


def _unavailable(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"the local sshd for the device tests is unavailable in CI: {why}")
    pytest.skip(f"local sshd unavailable: {why}; fix: make targets (installs openssh-server)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _device_venv(root: Path, packages: tuple[str, ...]) -> Path:
    """A venv of the host's base python (so the wheels' ABI matches) holding only ``packages`` of this
    venv, linked: no torch, no edgepipe, no network."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([base, "-m", "venv", "--without-pip", root], check=True)
    site = next(root.glob("lib/python3*/site-packages"))
    here = Path(np.__file__).parents[1]
    for name in packages:
        for src in (here / name, here / f"{name}.libs"):
            if src.exists():
                (site / src.name).symlink_to(src)
    return root / "bin" / "python3"


class Sshd:
    """sshd -D on 127.0.0.1:port (a child of this test session), its keys and the client's config files."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.user = getpass.getuser()
        self.tmp = root / "device-tmp"  # the device's TMPDIR: what the bench leaves there is checked
        self.tmp.mkdir()
        for name in ("host_key", "id"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", root / name], check=True)
        shutil.copy(root / "id.pub", root / "authorized_keys")
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile none\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nAllowUsers {self.user}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
            f"SetEnv TMPDIR={self.tmp}\n"
        )
        host_key = " ".join((root / "host_key.pub").read_text().split()[:2])
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_key}\n")
        (root / "empty_known_hosts").write_text("")
        self.config = self._client_config("known_hosts")
        self.stranger_config = self._client_config("empty_known_hosts", name="stranger_config")
        self.proc: subprocess.Popen | None = None

    def _client_config(self, known: str, name: str = "config") -> Path:
        path = self.root / name
        path.write_text(
            f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
            f"Host *\n  IdentityFile {self.root / 'id'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.root / known}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  LogLevel ERROR\n"
        )
        return path

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        log = open(self.root / "sshd.log", "w")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", self.root / "sshd_config"], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        _unavailable("sshd did not start: " + (self.root / "sshd.log").read_text()[-300:].strip())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    if not Path(SSHD).is_file():
        _unavailable(f"no {SSHD}")
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        _unavailable("no ssh/ssh-keygen client")
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    server.python = _device_venv(server.root / "device", ("numpy", "onnxruntime"))
    server.python_no_ort = _device_venv(server.root / "device-no-ort", ("numpy",))
    yield server
    server.stop()


@pytest.fixture
def ssh_config(sshd, monkeypatch):
    monkeypatch.setenv(SSH_CONFIG_ENV, str(sshd.config))
    return sshd


def _left_on_device(sshd) -> list[Path]:
    return list(sshd.tmp.glob("edgepipe-bench.*"))


def _bench(*args):
    return runner.invoke(app, ["bench", *map(str, args)])


def _one_line_error(res, code: int, *needles: str) -> str:
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == code, res.output
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_device_names_parse_and_bad_ones_are_one_line():
    d = parse_device("ssh://pi@192.168.1.5:2222?python=~/ort/bin/python3")
    assert (d.user, d.host, d.port, d.python, d.name) == ("pi", "192.168.1.5", 2222, "~/ort/bin/python3",
                                                        "ssh://pi@192.168.1.5:2222")  # fmt: skip
    assert parse_device("ssh://pi5").destination == "pi5" and parse_device("ssh://pi5").port is None
    for bad in ("pi@host", "ssh://", "ssh://host:99999", "ssh://host/path", "ssh://host?user=x"):
        with pytest.raises(DeviceError):
            parse_device(bad)


def test_runtime_too_old_for_the_model_opset():
    assert runtime_too_old("1.14.1", 17) is None
    assert runtime_too_old("1.13.1", 18) == 17
    assert runtime_too_old("1.32.0", 21) is None  # newer than the table: assumed fine


def test_device_rows_on_a_real_sshd(zoo, ssh_config, tmp_path):  # noqa: F811
    """int8 and fp32 on the device (an ssh-config alias): p50 > 0, the same top-1 as here and 100% agreement
    with the host's logits, the fingerprint, paired rounds; nothing left in the device's temp folder."""
    out = tmp_path / "r.json"
    spec = f"ssh://{ALIAS}?python={ssh_config.python}"
    res = _bench(zoo["int8"], zoo["fp32"], "-r", "onnxruntime", "--data", zoo["photos"], "--on", spec,
                 "--json", out, *FAST, "--paired-rounds", "3")  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    from edgepipe.bench.schema import validate_document

    validate_document(doc)
    host = {r["model"]: r for r in doc["rows"]}
    rows = {t["model"]: t for t in doc["targets"]}
    assert set(rows) == set(host) and len(doc["targets"]) == 2
    for name, t in rows.items():
        assert t["how"] == "device" and t["target"] == f"ssh://{ALIAS}"
        assert t["latency_ms"] == t["latency"]["p50_ms"] > 0
        assert t["latency"]["p99_ms"] >= t["latency"]["p50_ms"] and t["latency"]["cold_ms"] > 0
        assert len(t["latency"]["round_medians_ms"]) == 3 and t["peak_rss_mb"] > 0
        assert t["agreement"] == 1.0 and t["top1"] == host[name]["top1"]
        assert t["cpu"]["python_path"] == str(ssh_config.python) and t["cpu"]["onnxruntime"]
        assert t["cpu"]["hostname"] == socket.gethostname() and t["title"]
    # int8 given first: the paired speed-up on the device divides by the float model there too
    assert rows["fp32.onnx"]["speedup_paired"] == 1.0 and rows["int8.onnx"]["speedup_paired"] > 0
    assert "On devices" in res.output and f"ssh://{ALIAS}" in res.output
    assert doc["settings"]["devices"] == [spec]
    assert _left_on_device(ssh_config) == []  # the remote folder is gone


def test_user_at_host_port_without_onnxruntime_names_the_pip_install(zoo, ssh_config):  # noqa: F811
    spec = f"ssh://{ssh_config.user}@127.0.0.1:{ssh_config.port}?python={ssh_config.python_no_ort}"
    res = _bench(zoo["int8"], "-r", "onnxruntime", "--data", zoo["photos"], "--on", spec, *FAST)
    _one_line_error(res, 10, "onnxruntime is not installed", "pip install numpy onnxruntime")


def test_no_python_on_the_device_is_one_line(zoo, ssh_config):  # noqa: F811
    res = _bench(zoo["int8"], "--data", zoo["photos"], "--on", f"ssh://{ALIAS}?python=/nonexistent/python3",
                 *FAST)  # fmt: skip
    _one_line_error(res, 10, "no /nonexistent/python3 on the device", "fix:")


def test_connection_refused_is_one_line(zoo, ssh_config):  # noqa: F811
    closed = _free_port()
    res = _bench(zoo["int8"], "--data", zoo["photos"], "--on", f"ssh://{ssh_config.user}@127.0.0.1:{closed}",
                 *FAST)  # fmt: skip
    _one_line_error(res, 10, f"connection refused by 127.0.0.1 port {closed}", "fix: start sshd")


def test_unknown_host_key_is_one_line(zoo, sshd, monkeypatch):  # noqa: F811
    monkeypatch.setenv(SSH_CONFIG_ENV, str(sshd.stranger_config))
    res = _bench(zoo["int8"], "--data", zoo["photos"], "--on", f"ssh://{ALIAS}?python={sshd.python}", *FAST)
    _one_line_error(res, 10, f"host key for {ALIAS} unknown", "known_hosts")


def test_a_run_past_its_timeout_is_one_line_and_leaves_nothing(zoo, ssh_config):  # noqa: F811
    """The device's runner must time for 2 s (--min-seconds), so a 1 s timeout always stops it mid-run; the
    host times for the same 2 s, no longer (the timeout is the device's alone)."""
    spec = f"ssh://{ALIAS}?python={ssh_config.python}"
    res = _bench(zoo["int8"], "-r", "onnxruntime", "--data", zoo["photos"], "--on", spec, "--warmup", "1",
                 "--min-iters", "3", "--min-seconds", "2", "--threads", "1", "--paired-rounds", "0",
                 "--device-timeout", "1")  # fmt: skip
    _one_line_error(res, 10, "passed its timeout of 1 s", "--device-timeout")
    deadline = time.monotonic() + 10  # the runner got TERM; its group is gone and the folder removed
    while _left_on_device(ssh_config) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _left_on_device(ssh_config) == []


def test_a_recipe_with_bench_devices_puts_device_rows_in_the_run_report(zoo, ssh_config, tmp_path):  # noqa: F811
    """The bench stage on the zoo's models over a real split with bench.devices, then the run report."""
    from edgepipe import stages
    from edgepipe.bench.report import write_run_report
    from edgepipe.bench.schema import validate_document
    from edgepipe.recipe import parse_recipe
    from edgepipe.stages.base import StageContext
    from tests.conftest import tiny_recipe

    spec = f"ssh://{ALIAS}?python={ssh_config.python}"
    bench_cfg = {"warmup": 1, "min_iters": 3, "min_seconds": 0, "threads": 1, "paired_rounds": 2,
                 "runtimes": ["onnxruntime"], "devices": [spec], "device_images": 10}  # fmt: skip
    recipe = parse_recipe(tiny_recipe(zoo["photos"], bench=bench_cfg))
    run_dir, status = tmp_path / "run", {}
    for name, inputs in (("split", {}), ("bench", {"onnx_fp32": zoo["fp32"], "onnx_int8": zoo["int8"]})):
        out = run_dir / name
        out.mkdir(parents=True)
        if name == "bench":
            inputs["split"] = run_dir / "split" / "split.json"
        ctx = StageContext(recipe=recipe, out_dir=out, inputs=inputs, run_dir=run_dir)
        result = stages.get(name).run(ctx)
        manifest = {"outputs": {k: {"file": v} for k, v in result.outputs.items()}, "metrics": result.metrics,
                    "wall_time_s": 0.5}  # fmt: skip
        status[name] = {"cached": False, "manifest": manifest}
    write_run_report(run_dir, recipe, status)
    doc = json.loads((run_dir / "report.json").read_text())
    validate_document(doc)
    devices = [t for t in doc["targets"] if t["how"] == "device"]
    assert {t["model"] for t in devices} == {"fp32", "int8-qat"}
    assert all(t["target"] == f"ssh://{ALIAS}" and t["latency_ms"] > 0 and t["agreement"] == 1.0
               for t in devices)  # fmt: skip
    assert "On devices" in (run_dir / "report.md").read_text()
