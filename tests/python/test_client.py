"""ihc.Client against a real coordinator: every method, the result's fields, the server's
errors as ihc.Error, the bearer token."""

import json

import pytest

import ihc
from conftest import Cluster


def test_interrupt_result_fields(client):
    r = client.interrupt("py-client-1", reason="test stop", timeout_ms=2000)
    assert isinstance(r, ihc.Result)
    assert r.hardware_id == "py-client-1" and r["hardware_id"] == "py-client-1"
    assert r.reason == "test stop"
    assert isinstance(r.interrupt_id, int) and r.interrupt_id > 0
    assert r.cleaned_sessions == [] and isinstance(r.modules, list)
    assert "total_time_ms" in r and r.success in (True, False)
    with pytest.raises(AttributeError, match="no field"):
        r.no_such_field
    r2 = client.interrupt("py-client-1")
    assert r2.interrupt_id > r.interrupt_id and r2.epoch > r.epoch


def test_queries(client):
    assert isinstance(client.agents(), list)
    assert isinstance(client.sessions(), list)
    assert client.sessions("no-such-hw") == []
    st = client.stats()
    assert isinstance(st, dict) and st
    assert isinstance(client.flags(), dict)
    assert isinstance(client.reset_flags(), dict)
    assert client.health()


def test_bad_hardware_id_is_error_400(client):
    with pytest.raises(ihc.Error) as e:
        client.interrupt("bad id with spaces")
    assert e.value.status == 400
    assert "hardware_id" in e.value.message
    assert "400" in str(e.value)


def test_bad_json_is_error_400_with_position(client):
    with pytest.raises(ihc.Error) as e:
        client.request("POST", "/v1/interrupt", raw_body=b'{"hardware_id": "dev-1",')
    assert e.value.status == 400
    assert "line" in e.value.message and "column" in e.value.message
    with pytest.raises(ihc.Error) as e:
        client.request("POST", "/v1/interrupt", raw_body=json.dumps(
            {"hardware_id": "dev-1", "bogus": 1}).encode())
    assert e.value.status == 400 and "bogus" in e.value.message


def test_unknown_path_is_404(client):
    with pytest.raises(ihc.Error) as e:
        client.request("GET", "/v1/nothing")
    assert e.value.status == 404 and "/v1/nothing" in e.value.message


def test_unreachable_and_bad_urls():
    with pytest.raises(ihc.Error) as e:
        ihc.Client("http://127.0.0.1:1", timeout=2).stats()
    assert e.value.status is None and "Connection" in e.value.message
    for bad in ("ftp://x", "127.0.0.1:7480", "http://h:70000", "http://h/path"):
        with pytest.raises(ihc.Error):
            ihc.Client(bad)


def test_bearer_token(monkeypatch):
    c = Cluster("pytok", coord_env={"IHC_HTTP_TOKEN": "s3cret-token"})
    try:
        monkeypatch.delenv("IHC_HTTP_TOKEN", raising=False)
        monkeypatch.delenv("IHC_HTTP_TOKEN_FILE", raising=False)
        with pytest.raises(ihc.Error) as e:
            ihc.Client(c.url).stats()
        assert e.value.status == 401 and "token" in e.value.message
        with pytest.raises(ihc.Error) as e:
            ihc.Client(c.url, token="wrong").stats()
        assert e.value.status == 401
        assert ihc.Client(c.url, token="s3cret-token").stats()
        monkeypatch.setenv("IHC_HTTP_TOKEN", "s3cret-token")
        r = ihc.Client(c.url).interrupt("py-tok-1")
        assert r.hardware_id == "py-tok-1"
    finally:
        c.close()
