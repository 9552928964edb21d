"""Values memoised in the user's cache: computed once, read back exactly, keyed by their inputs."""

import json

import pytest

from gpudiffuse.corrections import attenuation_coefficient
from gpudiffuse.user_cache import cache_folder, cached_value


def test_value_is_computed_once_and_read_back_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUDIFFUSE_VALUE_CACHE", str(tmp_path / "sub" / "values.json"))
    calls = []

    def compute():
        calls.append(1)
        return 0.1 + 0.2  # not a short decimal: JSON must round-trip it bit for bit

    assert cached_value("k", compute) == 0.1 + 0.2
    assert cached_value("k", compute) == 0.1 + 0.2
    assert len(calls) == 1
    assert cached_value("other", lambda: 2.0) == 2.0
    assert json.loads((tmp_path / "sub" / "values.json").read_text()) == {"k": 0.1 + 0.2, "other": 2.0}


def test_unreadable_or_disabled_cache_means_computing(tmp_path, monkeypatch):
    bad = tmp_path / "values.json"
    bad.write_text("{not json")
    monkeypatch.setenv("GPUDIFFUSE_VALUE_CACHE", str(bad))
    assert cached_value("k", lambda: 3.0) == 3.0
    assert json.loads(bad.read_text()) == {"k": 3.0}  # replaced by a valid file
    monkeypatch.setenv("GPUDIFFUSE_VALUE_CACHE", "")
    assert cached_value("k", lambda: 4.0) == 4.0  # off: nothing read


def test_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_folder("jax") == str(tmp_path / "gpudiffuse" / "jax")


def test_attenuation_memo_equals_xraydb_and_is_keyed_by_energy(tmp_path, monkeypatch):
    import xraydb

    monkeypatch.setenv("GPUDIFFUSE_VALUE_CACHE", str(tmp_path / "values.json"))
    energy = 12.398419843320026 / 0.9 * 1000
    expected = xraydb.material_mu("Si", energy, density=2.329) / 10
    assert attenuation_coefficient("Si", 0.9) == pytest.approx(expected, rel=1e-15)
    assert attenuation_coefficient("silicon", 0.9) == pytest.approx(expected, rel=1e-15)  # from the memo
    assert attenuation_coefficient("Si", 1.8) == pytest.approx(xraydb.material_mu("Si", energy / 2, density=2.329) / 10,
                                                               rel=1e-15)
    assert len(json.loads((tmp_path / "values.json").read_text())) == 2
