"""Who the client is behind reverse proxies: ``[http] trusted_proxies`` and the two headers."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from evflow.errors import ConfigError
from evflow.http.proxies import UNKNOWN, client_address
from evflow.service.config import load_config

PROXY = "10.0.0.5"
NETWORKS = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128")]


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in values.items()]


@pytest.mark.parametrize(
    "claim",
    [
        headers(x_forwarded_for="127.0.0.1"),
        headers(forwarded="for=127.0.0.1"),
        headers(forwarded='for="[::1]:4711"', x_forwarded_for="::1"),
    ],
)
def test_an_untrusted_peer_is_the_client_whatever_it_claims(
    claim: list[tuple[bytes, bytes]],
) -> None:
    assert client_address("203.0.113.9", claim, NETWORKS) == "203.0.113.9"
    assert client_address("203.0.113.9", claim, []) == "203.0.113.9"


@pytest.mark.parametrize(
    ("claim", "client"),
    [
        (headers(x_forwarded_for="198.51.100.7"), "198.51.100.7"),
        (headers(forwarded="for=198.51.100.7;proto=https"), "198.51.100.7"),
        (headers(forwarded='for="198.51.100.7:5000"'), "198.51.100.7"),
        (headers(forwarded='for="[2001:db8::1]:5000"'), "2001:db8::1"),
        # a forged entry on the left is ignored: the hop nearest to us decides
        (headers(x_forwarded_for="127.0.0.1, 198.51.100.7"), "198.51.100.7"),
        (headers(forwarded="for=127.0.0.1, for=198.51.100.7"), "198.51.100.7"),
        (headers(x_forwarded_for="198.51.100.7, 10.0.0.9"), "198.51.100.7"),  # two proxies
        # both headers naming one client, or different ones (then: unknown, never loopback)
        (headers(x_forwarded_for="198.51.100.7", forwarded="for=198.51.100.7"), "198.51.100.7"),
        (headers(x_forwarded_for="198.51.100.7", forwarded="for=127.0.0.1"), UNKNOWN),
        (headers(x_forwarded_for="not-an-address"), UNKNOWN),
        (headers(forwarded="for=_hidden"), UNKNOWN),
        (headers(forwarded="proto=https"), UNKNOWN),
        ([], PROXY),  # the proxy itself (a health check)
    ],
)
def test_a_trusted_proxy_names_the_client(claim: list[tuple[bytes, bytes]], client: str) -> None:
    assert client_address(PROXY, claim, NETWORKS) == client


def test_trusted_proxies_from_toml_and_environment(tmp_path: Path) -> None:
    (tmp_path / "evflow.toml").write_text('[http]\ntrusted_proxies = ["10.0.0.5", "::1"]\n')
    assert load_config(tmp_path, env={}).http.trusted_proxies == ("10.0.0.5/32", "::1/128")
    env = {"EVFLOW_HTTP_TRUSTED_PROXIES": "192.168.0.0/16, 127.0.0.1"}
    cfg = load_config(tmp_path, env=env)
    assert cfg.http.trusted_proxies == ("192.168.0.0/16", "127.0.0.1/32")
    assert load_config(tmp_path / "none", env={}).http.trusted_proxies == ()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('trusted_proxies = "proxy.local"', "'proxy.local' is not an IP address or network"),
        ('trusted_proxies = ["10.0.0.0/33"]', "'10.0.0.0/33' is not an IP address or network"),
        ("trusted_proxies = [1]", "1 is not a string"),
        ("trusted_proxies = true", "True is not a list"),
    ],
)
def test_a_bad_trusted_proxy_names_the_key(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "evflow.toml").write_text(f"[http]\n{toml}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path, env={})
    assert "evflow.toml [http].trusted_proxies: " + message in str(raised.value)
