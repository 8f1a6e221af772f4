"""The page a person uses, in a real headless Chromium."""

from __future__ import annotations

from tests.utils.server import API_KEY


def test_page_classifies_a_sentence(service_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(service_url + "/ui")  # the page itself needs no key; it asks for one
    browser.find_element(By.TAG_NAME, "summary").click()
    browser.find_element(By.ID, "key").send_keys(API_KEY)
    browser.find_element(By.ID, "text").send_keys("i am so scared and afraid")
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 20).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "meta"), "model")
    )
    assert browser.find_element(By.ID, "meta").get_attribute("data-emotion") == "fear"
    rows = browser.find_elements(By.CSS_SELECTOR, "#bars .row")
    assert len(rows) == 6
    assert rows[0].get_attribute("data-emotion") == "fear"  # bars sorted, top first
    assert browser.find_element(By.LINK_TEXT, "API docs").get_attribute("href").endswith("/")


def test_api_docs_render_from_the_services_own_assets_only(service_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(service_url + "/")
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".opblock"))
    )
    operations = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    assert {"/predict", "/predict_batch", "/feedback"} <= {op.text.replace("\u200b", "") for op in operations}
    # Every resource the page loaded came from the service itself: no tag manager, no badges.
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(name.startswith(service_url) for name in loaded), loaded
