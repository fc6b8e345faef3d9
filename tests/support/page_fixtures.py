"""The fixtures every page test module uses, registered for all of them by tests/conftest.py:
one browser per module, a fresh watched page per test. tests/support/browser.py is imported
only when a fixture is set up, so that a machine without chromium skips the page tests alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

    from tests.support.browser import Watched


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    from tests.support.browser import launched_browser

    async with launched_browser() as launched:
        yield launched


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    from tests.support.browser import open_page

    async with open_page(browser) as page:
        yield page
