"""The real zeroconf browser against real zeroconf announcements of simulated Shelly
devices, inside a private network namespace (nothing leaves the machine). Skips when
namespaces are unavailable, fails instead under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

from disc_netns import run_json_in_netns

CHILD = Path(__file__).with_name("disc_mdns_child.py")


@pytest.mark.netns
def test_browser_finds_every_shelly_once_by_mac():
    result = run_json_in_netns(CHILD, timeout=60)
    expected = result["expected"]
    found = result["found"]
    macs = [f["mac"] for f in found]
    assert sorted(macs) == sorted(expected), result
    assert len(macs) == len(set(macs)), f"a device was reported twice: {result}"
    for f in found:
        assert f["generation"] == expected[f["mac"]]["generation"]
        assert f["host"] == expected[f["mac"]]["host"] and f["port"] == 80
        assert f["confirmed"]
    # Gen2+ publish four instances each and Gen1 one; far more sightings than devices,
    # yet one /shelly probe per device.
    assert result["instances"] > len(expected)
    assert result["probes"] == len(expected), result
    assert [f["auth"] for f in found if f["generation"] == 4] == [True]


def test_missing_namespaces_skip_locally_but_fail_under_ci(monkeypatch):
    import disc_netns

    monkeypatch.setattr(disc_netns.shutil, "which", lambda tool: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        disc_netns.require_private_netns()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        disc_netns.require_private_netns()
