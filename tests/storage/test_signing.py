"""Signed, expiring file URLs."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from flowy.errors import Forbidden
from flowy.storage.signing import MAX_TTL_SECONDS, UrlSigner

NOW = 1_700_000_000.5
PATH = "/v1/files/f_123/content"
MESSAGE = "invalid or expired link"


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def signer(clock: Clock) -> UrlSigner:
    return UrlSigner(b"k" * 32, clock=clock)


def _query(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query, strict_parsing=True)
    assert sorted(query) == ["expires", "signature"]
    return parts.path, query["expires"][0], query["signature"][0]


def _refused(signer: UrlSigner, *args: str | None, **kwargs: bool) -> str:
    with pytest.raises(Forbidden) as info:
        signer.verify(*args, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == 403
    return info.value.message


def test_round_trip(signer: UrlSigner) -> None:
    url, expires_at = signer.signed_url("https://flowy.example/", PATH, 3600)
    assert url.startswith(f"https://flowy.example{PATH}?expires=1700003600&signature=")
    assert expires_at == datetime(2023, 11, 14, 23, 13, 20, tzinfo=UTC)
    assert expires_at == datetime.fromtimestamp(1_700_003_600, tz=UTC)
    path, expires, signature = _query(url)
    assert path == PATH
    assert "=" not in signature and len(signature) == 43
    signer.verify("GET", path, expires, signature)
    signer.verify("get", path, expires, signature)  # method names are case-insensitive


def test_sign_is_deterministic_and_keyed(clock: Clock) -> None:
    one = UrlSigner(b"key one", clock=clock)
    assert one.sign("GET", PATH, 10) == one.sign("get", PATH, 10)
    assert one.sign("GET", PATH, 10) != UrlSigner(b"key two", clock=clock).sign("GET", PATH, 10)
    assert one.sign("GET", PATH, 10) != one.sign("HEAD", PATH, 10)


def test_missing_or_malformed_values_are_refused_alike(signer: UrlSigner) -> None:
    url, _ = signer.signed_url("http://h", PATH, 60)
    _, expires, signature = _query(url)
    cases: list[tuple[str | None, str | None]] = [
        (None, signature),
        (expires, None),
        (None, None),
        ("", signature),
        ("soon", signature),
        ("-1", signature),
        ("0" + expires, signature),  # not the form that was signed
        ("١٢٣", signature),  # Unicode digits
        (expires, ""),
        (expires, signature + "="),
        (expires, "é" * 43),  # non-ASCII must not crash compare_digest
        (expires, signature[:-1]),
    ]
    for bad_expires, bad_signature in cases:
        assert _refused(signer, "GET", PATH, bad_expires, bad_signature) == MESSAGE


def test_tampering_is_refused_with_the_same_message(signer: UrlSigner) -> None:
    url, _ = signer.signed_url("http://h", PATH, 60)
    path, expires, signature = _query(url)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    messages = {
        _refused(signer, "GET", path, expires, flipped),
        _refused(signer, "GET", "/v1/files/f_124/content", expires, signature),
        _refused(signer, "GET", path + "/", expires, signature),
        _refused(signer, "GET", path, str(int(expires) + 1), signature),
        _refused(signer, "DELETE", path, expires, signature),
        _refused(UrlSigner(b"other key"), "GET", path, expires, signature),
    }
    assert messages == {MESSAGE}


def test_expired_link_is_refused(signer: UrlSigner, clock: Clock) -> None:
    url, _ = signer.signed_url("http://h", PATH, 60)
    path, expires, signature = _query(url)
    clock.now = int(expires)  # the last valid second
    signer.verify("GET", path, expires, signature)
    clock.now = int(expires) + 0.001
    assert _refused(signer, "GET", path, expires, signature) == MESSAGE


def test_allow_expired_accepts_only_a_valid_signature(signer: UrlSigner, clock: Clock) -> None:
    url, _ = signer.signed_url("http://h", PATH, 60)
    path, expires, signature = _query(url)
    clock.now += 10 * 24 * 3600
    signer.verify("GET", path, expires, signature, allow_expired=True)
    assert _refused(signer, "GET", path, expires, signature) == MESSAGE
    assert _refused(signer, "GET", "/other", expires, signature, allow_expired=True) == MESSAGE


@pytest.mark.parametrize("ttl", [1, 60, MAX_TTL_SECONDS])
def test_ttl_within_bounds(signer: UrlSigner, ttl: int) -> None:
    _, expires_at = signer.signed_url("http://h", PATH, ttl)
    assert expires_at.timestamp() == int(NOW) + ttl


@pytest.mark.parametrize("ttl", [0, -5, MAX_TTL_SECONDS + 1, 1.5, True])
def test_ttl_out_of_bounds(signer: UrlSigner, ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        signer.signed_url("http://h", PATH, ttl)


@pytest.mark.parametrize("path", ["files/x", "/files/x?y=1", "/files/x#top", "/a\nb"])
def test_only_url_paths_are_signed(signer: UrlSigner, path: str) -> None:
    with pytest.raises(ValueError):
        signer.signed_url("http://h", path, 60)


def test_empty_key_rejected() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"")
