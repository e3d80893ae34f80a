"""The client runs without the native extension: `fastraft.client` (and `fastraft.Client`)
import and encode/decode requests in a process where `fastraft._core` cannot be imported, as
in a client-only install (FASTRAFT_CLIENT_ONLY=1, no compiler)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_BLOCKER = textwrap.dedent("""
    import sys
    import importlib.abc

    class _NoCore(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fastraft._core":
                raise ModuleNotFoundError("no module named 'fastraft._core'", name=name)
            return None

    sys.meta_path.insert(0, _NoCore())
""")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCKER + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)


def test_blocker_really_blocks_the_core() -> None:
    # Guards the test below: with the blocker on, the server side must fail to import.
    p = _run("import fastraft.server.node\n")
    assert p.returncode != 0
    assert "fastraft._core" in p.stderr


def test_client_imports_and_codes_without_core() -> None:
    p = _run("""
        import sys
        import fastraft
        from fastraft import Client, AsyncClient
        import fastraft.client
        import fastraft.ctl  # fastractl, a client too
        from fastraft.client.codec import decode_request, encode_request, encode_response
        from fastraft.client.codec import decode_response
        from fastraft.net.framing import FrameDecoder, frame

        assert fastraft.Client is fastraft.client.Client
        body = encode_request(7, "put", {"key": b"k", "value": b"v"})
        [got] = FrameDecoder(1 << 20).feed(frame(body))
        assert decode_request(got) == (7, "put", {"key": b"k", "value": b"v"})
        assert decode_response(encode_response(7, None, {"ok": 1})) == (7, None, {"ok": 1})
        c = Client(["127.0.0.1:1"])
        c.close()
        loaded = sorted(m for m in sys.modules if m.startswith("fastraft."))
        assert "fastraft._core" not in sys.modules
        assert "fastraft.net.peercodec" not in sys.modules, loaded
        print("client-only ok")
    """)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "client-only ok"


def test_serve_does_not_load_the_load_generator() -> None:
    # `fastraft serve` starts from fastraft.cli: the load generator and its histogram library
    # are imported only for `fastraft bench`.
    code = ("import sys, fastraft.cli\n"
            "assert 'fastraft.tools.loadgen' not in sys.modules\n"
            "assert 'hdrh' not in sys.modules\n"
            "from click.testing import CliRunner\n"
            "r = CliRunner().invoke(fastraft.cli.main, ['bench', '--help'])\n"
            "assert r.exit_code == 0 and '--workload' in r.output, r.output\n"
            "assert 'fastraft.tools.loadgen' in sys.modules\n"
            "print('lazy ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "lazy ok"


def test_serve_without_core_says_so_in_one_line(tmp_path) -> None:
    p = _run(f"""
        import sys
        from fastraft.cli import main
        sys.argv = ["fastraft", "serve", "--name", "n1", "--data-dir", {str(tmp_path / "n1")!r}]
        main()
    """)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines() == [
        "fastraft: error: this install has no compiled core (fastraft._core), so it cannot run a "
        "member: reinstall without FASTRAFT_CLIENT_ONLY (needs Cython and a C compiler)"]
    assert not (tmp_path / "n1").exists()
