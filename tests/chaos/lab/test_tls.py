"""TLS on every link, over real gRPC on loopback with real processes: `chaos up --tls`'s stack
(LocalStack.up(tls=True)), clients that verify it, clients that cannot, the admin token's rules
unchanged over TLS, the CLI's herd and verbs on it, and an experiment file with `tls = true`."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import chaos_run

from chaos.engine import spec
from chaos.engine.herd import HerdConfig, run_herd
from chaos.lab.admin import Admin
from chaos.lab.backends.local import LocalStack, StackInfo
from chaos.lab.tls import make_certs
from herdlab import healthcheck
from herdlab.auth import TOKEN_ENV, AdminError
from protos import admin_pb2

TOKEN = "tls-test-token"


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, StackInfo]]:
    stack = LocalStack(tmp_path_factory.mktemp("tls-stack"))
    token = ["--admin-token", TOKEN]
    # An RSA key here (the experiment file's stack below runs the default P-256 one).
    info = stack.up(token, token, tls=True, tls_key="rsa-2048")
    try:
        yield stack, info
    finally:
        stack.down()


def _ca(info: StackInfo) -> str:
    assert info.tls_ca is not None
    return info.tls_ca


def _health(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.RpcError | int:
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
        except grpc.RpcError as exc:
            return exc


def test_certs_name_loopback_and_keep_the_key_private(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "tls", ("db",))
    assert stat.S_IMODE(certs.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "db"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    cert.verify_directly_issued_by(ca)


@pytest.mark.parametrize(("kind", "bits"), [("rsa-2048", 2048), ("rsa-3072", 3072)])
def test_certs_with_an_rsa_key_of_the_kind_asked_for(tmp_path: Path, kind: str, bits: int) -> None:
    certs = make_certs(tmp_path / "tls", key_kind=kind)
    key = serialization.load_pem_private_key(certs.key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == bits
    cert = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(certs.ca.read_bytes()))


def test_an_unknown_key_kind_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TLS key must be one of ec-p256, rsa-2048"):
        make_certs(tmp_path / "tls", key_kind="rsa-1024")
    assert not (tmp_path / "tls").exists()


def test_the_stack_says_it_runs_tls_and_where_its_ca_is(
    tls_stack: tuple[LocalStack, StackInfo],
) -> None:
    stack, info = tls_stack
    doc = stack.status_info().to_json()
    assert doc["tls"] is True and doc["tls_ca"] == _ca(info)
    assert Path(doc["tls_ca"]).parent == stack.state_dir / "tls"
    assert all(r.tls_ca == _ca(info) for r in stack.records().values())
    served = x509.load_pem_x509_certificate((stack.state_dir / "tls" / "server.pem").read_bytes())
    assert isinstance(served.public_key(), rsa.RSAPublicKey)


async def test_a_herd_that_verifies_gets_values(tls_stack: tuple[LocalStack, StackInfo]) -> None:
    _, info = tls_stack
    config = HerdConfig(info.services["cache"].grpc, users=10, keys=2, tls_ca=_ca(info))
    result = await run_herd(config)
    assert len(result.outcomes) == 10
    assert [o.code for o in result.outcomes if o.code is not None] == []


async def test_a_client_without_the_ca_fails_the_handshake(
    tls_stack: tuple[LocalStack, StackInfo], tmp_path: Path
) -> None:
    _, info = tls_stack
    other = make_certs(tmp_path / "other")  # a CA that did not sign the stack's certificate
    config = HerdConfig(info.services["cache"].grpc, users=3, keys=1, tls_ca=str(other.ca))
    result = await run_herd(config)
    assert {o.code for o in result.outcomes} == {"UNAVAILABLE"}
    # The system's roots do not know the stack's CA either.
    refused = _health(info.services["db"].grpc, grpc.ssl_channel_credentials())
    assert isinstance(refused, grpc.RpcError)
    assert refused.code() is grpc.StatusCode.UNAVAILABLE
    assert "handshake" in (refused.details() or "").lower()


def test_a_plaintext_client_is_refused(tls_stack: tuple[LocalStack, StackInfo]) -> None:
    _, info = tls_stack
    for service in ("db", "cache"):
        refused = _health(info.services[service].grpc, None)
        assert isinstance(refused, grpc.RpcError), service
        assert refused.code() is grpc.StatusCode.UNAVAILABLE
    ca = Path(_ca(info)).read_bytes()
    served = _health(info.services["db"].grpc, grpc.ssl_channel_credentials(ca))
    assert served == health_pb2.HealthCheckResponse.SERVING


def test_the_container_healthcheck_speaks_tls_with_the_ca(
    tls_stack: tuple[LocalStack, StackInfo],
) -> None:
    _, info = tls_stack
    target = info.services["cache"].grpc
    assert healthcheck.check(target, 5.0, _ca(info)) == healthcheck.SERVING
    with pytest.raises(healthcheck.Unhealthy):
        healthcheck.check(target, 5.0)


async def test_admin_over_tls_keeps_the_token_rules(
    tls_stack: tuple[LocalStack, StackInfo],
) -> None:
    _, info = tls_stack
    db, cache = info.services["db"].grpc, info.services["cache"].grpc
    async with Admin(db, cache, token="", tls_ca=_ca(info)) as admin:
        with pytest.raises(AdminError, match="UNAUTHENTICATED"):
            await admin.db_state()
    async with Admin(db, cache, token=TOKEN, tls_ca=_ca(info)) as admin:
        state = await admin.set_faults(admin_pb2.Faults(latency_ms=20))
        assert state.faults.latency_ms == 20
        assert (await admin.cache_state()).coalescing


def _chaos(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERDLAB_STATE_DIR": str(stack.state_dir), TOKEN_ENV: TOKEN}
    env.pop("HERDLAB_TLS_CA", None)
    return subprocess.run(
        [sys.executable, "-m", "chaos", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_the_cli_reaches_a_tls_stack_with_its_ca(tls_stack: tuple[LocalStack, StackInfo]) -> None:
    stack, info = tls_stack
    done = _chaos(stack, "herd", "--users", "5", "--keys", "1", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] == 5, summary
    done = _chaos(stack, "latency", "db", "30ms")
    assert done.returncode == 0, done.stderr
    done = _chaos(stack, "status", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["tls"] is True and doc["tls_ca"] == _ca(info)
    assert doc["settings"]["db"]["latency_ms"] == 30


TLS_EXPERIMENT = """\
title = "A herd over TLS gets its values"
measures = ["lost", "client_errors"]

[stack]
tls = true

[herd]
users = 5
keys = 1
deadline = "20s"

[end]
limit = "60s"

[[expect]]
lost = { eq = 0 }
client_errors = { eq = 0 }
"""


def test_an_experiment_with_tls_runs_every_client_verified(tmp_path: Path) -> None:
    path = tmp_path / "tls.toml"
    path.write_text(TLS_EXPERIMENT)
    assert spec.load(path).stack_for({}).tls is True
    out_json = tmp_path / "r.json"
    done = chaos_run(path, out_json, tmp_path / "state")
    assert done.returncode == 0, done.stdout + done.stderr
    row = json.loads(out_json.read_text())["rows"][0]
    assert row["lost"] == 0 and row["client_errors"] == 0, row
