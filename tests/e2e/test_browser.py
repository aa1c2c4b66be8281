"""A person's view: headless Chromium (the system one, never a downloaded browser) signs in as jason."""

import signal

import pytest

from tests.support.net import wait_for_http

from .isthmus_up import start

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.mark.browser
def test_sign_in_as_jason_and_see_details_and_reviews(procs, artifacts_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    mesh = start(procs, "127.0.0.80")
    mesh.wait_for_output(r"Bookinfo is up")
    wait_for_http(mesh.url, proc=mesh.proc)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(mesh.url)
            expect = sync_api.expect
            expect(page.locator("h3.title")).to_have_text("The Comedy of Errors")
            expect(page.locator("#details")).to_contain_text("Book Details")
            expect(page.locator("#reviews")).to_contain_text("Book Reviews")

            page.fill("input[name=username]", "jason")
            page.fill("input[name=passwd]", "jason")
            page.click("#login-button")

            expect(page.locator("#user")).to_contain_text("jason")
            assert page.url == mesh.url
            assert page.context.cookies()[0]["name"] == "end-user"
            expect(page.locator("#details dl.book-details")).to_contain_text("PublisherA")
            expect(page.locator("#reviews blockquote.review")).to_have_count(2)
            expect(page.locator("#reviews")).to_contain_text("Reviewer1")
            page.screenshot(path=str(artifacts_dir / "productpage-jason.png"), full_page=True)

            page.click("#logout")
            expect(page.locator("#login-form")).to_be_visible()
        finally:
            browser.close()

    mesh.proc.send_signal(signal.SIGINT)
    assert mesh.proc.wait(30) == 0
