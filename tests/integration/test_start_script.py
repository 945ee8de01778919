"""scripts/start as a developer runs it, in its own venv and secrets file: the first run
installs, the next ones skip installing while nothing changed, and each says where it listens.

No broker is needed: AMQP_URL points at a closed port, and each run is stopped as soon as it
has said where it listens, before it could declare anything."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import pytest
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 300.0  # a first install of every pinned package, from pip's cache or PyPI


def _start(env: dict[str, str], *args: str) -> str:
    """Run scripts/start until it has printed its metrics URL; stop it; return its stderr."""
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "start"), *args], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or ()])
    reader.start()
    output = ""
    deadline = time.monotonic() + INSTALL_TIMEOUT
    try:
        while not re.search(r"^  metrics ", output, re.MULTILINE):
            try:
                output += lines.get(timeout=1.0)
            except queue.Empty:
                if not reader.is_alive() and lines.empty():
                    raise AssertionError(f"exited {proc.wait()} first: {output}") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"no metrics URL in time: {output}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=30)
    return output


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of config/ serving on 127.0.0.1 and a free port, a venv and a secrets file of
    its own, and a broker URL nobody answers."""
    tmp = tmp_path_factory.mktemp("start")
    config = tmp / "config"
    shutil.copytree(ROOT / "config", config)
    port = free_port()
    toml = config / "router.toml"
    text = toml.read_text()
    assert 'host = "0.0.0.0"\nport = 8080\n' in text
    toml.write_text(text.replace('host = "0.0.0.0"\nport = 8080\n',
                                 f'host = "127.0.0.1"\nport = {port}\n', 1))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp)),
        "VENV": str(tmp / "venv"),
        "ENV_FILE": str(tmp / "env.local"),
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
    }
    args = ("--config", str(toml), "--store", f"sqlite:///{tmp / 'data' / 'router.sqlite3'}")
    first = _start(env, *args)
    secrets = (tmp / "env.local").read_text()
    second = _start(env, *args)
    return {"tmp": tmp, "port": port, "env": env, "args": args, "config": toml,
            "first": first, "second": second, "secrets": secrets}


class TestStartScript:
    def test_first_run_installs_and_writes_secrets(self, setup):
        """The first run makes the venv, installs from constraints.txt and writes secrets."""
        assert f"installing webhook-router into {setup['env']['VENV']} from constraints.txt" \
            in setup["first"]
        assert f"wrote development secrets to {setup['env']['ENV_FILE']}" in setup["first"]
        assert (Path(setup["env"]["VENV"]) / "bin" / "python").exists()

    def test_second_run_skips_installing(self, setup):
        """Nothing changed, so the second run installs nothing and keeps the secrets."""
        assert "is up to date (pyproject.toml and constraints.txt unchanged): not installing" \
            in setup["second"]
        assert "installing" not in setup["second"].replace("not installing", "")
        assert "wrote development secrets" not in setup["second"]
        assert setup["secrets"] == Path(setup["env"]["ENV_FILE"]).read_text()

    def test_says_where_it_listens(self, setup):
        """Both runs print the ingress, readiness and metrics URLs of the config's address."""
        base = f"http://127.0.0.1:{setup['port']}"
        for output in (setup["first"], setup["second"]):
            assert f"webhook-router: starting on 127.0.0.1:{setup['port']}" in output
            assert re.search(rf"^  ingress  {re.escape(base)}  \(POST /webhooks/shopify ",
                             output, re.MULTILINE)
            assert f"  ready    {base}/readyz\n" in output
            assert f"  metrics  {base}/metrics\n" in output

    def test_secrets_file_has_every_source_secret_and_only_its_owner_reads_it(self, setup):
        """The written file has one random value per env: secret of the sources, mode 600,
        in the NAME=value form that compose's env_file reads too."""
        with setup["config"].open("rb") as fh:
            sources = tomllib.load(fh)["sources"].values()
        names = {ref.removeprefix("env:") for s in sources for ref in s.get("secrets", [])}
        pairs = dict(line.split("=", 1) for line in setup["secrets"].splitlines())
        assert names == set(pairs)
        assert all(re.fullmatch(r"[0-9a-f]{48}", value) for value in pairs.values())
        assert 0o600 == Path(setup["env"]["ENV_FILE"]).stat().st_mode & 0o777

    def test_a_change_installs_again(self, setup):
        """When pyproject.toml or constraints.txt differ from the stamp's, it installs again."""
        stamp = Path(setup["env"]["VENV"]) / ".webhook-router-install"
        stamp.write_text("what an older pyproject.toml and constraints.txt hashed to\n")
        output = _start(setup["env"], *setup["args"])
        assert "installing webhook-router into" in output
        assert "not installing" in _start(setup["env"], *setup["args"])
