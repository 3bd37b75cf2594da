"""End-to-end fixtures: a real `halberd serve` process on its embedded default
(SQLite in a temporary directory, the built-in mock provider), keys made with
the real `halberd keys` CLI, and the official OpenAI and Anthropic SDKs as
clients. Nothing is stubbed on our side of the socket."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("HALBERD_BIN", str(ROOT / "target" / "debug" / "halberd"))


class Gateway:
    def __init__(self, workdir: Path, config: str | None = None):
        self.workdir = workdir
        env = dict(os.environ, HALBERD_LOG="warn")
        env.pop("HALBERD_CONFIG", None)
        if config is not None:
            (workdir / "halberd.toml").write_text(config)
            env["HALBERD_CONFIG"] = str(workdir / "halberd.toml")
        self.env = env
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        first = self.proc.stdout.readline()
        if "listening on http://" not in first:
            self.proc.kill()
            raise RuntimeError(f"halberd did not start: {first!r}")
        self.addr = first.split("http://")[1].split(" ")[0]
        self.base = f"http://{self.addr}"

    def cli(self, *args: str) -> dict:
        out = subprocess.run([BIN, *args, "--json"], cwd=self.workdir, env=self.env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def create_key(self, name: str = "e2e", *extra: str) -> dict:
        return self.cli("keys", "create", "--name", name, *extra)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    if not Path(BIN).exists():
        pytest.fail(f"halberd binary not found at {BIN}; run `cargo build` first or set HALBERD_BIN")
    gw = Gateway(tmp_path_factory.mktemp("halberd"))
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def key(gateway) -> str:
    return gateway.create_key()["key"]


@pytest.fixture
def openai_client(gateway, key):
    import openai

    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=key, max_retries=0)


@pytest.fixture
def anthropic_client(gateway, key):
    import anthropic

    return anthropic.Anthropic(base_url=gateway.base, api_key=key, max_retries=0)
