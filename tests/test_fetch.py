"""weights fetch: verified downloads, clear offline errors (no network needed)."""
import hashlib
import io
import urllib.error

import pytest

from microgpt_bench import fetch as fetch_mod


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path))


def offline(url, timeout):
    raise urllib.error.URLError("Name or service not known")


def serving(payload):
    return lambda url, timeout: io.BytesIO(payload)


def test_offline_says_which_flag_to_use():
    with pytest.raises(fetch_mod.FetchError, match="pass it with --weights PATH"):
        fetch_mod.fetch("weights_only.npy", opener=offline)
    with pytest.raises(fetch_mod.FetchError, match="pass it with --data PATH"):
        fetch_mod.fetch("names.txt", opener=offline)


def test_wrong_digest_is_not_saved(tmp_path):
    with pytest.raises(fetch_mod.FetchError, match="expected 0a30b555"):
        fetch_mod.fetch("names.txt", opener=serving(b"emma\n"))
    assert not (tmp_path / "data" / "names.txt").exists()


def test_verified_download_is_saved_and_reused(monkeypatch, shared_data):
    payload = (shared_data / "names.txt").read_bytes()
    assert hashlib.sha256(payload).hexdigest() == fetch_mod.SOURCES["names.txt"][1]
    path = fetch_mod.fetch("names.txt", opener=serving(payload))
    assert path.read_bytes() == payload
    assert fetch_mod.fetch("names.txt", opener=offline) == path  # cached: no network needed
