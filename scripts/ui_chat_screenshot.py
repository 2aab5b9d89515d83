"""The chat view's screenshot, taken as a person uses it: Debian's Chromium driven by Playwright
(`pip install playwright`; nothing downloads a browser, /usr/bin/chromium is used) picks the image,
asks each question in turn, waits for the streamed answer, then saves the page.

Usage: ui_chat_screenshot.py URL IMAGE OUT.png QUESTION...
"""

import sys

from playwright.sync_api import sync_playwright


def main() -> None:
    url, image, out, *questions = sys.argv[1:]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(f"{url}/chat")
        page.set_input_files("input[type=file]", image)
        for i, question in enumerate(questions):
            page.fill("input.question", question)
            page.click("text=Ask")
            # The answer is whole when the button is enabled again.
            page.wait_for_function(
                f"document.querySelectorAll('.answer').length > {i} && "
                "document.querySelector('.answer:last-of-type').textContent.length > 0 && "
                "[...document.querySelectorAll('button')].every((b) => !b.disabled)",
                timeout=120_000,
            )
            answer = page.locator(".answer").nth(i).text_content()
            print(f"{question} → {answer}")
            if page.locator(".answer.error").count():
                sys.exit(f"the chat answered with an error: {answer}")
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main()
