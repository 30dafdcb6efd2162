"""The shared browser fixture (tests/browser.py) drives a real headless chromium."""

from __future__ import annotations


def test_the_headless_browser_runs_a_page_script_offline(browser_page, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><body><h1 id=x>static</h1>"
        "<script>document.getElementById('x').textContent = 'script ran'</script></body></html>"
    )
    browser_page.goto(page.as_uri())
    assert browser_page.text_content("#x") == "script ran"
