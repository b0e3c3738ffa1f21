"""The playground page driven in headless Chromium against the real stack.

A user types a program into the CodeMirror editor, adds test cases and sees a verdict per
case; in an interactive run they type lines into the terminal pane and see the program's
answers. Chromium and its driver are Debian's (``scripts/setup.sh`` installs them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.runbox_client import Service

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
WAIT_S = 90


@pytest.fixture(scope="module")
def site(real_stack: None) -> Iterator[str]:
    """A gateway and an executor in separate processes; the page's URL."""
    executor = Service(roles="executor", RUNBOX_LANGUAGES="python").start(wait_ready=False)
    gateway = Service(roles="gateway", prefix=executor.prefix, RUNBOX_LANGUAGES="python").start()
    yield gateway.url
    gateway.stop()
    executor.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (os.access(CHROMIUM, os.X_OK) and shutil.which(DRIVER)):
        message = "Chromium and chromedriver are not installed; run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(DRIVER), options=options)
    yield driver
    driver.quit()


def wait(driver: WebDriver, condition, what: str):  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message=what)


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#language option"), "the language list")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#editor .cm-content"), "the editor")


def type_program(driver: WebDriver, lines: list[str]) -> None:
    """Type into the editor as a user would: select everything, delete it, type line by line."""
    editor = driver.find_element(By.CSS_SELECTOR, "#editor .cm-content")
    editor.click()
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    for i, line in enumerate(lines):
        editor.send_keys(line)
        if i < len(lines) - 1:
            editor.send_keys(Keys.ENTER)
    typed = driver.execute_script("return window.runboxEditor.state.doc.toString()")
    assert typed == "\n".join(lines)


def test_type_a_program_add_test_cases_run_and_see_verdicts(site: str, browser: WebDriver) -> None:
    open_page(browser, site)
    assert browser.find_element(By.ID, "language").get_attribute("value") == "python"
    assert browser.find_elements(By.CSS_SELECTOR, "#version option")  # the version picker is filled
    type_program(browser, ["n = int(input())", "print(n * 2)"])
    for stdin, expected in (("2", "4"), ("5", "11"), ("-3", "-6")):
        browser.find_element(By.ID, "add-case").click()
        row = browser.find_elements(By.CSS_SELECTOR, "#cases .case")[-1]
        row.find_element(By.CSS_SELECTOR, ".case-stdin").send_keys(stdin)
        row.find_element(By.CSS_SELECTOR, ".case-expected").send_keys(expected)
    browser.find_element(By.ID, "run").click()

    def verdicts(d: WebDriver) -> list[str] | None:
        seen = [el.text for el in d.find_elements(By.CSS_SELECTOR, "#cases .verdict")]
        return seen if all(seen) else None

    assert wait(browser, verdicts, "a verdict on every case") == ["accepted", "wrong answer", "accepted"]
    wait(browser, lambda d: "wrong answer" in d.find_element(By.ID, "status").text, "the overall verdict")
    assert "completed" in browser.find_element(By.ID, "status").text


def test_type_into_a_running_program_and_see_its_answers(site: str, browser: WebDriver) -> None:
    open_page(browser, site)
    type_program(browser, [
        'a = input()',
        'print("got " + a, flush=True)',
        'b = input()',
        'print("then " + b.upper(), flush=True)',
    ])
    browser.find_element(By.ID, "interactive").click()
    browser.find_element(By.ID, "run").click()
    terminal = wait(browser, lambda d: d.find_element(By.ID, "terminal-input") if d.find_element(
        By.ID, "terminal").is_displayed() else None, "the terminal pane")
    wait(browser, lambda d: d.find_element(By.ID, "status").text == "running", "the program to start")
    output = browser.find_element(By.ID, "output")
    terminal.send_keys("first", Keys.ENTER)
    wait(browser, lambda d: "got first" in output.text, "the program's first answer")
    terminal.send_keys("second", Keys.ENTER)
    wait(browser, lambda d: "then SECOND" in output.text, "the program's second answer")
    wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("completed"), "the end of the run")
    assert not browser.find_element(By.ID, "terminal").is_displayed()
