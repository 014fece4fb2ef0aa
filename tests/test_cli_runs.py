"""`tagger tag` and `tagger train` as real processes: Ctrl-C mid-run exits 130 with one line and leaves no
staging or partial version, the next run succeeds, and that run's output redirected to a file is plain lines
(no carriage return, at most one progress line per interval).

The HTML the jobs leave behind renders in a real browser with no network: the training report and the feedback
validation page. Debian's headless Chromium (installed by the Makefile), driven by selenium, with the network
emulated offline: no request may fail or leave the machine, and the pages must show their content. Screenshots
go to the test's temporary directory; ``TAGGER_SCREENSHOTS=DIR`` keeps them (docs/screenshots/ has the
committed ones).
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from tests.synthetic import write_dataset

pytestmark = pytest.mark.slow

TAGGER = os.path.join(os.path.dirname(sys.executable), "tagger")
INTERVAL = 0.5  # --progress-interval of the redirected runs
INFO_LOG = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO ")  # the run's own INFO lines (model, provider, variant)


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)


def _sigint_as_at_a_terminal() -> None:
    """A shell started in the background (CI, `make test &`) ignores SIGINT, and children inherit that: Python
    then installs no KeyboardInterrupt handler, as `nohup` users expect. The test is about a terminal's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(argv: list[str], started, env=None, timeout: float = 180) -> tuple[int, list[str]]:
    """Run ``tagger ARGV``, send SIGINT once ``started()`` is true; returns (exit status, stderr lines)."""
    proc = subprocess.Popen([TAGGER, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=env, preexec_fn=_sigint_as_at_a_terminal)
    try:
        _wait_for(started, timeout, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, [line for line in err.splitlines() if not INFO_LOG.match(line)]


def _redirected(argv: list[str], log_path: str, env=None) -> tuple[int, bytes, float]:
    """Run ``tagger ARGV`` with stdout and stderr into one file, as cron or a scheduler would."""
    began = time.monotonic()
    with open(log_path, "wb") as log:
        code = subprocess.call([TAGGER, *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=env, timeout=600)
    with open(log_path, "rb") as fh:
        return code, fh.read(), time.monotonic() - began


def _progress_lines(log: bytes) -> list[bytes]:
    return [line for line in log.split(b"\n") if line.startswith(b"progress: ")]


@pytest.fixture(scope="module")
def tag_runs(tmp_path_factory):
    from tests.model_factory import publish_tiny_model
    from tests.synthetic import CLASSES

    root = tmp_path_factory.mktemp("tag-runs")
    registry = str(root / "registry")
    publish_tiny_model(registry, CLASSES)
    write_dataset(str(root / "data"), 1500, size=(64, 64))
    out = root / "out"
    argv = ["tag", "--input", str(root / "data" / "images" / "*.jpg"), "--output", str(out), "--registry", registry,
            "--model", "tagger", "--workers", "1", "--batch-size", "1"]
    tmp = root / "tmp"  # the runs' TMPDIR: Beam's beam-pipeline-temp* directories must not stay behind
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    code, err = _interrupt([*argv, "--no-progress"],
                           lambda: bool(glob.glob(str(out / "_staging" / "*" / "progress" / "*.json"))), env=env)
    after_interrupt = sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []
    tmp_after_interrupt = os.listdir(tmp)
    next_code, log, seconds = _redirected([*argv, "--progress-interval", str(INTERVAL)], str(root / "tag.log"),
                                          env=env)
    return SimpleNamespace(code=code, err=err, left=after_interrupt, out=out, next_code=next_code, log=log,
                           seconds=seconds, tmp_left=[*tmp_after_interrupt, *os.listdir(tmp)])


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-runs")
    write_dataset(str(root / "data"), 60, seed=2, size=(64, 64))
    registry = root / "registry"
    # The fine-tune recipe: its epochs give the interrupt time to land (the default probe is done in seconds).
    argv = ["train", "--recipe", "finetune", "--arch", "mobilenet_v2", "--data", str(root / "data"),
            "--registry", str(registry), "--image-size", "64", "--warmup-epochs", "1", "--finetune-fraction", "1.0",
            "--threads", "1"]
    work = root / "interrupted"
    code, err = _interrupt([*argv, "--work-dir", str(work), "--epochs", "50", "--patience", "50", "--no-progress"],
                           lambda: os.path.exists(work / "checkpoint.pt"))  # written after each epoch
    left = sorted(os.listdir(registry / "tagger")) if (registry / "tagger").exists() else []
    next_code, log, seconds = _redirected([*argv, "--work-dir", str(root / "next"), "--epochs", "2", "--batch-size", "4",
                                           "--progress-interval", str(INTERVAL)], str(root / "train.log"))
    return SimpleNamespace(code=code, err=err, left=left, registry=registry, next_code=next_code, log=log,
                           seconds=seconds)


def test_ctrl_c_during_tag_exits_130_in_one_line_and_leaves_nothing(tag_runs):
    assert tag_runs.code == 130
    assert tag_runs.err == ["tagger tag: interrupted by SIGINT; nothing committed, staging removed"]
    assert not [p for p in tag_runs.left if p.startswith(("_staging", "_manifests", "run_date", "_errors"))], \
        tag_runs.left


def test_tag_runs_leave_nothing_in_the_temporary_directory(tag_runs):
    # Beam's beam-pipeline-temp*, interrupted or not (onnxruntime keeps a 51-byte session id, .ses, there)
    assert [name for name in tag_runs.tmp_left if name != ".ses"] == []


def test_the_run_after_an_interrupted_tag_succeeds_with_plain_log_lines(tag_runs):
    assert tag_runs.next_code == 0, tag_runs.log.decode(errors="replace")[-2000:]
    (manifest,) = glob.glob(str(tag_runs.out / "_manifests" / "*.json"))
    with open(manifest) as fh:
        assert json.load(fh)["tagged"] == 1500
    assert b"\r" not in tag_runs.log
    assert len(_progress_lines(tag_runs.log)) <= tag_runs.seconds / INTERVAL + 1
    assert b"Traceback" not in tag_runs.log and b"Warning" not in tag_runs.log


def test_ctrl_c_during_train_exits_130_in_one_line_and_publishes_nothing(train_runs):
    assert train_runs.code == 130
    assert train_runs.err == ["tagger train: interrupted by SIGINT"]
    # no version, no hidden staging directory (the registry's own lock and seal bookkeeping may exist)
    assert [n for n in train_runs.left if n.startswith(("v", "."))] == []


def test_the_run_after_an_interrupted_train_succeeds_with_plain_log_lines(train_runs):
    log = train_runs.log.decode(errors="replace")
    assert train_runs.next_code == 0, log[-2000:]
    from models.registry import Registry

    assert Registry(str(train_runs.registry)).versions("tagger") == ["v1"]
    assert not [n for n in os.listdir(train_runs.registry / "tagger") if n.startswith(".")]  # no staging left
    assert f"report: {train_runs.registry / 'tagger' / 'v1' / 'report.html'}" in log
    assert b"\r" not in train_runs.log
    progress = _progress_lines(train_runs.log)
    assert progress and len(progress) <= train_runs.seconds / INTERVAL + 1


# ------------------------------------------------------------------------------------------ pages, offline
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1400")


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium/chromedriver missing: `make install` installs Debian's chromium and chromium-driver")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    yield driver
    driver.quit()


def open_offline(driver, path: str, screenshot: str) -> dict:
    """Load ``path`` and return what a user would notice: failed or remote requests, console errors, broken
    images. Saves a full-window screenshot."""
    driver.get_log("performance")  # drop earlier pages' events
    driver.get_log("browser")
    driver.get("file://" + os.path.abspath(path))
    driver.execute_script("return document.readyState")
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    requested = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    failed = [e["params"].get("errorText") for e in events if e["method"] == "Network.loadingFailed"]
    broken_images = driver.execute_script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    console = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 600), 4000))
    driver.save_screenshot(screenshot)
    keep = os.environ.get("TAGGER_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(screenshot, keep)
    return {"remote": [u for u in requested if not u.startswith(("file:", "data:"))], "failed": failed,
            "broken_images": broken_images, "console_errors": console}


def test_training_report_renders_offline(browser, train_runs, tmp_path):
    report = train_runs.registry / "tagger" / "v1" / "report.html"
    problems = open_offline(browser, str(report), str(tmp_path / "report.png"))
    assert problems == {"remote": [], "failed": [], "broken_images": [], "console_errors": []}
    assert browser.execute_script("return document.querySelectorAll('svg').length") >= 1
    text = browser.find_element("tag name", "body").text
    assert "tagger" in text and "v1" in text


def test_feedback_validation_page_renders_offline_with_its_list(browser, tmp_path):
    from jobs.cli import main
    from tests.model_factory import publish_tiny_model
    from tests.synthetic import CLASSES

    registry = str(tmp_path / "registry")
    publish_tiny_model(registry, CLASSES)
    corrections = tmp_path / "corrections.csv"
    corrections.write_text("image_uri,tag,verdict,annotator,source,reviewed_at,model_version\n"
                           f"{corrections},circle,present,ann,ui,2026-01-01T00:00:00Z,tagger@v1\n"
                           ",nosuchtag,maybe,ann,ui,yesterday,v9\n")
    dataset = tmp_path / "feedback"
    assert main(["feedback", "ingest", "--input", str(corrections), "--dataset", str(dataset),
                 "--registry", registry]) == 0
    (page,) = dataset.glob("_runs/*/data_docs/index.html")
    problems = open_offline(browser, str(page), str(tmp_path / "data-docs.png"))
    assert problems == {"remote": [], "failed": [], "broken_images": [], "console_errors": []}
    rows = browser.find_elements("css selector", "table.validation-list tbody tr")
    assert len(rows) >= 5  # one per expectation of the suite
    failed = [r.text for r in rows if "failed" in r.text.split("\n")[0]]
    assert any("verdict" in r for r in failed)  # the bad row's expectation is listed as failed
