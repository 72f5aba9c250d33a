"""Notebook 02's slider where students see it: JupyterLab in headless Chromium draws the widget,
and moving t or switching the schedule redraws the figure. nbval runs the widget code but never
draws it, and drawing is what breaks between ipywidgets and JupyterLab versions.

Skipped where selenium, Chromium or chromedriver is missing (`.ci/run` installs Debian's
`chromium` and `chromium-driver`); a widget that does not draw fails."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, write_digit_folder

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    webdriver = None

NOTEBOOK = "02_forward_diffusion.ipynb"
TOKEN = "ddpm-browser-test"
WAIT = 120  # seconds for one thing to happen (a kernel importing torch on a busy 2-core machine)
SLIDER = ".widget-interact .widget-slider"
FIGURE = ".widget-interact .widget-output img"
IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]  # a stuck browser fails, not hangs


@pytest.fixture(autouse=True)
def no_proxy_to_localhost(monkeypatch):
    """The server, chromedriver and Chromium all listen on 127.0.0.1: a proxy in the
    environment (a CI's) must not carry the test's requests to them."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost", prepend=",")


@pytest.fixture
def jupyterlab_url(tmp_path: Path):
    """JupyterLab on 127.0.0.1 (a free port, a known token, DDPM_SMALL=1) serving a stand-in
    workbook root: a copy of notebook 02, the markers find_root looks for and a 40-image
    data/mnist_rgb. Its autosave and figures stay in tmp_path; the kernel imports the real
    ddpm_lib."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed: pip install -e .[test]")
    root = tmp_path / "workbook"
    (root / "ddpm_lib").mkdir(parents=True)
    (root / "pyproject.toml").touch()
    (root / "notebooks").mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / NOTEBOOK, root / "notebooks")
    write_digit_folder(root / "data" / "mnist_rgb")
    jupyter = tmp_path / "jupyter"  # none of the user's settings, kernels or workspaces
    tracker = jupyter / "settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))  # every cell in the page
    env = {**os.environ, "DDPM_SMALL": "1",
           "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
           "JUPYTER_DATA_DIR": str(jupyter / "data"),
           "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(jupyter / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "workspaces")}
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=0",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.news_url=", "--allow-root"],  # CI runs as root
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield wait_for_server(server, jupyter / "runtime" / f"jpserver-{server.pid}.json", log_path)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_for_server(server: subprocess.Popen, info_file: Path, log_path: Path) -> str:
    """The server's base URL once it answers /api/status; fails with its log if it dies."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log_path.read_text()}")
        if info_file.exists():
            url = json.loads(info_file.read_text())["url"].rstrip("/")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=10):
                    return url
            except OSError:
                pass
        time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {WAIT} s:\n{log_path.read_text()}")


@pytest.fixture
def browser():
    """Headless Chromium through the system's chromedriver (Selenium Manager downloads nothing)."""
    if webdriver is None:
        pytest.skip("selenium is not installed: pip install -e .[test]")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("no chromium or chromedriver on PATH: apt-get install chromium "
                    "chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver, condition, what: str, timeout: float = WAIT):
    """``condition(driver)`` once truthy; else fail naming ``what`` and the outputs' text."""
    try:
        return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException]
                             ).until(condition)
    except TimeoutException:
        pass
    outputs = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    shown = "\n".join(o.get_attribute("textContent")[:300] for o in outputs) or "(none)"
    prompts = " ".join(p.text for p in driver.find_elements(By.CSS_SELECTOR,
                                                            ".jp-InputArea-prompt"))
    pytest.fail(f"{what} within {timeout} s. Kernel idle: {kernel_idle(driver)}; the cells' "
                f"prompts: {prompts}. The notebook's outputs:\n{shown}")


def kernel_idle(driver) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, IDLE))


def run_all(driver) -> None:
    """Run → Run All Cells, from the menu, as a student would."""
    driver.find_element(By.XPATH, "//li[contains(@class, 'lm-MenuBar-item')][.='Run']").click()
    wait_until(driver, lambda d: d.find_element(
        By.CSS_SELECTOR, "li[data-command='runmenu:run-all']"), "no Run All Cells").click()


def first_figure(driver) -> str:
    """Run all cells and give the slider's first figure. A Run All that stopped short (the
    kernel idle, no figure: seen once on a busy CI machine, the cells after the first unrun) is
    given once more; a widget that never draws still fails."""
    run_all(driver)
    try:
        return WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException]
                             ).until(figure)
    except TimeoutException:
        if not kernel_idle(driver):
            raise
    dialogs = dismiss_dialogs(driver)  # seen on CI: a dialog over the menu bar at the retry
    run_all(driver)
    return wait_until(driver, figure, f"the slider's figure was not drawn (ipywidgets rendered "
                      f"nothing?; dialogs dismissed before the retry: {dialogs or 'none'})")


def dismiss_dialogs(driver) -> list[str]:
    """Close JupyterLab's open dialogs (Escape: their cancel or OK) and give their text."""
    texts = []
    for dialog in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog"):
        texts.append(" ".join(dialog.get_attribute("textContent").split())[:300])
        dialog.send_keys(Keys.ESCAPE)
    wait_until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, ".jp-Dialog"),
               f"the dialogs {texts} did not close on Escape")
    return texts


def figure(driver) -> str | None:
    """The slider's figure as drawn: its <img>'s data URL."""
    images = driver.find_elements(By.CSS_SELECTOR, FIGURE)
    return images[0].get_attribute("src") if images else None


def redrawn(before: str):
    """A wait condition: the figure drawn again, different from ``before``; gives the new one."""
    return lambda driver: (now := figure(driver)) is not None and now != before and now


def test_the_slider_and_the_schedule_redraw_the_figure_in_jupyterlab(browser, jupyterlab_url):
    browser.get(f"{jupyterlab_url}/lab/tree/notebooks/{NOTEBOOK}?token={TOKEN}")
    wait_until(browser, kernel_idle, "the notebook did not open with an idle kernel")
    first = first_figure(browser)
    handle = browser.find_element(By.CSS_SELECTOR, f"{SLIDER} .noUi-handle")
    readout = browser.find_element(By.CSS_SELECTOR, f"{SLIDER} .widget-readout")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
    assert readout.text == "250"
    handle.send_keys(Keys.ARROW_RIGHT)  # one step right, as a student's keyboard moves it
    wait_until(browser, lambda d: readout.text == "251", "the t slider did not move")
    moved = wait_until(browser, redrawn(first), "moving t to 251 did not redraw the figure")

    Select(browser.find_element(By.CSS_SELECTOR, ".widget-interact select")
           ).select_by_visible_text("cosine")
    wait_until(browser, redrawn(moved), "switching to the cosine schedule did not redraw "
               "the figure")
