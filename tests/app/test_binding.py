"""Without API keys the open API never listens beyond loopback, whatever FACESEARCH_HOST says."""

from __future__ import annotations

from pathlib import Path


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port``, from /proc/net/tcp (IPv4) and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            addr, hexport = cols[1].rsplit(":", 1)
            if int(hexport, 16) == port and cols[3] == "0A":  # 0A: LISTEN
                found.add(addr)
    return found


LOOPBACK_V4 = "0100007F"  # 127.0.0.1, little-endian hex as /proc/net/tcp writes it
ANY_V4 = "00000000"


def test_no_api_keys_binds_loopback_only(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    open_server = server_factory(tmp_path / "open" / "data", FACESEARCH_HOST="0.0.0.0", FACESEARCH_API_KEYS="")
    open_server.wait_ready()
    assert listening_addresses(open_server.port) == {LOOPBACK_V4}
    assert "refusing to expose the open API" in open_server.log_path.read_text()
    # with keys, the same setting is honoured
    keyed = server_factory(tmp_path / "keyed" / "data", FACESEARCH_HOST="0.0.0.0", FACESEARCH_API_KEYS="k1")
    keyed.wait_ready()
    assert listening_addresses(keyed.port) == {ANY_V4}
