"""The page against a server with an API key: the key pasted in the page mints stream tokens."""

from __future__ import annotations

import pytest

from tests.web.conftest import Server, close_page, open_page, shot

pytestmark = pytest.mark.timeout(300)
KEY = "web-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, chromium_ready):
    srv = Server(tmp_path_factory.mktemp("web-keyed"), RAPPORT_API_KEY=KEY)
    yield srv
    srv.stop()


def test_with_a_key_the_page_asks_for_it_then_streams_with_tokens(browser, keyed_server) -> None:
    page = open_page(browser, keyed_server.base)
    try:
        page.wait_for_function("/API key/.test(document.getElementById('message').textContent)")
        # Without the key the stream is refused at the upgrade: a clear failure, no retry loop.
        page.click("#start")
        page.wait_for_function("window.rapport.live.figures().state === 'failed'", timeout=20_000)
        assert "API key" in page.inner_text("#message")
        page.click("summary")
        page.fill("#api-key", KEY)
        page.click("#api-key-save")
        page.click("#start")
        page.wait_for_function(
            "window.rapport.live.figures().windows >= 3", timeout=40_000, polling=200
        )
        shot(page, "api-key-streaming")
        assert page.evaluate("sessionStorage.getItem('rapport.apiKey')") == KEY
        page.click("#stop")
        page.wait_for_function("window.rapport.live.figures().state === 'stopped'")
        # The key stays for the tab's session: a reload does not ask again.
        page.reload()
        page.wait_for_function("window.rapport && window.rapport.ready")
        assert page.input_value("#api-key") == KEY
    finally:
        close_page(page, "api-key")
