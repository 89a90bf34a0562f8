"""The web chat page in a real headless Chromium (Debian's ``chromium`` and ``chromedriver``,
driven by Selenium) against a real ``qwq-edge serve``: ask, watch thinking and answer stream,
press stop, reload and find the conversation kept."""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import CODER, LONG_THINKING_PROMPT, TINY
from serving import http, running_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)


@pytest.fixture(scope="module")
def server(cli_command, gguf_path):
    with running_server(cli_command, gguf_path, "--max-tokens", "400", "--budget", "256") as s:
        yield s


@contextmanager
def browser(url: str) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.get(url)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(server):
    with browser(server.url) as driver:
        yield driver


def wait(driver, condition, timeout: float = 60):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


def last(driver, selector: str):
    return driver.find_elements(By.CSS_SELECTOR, selector)[-1]


def ask(driver, text: str, budget: str) -> None:
    settings = driver.find_element(By.ID, "settings")
    if not settings.get_attribute("open"):
        settings.find_element(By.TAG_NAME, "summary").click()
    budget_field = driver.find_element(By.ID, "budget")
    budget_field.clear()
    budget_field.send_keys(budget)
    driver.find_element(By.ID, "prompt").send_keys(text)
    driver.find_element(By.ID, "send").click()


def test_the_page_has_an_icon_and_shows_the_server_s_default_budget(page):
    wait(page, lambda d: d.find_element(By.ID, "model-name").text.startswith("qwen2.5"))
    assert page.find_element(By.ID, "budget").get_attribute("placeholder") == "256 (server default)"
    icon = page.find_element(By.CSS_SELECTOR, "link[rel=icon]").get_attribute("href")
    with urllib.request.urlopen(icon, timeout=30) as response:
        assert response.status == 200 and response.headers["content-type"].startswith("image/svg+xml")
        assert b"<svg" in response.read()


def test_thinking_then_the_answer_stream_into_the_page(page):
    wait(page, lambda d: d.find_element(By.ID, "model-name").text.startswith("qwen2.5"))
    ask(page, "What is 2+3?", "8")
    wait(page, lambda d: last(d, ".thinking-text").get_attribute("textContent"))
    wait(page, lambda d: last(d, ".answer").text)
    wait(page, lambda d: d.find_element(By.ID, "status").text not in ("", "writing…"))
    thought = int(last(page, ".thinking-count").get_attribute("textContent"))
    assert 0 < thought <= 8
    said = page.find_element(By.ID, "status").text  # what happened, in words
    budget_cut = "Thinking stopped at its budget of 8 tokens; answered."
    assert said in (budget_cut, f"Answered after thinking for {thought} tokens."), said
    assert page.find_element(By.ID, "send").is_enabled() and not page.find_element(By.ID, "stop").is_enabled()


def test_the_runtime_s_words_are_marked_in_the_thinking_and_kept_after_a_reload(page):
    ask(page, LONG_THINKING_PROMPT, "6")
    wait(page, lambda d: d.find_element(By.ID, "status").text not in ("", "writing…"))
    turns = len(page.find_elements(By.CSS_SELECTOR, ".turn"))
    marked = last(page, ".turn.assistant").find_elements(By.CSS_SELECTOR, ".thinking-text .forced")
    assert [m.get_attribute("data-kind") for m in marked] == ["budget"]
    wrap_up = marked[0].get_attribute("textContent")
    assert "Thinking time is up." in wrap_up
    page.refresh()
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn")) == turns, timeout=10)
    kept = last(page, ".turn.assistant").find_elements(By.CSS_SELECTOR, ".thinking-text .forced")
    assert [(k.get_attribute("data-kind"), k.get_attribute("textContent")) for k in kept] == [("budget", wrap_up)]


def test_answer_now_closes_the_thinking_and_the_answer_follows(page):
    assert not page.find_element(By.ID, "answer-now").is_enabled()  # nothing is thinking
    ask(page, LONG_THINKING_PROMPT, "")
    wait(page, lambda d: int(last(d, ".thinking-count").get_attribute("textContent") or 0) >= 5)
    button = page.find_element(By.ID, "answer-now")
    wait(page, lambda d: button.is_enabled())
    button.click()
    wait(page, lambda d: d.find_element(By.ID, "status").text.startswith("Answered on request"))
    marked = last(page, ".turn.assistant").find_elements(By.CSS_SELECTOR, ".thinking-text .forced")
    assert [m.get_attribute("data-kind") for m in marked] == ["answer-now"]
    assert last(page, ".answer").text and not button.is_enabled()


def test_stop_cancels_the_generation_on_the_server(page, server):
    ask(page, LONG_THINKING_PROMPT, "")
    wait(page, lambda d: int(last(d, ".thinking-count").get_attribute("textContent") or 0) >= 5)
    assert http("GET", f"{server.url}/health").body["busy"]
    page.find_element(By.ID, "stop").click()
    wait(page, lambda d: d.find_element(By.ID, "status").text == "stopped", timeout=5)
    began = time.monotonic()
    while http("GET", f"{server.url}/health").body["busy"]:
        assert time.monotonic() - began < 3, "the server kept generating after stop"
        time.sleep(0.05)
    assert "(client disconnected)" in server.log


def test_the_conversation_is_kept_in_local_storage(page):
    turns = len(page.find_elements(By.CSS_SELECTOR, ".turn"))
    page.refresh()
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn")) == turns, timeout=10)
    stopped = last(page, ".turn.assistant")
    assert "stopped" in stopped.get_attribute("class")
    page.find_element(By.ID, "new-chat").click()
    assert page.find_elements(By.CSS_SELECTOR, ".turn") == []


def _open_settings(page) -> None:
    settings = page.find_element(By.ID, "settings")
    if not settings.get_attribute("open"):
        settings.find_element(By.TAG_NAME, "summary").click()


def test_the_api_key_is_kept_for_the_tab_s_session_only(page):
    _open_settings(page)
    page.find_element(By.ID, "api-key").send_keys("sk-secret-key")
    page.find_element(By.ID, "prompt").click()  # leaving the field stores it
    stored = page.execute_script("return [sessionStorage.getItem('qwq-edge.api-key'), JSON.stringify(localStorage)]")
    assert stored[0] == "sk-secret-key" and "sk-secret-key" not in stored[1]
    page.refresh()  # the same tab: still there
    wait(page, lambda d: d.find_element(By.ID, "api-key").get_attribute("value") == "sk-secret-key", timeout=10)
    page.execute_script("sessionStorage.clear()")
    _open_settings(page)  # a reload closes the settings again
    page.find_element(By.ID, "api-key").clear()


def test_a_server_of_several_models_offers_a_picker_and_the_chosen_one_answers(cli_command, models_dir):
    """Without --model the page lists the models the server can load; the one picked answers
    (the server loads it on demand) and stays picked after a reload."""
    command = (cli_command, None, "--models", str(models_dir), "--max-tokens", "64")
    with running_server(*command) as served, browser(served.url) as driver:
        wait(driver, lambda d: d.find_element(By.ID, "model").is_displayed())
        picker = driver.find_element(By.ID, "model")
        options = [option.get_attribute("value") for option in picker.find_elements(By.TAG_NAME, "option")]
        assert sorted(options) == sorted([CODER, TINY])
        Select(picker).select_by_value(CODER)
        ask(driver, "What is 2+3?", "8")
        wait(driver, lambda d: last(d, ".answer").text)
        wait(driver, lambda d: d.find_element(By.ID, "status").text not in ("", "writing…"))
        listed = http("GET", f"{served.url}/v1/models").body["data"]
        assert {card["id"]: card["qwq_edge"]["loaded"] for card in listed} == {CODER: True, TINY: False}
        driver.refresh()
        wait(driver, lambda d: d.find_element(By.ID, "model").is_displayed())
        assert driver.find_element(By.ID, "model").get_attribute("value") == CODER
