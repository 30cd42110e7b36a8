"""The built docs site in headless Chromium, with every request to another host refused: the
formulas of the maths and algorithm pages render (MathJax SVG, no raw ``\\[``), the data-flow
diagrams render (mermaid SVG), and the pages open without a script error, a failed request or a
request that leaves the site. ``test_docs.py`` checks the links and the resources of every page
without a browser.

Needs Python's ``playwright`` (in the ``dev`` extra) and a Chromium binary: Debian's
(``apt-get install -y chromium``) or the one ``$TEXTRL_CHROMIUM`` names; playwright's own browser
download (``playwright install``) is not used. Without either the tests skip, saying which is
missing. ``TEXTRL_DOCS_SCREENSHOTS=<dir>`` also saves a full-page screenshot, 1280 px wide, of each
page the tests open (``docs/index.md`` says how to look at every page).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless, no GPU, no sandbox (CI runs as root) and none of Chromium's own network traffic."""
PAGES = ("", "getting-started/", "concepts/mdp/", "troubleshooting/", "reference/metrics/", "reference/configuration/")
"""The pages :func:`test_pages_open_offline_without_errors` opens: the home page, the first steps
and the generated pages (the maths and data-flow pages have their own tests)."""
MATHS_PAGES = ("concepts/maths/", "algorithms/ppo/", "algorithms/ppo-ptx/", "algorithms/reinforce/", "algorithms/grpo/")
"""The pages with formulas, which :func:`test_maths_renders_offline` opens: the maths page and one
page per algorithm."""


def chromium_path() -> str | None:
    """``$TEXTRL_CHROMIUM`` when set, else the first Chromium or Chrome on ``PATH``, else None."""
    if os.environ.get("TEXTRL_CHROMIUM"):
        return os.environ["TEXTRL_CHROMIUM"]
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def why_skipped() -> str:
    """The reason the tests cannot run here, or ``""``."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; it is in the dev extra)"
    if chromium_path() is None:
        return "no Chromium found: apt-get install -y chromium, or set TEXTRL_CHROMIUM=/path/to/chrome"
    return ""


pytestmark = pytest.mark.skipif(bool(why_skipped()), reason=why_skipped() or "runs")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class OfflinePage:
    """A browser tab on the served site that refuses (and records) every request to another host,
    and records failed responses and uncaught script errors."""

    def __init__(self, browser, site_url: str):
        self.site_url = site_url
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.outside: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("response", lambda r: self.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        self.page.on("requestfailed", lambda r: r.url.startswith(site_url) and self.failed.append(f"failed {r.url}"))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith((self.site_url, "data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def open(self, path: str):
        """Open ``path`` (relative to the site) and wait for its ``load`` event; returns the page."""
        self.page.goto(self.site_url + path, wait_until="load")
        shots = os.environ.get("TEXTRL_DOCS_SCREENSHOTS")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            name = path.strip("/").replace("/", "_") or "index"
            self.page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)
        return self.page

    def assert_clean(self) -> None:
        assert not self.outside, f"requests to other hosts: {self.outside}"
        assert not self.failed, f"failed requests: {self.failed}"
        assert not self.errors, f"script errors: {self.errors}"


@pytest.fixture
def offline_page(browser, site_url):
    tab = OfflinePage(browser, site_url)
    yield tab
    tab.context.close()


@pytest.mark.parametrize("path", MATHS_PAGES)
def test_maths_renders_offline(offline_page, path):
    """Every arithmatex formula becomes a MathJax SVG without a TeX error, and no raw ``\\[`` or
    ``\\(`` delimiter is left in the text."""
    page = offline_page.open(path)
    formulas = page.locator(".arithmatex").count()
    assert formulas > 0
    page.wait_for_function(
        "() => [...document.querySelectorAll('.arithmatex')].every(e => e.querySelector('mjx-container svg'))",
        timeout=20_000,
    )
    assert page.locator("mjx-container svg").count() == formulas
    assert page.locator("mjx-merror").count() == 0, "a formula MathJax could not parse"
    text = page.evaluate(
        """() => { const a = document.querySelector('article').cloneNode(true);
                   a.querySelectorAll('pre, code').forEach(e => e.remove()); return a.textContent; }"""
    )
    assert "\\[" not in text and "\\(" not in text, "raw TeX left on the page"
    offline_page.assert_clean()


def shadow_svg_nodes(page) -> list[int]:
    """For each SVG inside a shadow root of an element with class ``mermaid``, how many of its
    elements have class ``node``. Material draws each diagram in a closed shadow root, which the
    page's scripts cannot see, so the DOM is read through the DevTools protocol (``pierce``)."""
    cdp = page.context.new_cdp_session(page)
    root = cdp.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]

    def classes(node) -> list[str]:
        attrs = node.get("attributes", [])
        return dict(zip(attrs[::2], attrs[1::2])).get("class", "").split()

    def descendants(node):
        for child in node.get("children", []) + node.get("shadowRoots", []):
            yield child
            yield from descendants(child)

    counts = []
    for host in descendants(root):
        if "mermaid" in classes(host):
            for shadow in host.get("shadowRoots", []):
                for svg in (n for n in descendants(shadow) if n.get("nodeName", "").lower() == "svg"):
                    counts.append(sum("node" in classes(n) for n in descendants(svg)))
    return counts


def test_data_flow_diagrams_render_offline(offline_page):
    """Each mermaid block of the data-flow page becomes an SVG diagram with its nodes."""
    page = offline_page.open("concepts/data-flow/")
    diagrams = page.request.get(page.url).text().count('<pre class="mermaid">')
    assert diagrams >= 2
    page.wait_for_function(
        f"() => !document.querySelector('pre.mermaid') && document.querySelectorAll('div.mermaid').length === {diagrams}",
        timeout=20_000,
    )
    nodes = shadow_svg_nodes(page)
    assert len(nodes) == diagrams and all(n > 0 for n in nodes), f"nodes per diagram: {nodes}"
    offline_page.assert_clean()


@pytest.mark.parametrize("path", PAGES)
def test_pages_open_offline_without_errors(offline_page, path):
    """The page loads with every request to another host refused, without a failed request or a
    script error, and shows its title."""
    page = offline_page.open(path)
    assert page.locator("article h1").count() == 1
    offline_page.assert_clean()
