"""`examples/web/syncbridge-events.js` in a real browser (issue 15, point 3): a page on another
origin loads the snippet, which sends a page view on load, a "Product Added" on a click and an
identify, cross-origin, to a live intake; they are stored and stitch to one person."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from syncbridge.identity import resolve_pending
from syncbridge.intake.setup import serving
from syncbridge.settings import load_settings
from syncbridge.store.engine import open_engine

from .test_intake import KEY, _json, write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SNIPPET = Path(__file__).resolve().parents[1] / "examples" / "web" / "syncbridge-events.js"
PAGE = """<!doctype html><html><head><title>Summit Down Jacket</title></head><body>
<button data-add-to-cart data-sku="JK-5520" data-name="Summit Down Jacket"
        data-category="Apparel" data-price="189">Add to cart</button>
<script src="/syncbridge-events.js" data-endpoint="{endpoint}" data-write-key="{key}"></script>
<script>
  window.addEventListener("load", async function () {{
    document.querySelector("[data-add-to-cart]").click();
    await syncbridge.identify("web.visitor@example.com", {{ firstName: "Wren" }});
    document.body.setAttribute("data-done", "yes");
  }});
</script></body></html>"""


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[tuple[str, Any, Any]]:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    settings = load_settings(write_config(tmp_path, url))
    engine = open_engine(url)
    with serving(lambda: settings, engine) as base:
        yield base, engine, settings
    engine.dispose()


@pytest.fixture
def site(intake: tuple[str, Any, Any]) -> Iterator[str]:
    """The shop's own origin (another port): the page and the snippet."""
    endpoint = intake[0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/syncbridge-events.js":
                body, kind = SNIPPET.read_bytes(), "text/javascript"
            else:
                body, kind = PAGE.format(endpoint=endpoint, key=KEY).encode(), "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/products/summit-down-jacket"
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium)")
def test_the_snippet_sends_a_page_view_a_cart_add_and_an_identify_that_stitch(
    intake: tuple[str, Any, Any], site: str
) -> None:
    _, engine, settings = intake
    dom = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--virtual-time-budget=10000", "--dump-dom", site],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert 'data-done="yes"' in dom.stdout, dom.stderr[-2000:]
    with engine.connect() as conn:
        stored = [_json(p) for (p,) in conn.execute(text("SELECT payload FROM source_record"))]
    kinds = sorted((m["type"], m.get("event")) for m in stored)
    assert kinds == [("identify", None), ("page", None), ("track", "Product Added")]
    assert len({m["anonymousId"] for m in stored}) == 1  # one visitor, one first-party id
    added = next(m for m in stored if m.get("event") == "Product Added")
    assert added["properties"] == {"sku": "JK-5520", "name": "Summit Down Jacket",
                                   "category": "Apparel", "price": 189, "quantity": 1}  # fmt: skip
    assert added["context"]["page"]["path"] == "/products/summit-down-jacket"
    assert all("writeKey" not in m for m in stored)
    resolve_pending(engine, settings.config.identity)
    with engine.connect() as conn:
        emails = conn.execute(text("SELECT email FROM profile")).scalars().all()
        events = conn.execute(text("SELECT type FROM event ORDER BY type")).scalars().all()
    assert emails == ["web.visitor@example.com"]
    assert events == ["added_to_cart", "page_view"]
