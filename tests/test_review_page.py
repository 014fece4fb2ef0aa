"""The review page in a real browser (Debian's chromium, headless) and its HTTP surface (Flask's test client on
the real app): change a tag, submit, and `tagger feedback ingest` of the inbox accepts exactly that correction."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import pytest

from feedback_ingest.dataset import FeedbackDataset
from jobs.cli import main
from review.app import ProgressLog, create_app
from review.queue_file import read_queue
from review.sinks import InboxSink
from tests.batch_fixtures import history  # noqa: F401  (session fixture)
from tests.review_fixtures import small_queue, write_images

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BROWSER_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,860")


def start_server(queue: str, inbox: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "review", "serve", "--queue", queue, "--inbox", inbox,
                             "--port", "0", "--annotator", "reviewer-7"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "review page for" in line:
            return proc, line.split(": ", 1)[1].strip()
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"review server did not start: {''.join(lines)}")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "Debian's chromium and chromium-driver are missing: `make install` installs them"
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager try to download a browser or driver
    options = Options()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.slow
def test_browser_changes_a_tag_submits_and_ingest_accepts_exactly_that_correction(history, tmp_path, capsys):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    queue_path = str(tmp_path / "queue.json")
    assert main(["review", "queue", "--tags", history.output, "--registry", history.registry, "--model", "tagger@v1",
                 "--strategy", "uncertainty", "--limit", "4", "--out", queue_path]) == 0
    item = read_queue(queue_path).items[0]
    inbox = tmp_path / "inbox"
    proc, url = start_server(queue_path, str(inbox))
    driver = None
    try:
        driver = browser()
        wait = WebDriverWait(driver, 30)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "uri").text == item.image_uri)
        wait.until(lambda d: d.execute_script(
            "const i = document.getElementById('photo'); return i.complete && i.naturalWidth > 0"))
        # key 1 toggles the most probable class: the change this test makes
        top = max(item.probabilities, key=item.probabilities.get)
        driver.find_element(By.TAG_NAME, "body").send_keys("1")
        on = {e.get_attribute("data-tag") for e in driver.find_elements(By.CSS_SELECTOR, "#chips .chip:not(.removed)")}
        assert (top in on) != (top in item.tags)
        screenshot = os.environ.get("TAGGER_REVIEW_SCREENSHOT")
        if screenshot:
            driver.save_screenshot(screenshot)
        driver.find_element(By.ID, "submit").click()  # the mouse this time
        wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "Saved"))
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)

    files = glob.glob(str(inbox / "*.jsonl"))
    assert len(files) == 1 and not glob.glob(str(inbox / ".tmp-*"))
    final = (set(item.tags) ^ {top})
    expected = {(t, "present") for t in final} | {(t, "absent") for t in set(item.tags) - final}
    assert (top, "present" if top in final else "absent") in expected
    dataset = str(tmp_path / "feedback")
    capsys.readouterr()
    assert main(["feedback", "ingest", "--input", *files, "--dataset", dataset, "--tagged", history.output,
                 "--registry", history.registry, "--no-data-docs"]) == 0
    assert f"accepted {len(expected)}, quarantined 0" in capsys.readouterr().out
    rows = FeedbackDataset(dataset).read("accepted").to_pylist()
    assert {(r["tag"], r["verdict"]) for r in rows} == expected
    assert {(r["image_uri"], r["image_sha256"], r["annotator"], r["source"], r["model_version"]) for r in rows} == \
        {(item.image_uri, item.content_sha256, "reviewer-7", "review-ui", "v1")}
    assert json.load(open(queue_path + ".progress.json"))["done"].keys() == {"0"}


@pytest.fixture
def app_env(tmp_path):
    paths = write_images(str(tmp_path / "img"), 3)
    broken = tmp_path / "img" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    queue = small_queue([*paths, str(broken)])
    inbox = tmp_path / "inbox"
    return queue, inbox, tmp_path


def client(app_env, **kw):
    queue, inbox, tmp = app_env
    app = create_app(queue, InboxSink(str(inbox)), ProgressLog(str(tmp / "q.progress.json")), annotator="ann", **kw)
    return app.test_client()


def test_images_are_served_only_by_queue_index_and_re_encoded(app_env):
    c = client(app_env)
    ok = c.get("/image/0", headers={"Host": "127.0.0.1:5000"})
    assert ok.status_code == 200 and ok.mimetype == "image/jpeg" and ok.data[:2] == b"\xff\xd8"
    assert "default-src 'none'" in ok.headers["Content-Security-Policy"]
    for path in ("/image/4", "/image/-1", "/image/..%2f..%2fetc%2fpasswd", "/image/../../etc/passwd",
                 "/static/..%2fapp.py", "/static/app.py", "/etc/passwd"):
        assert c.get(path).status_code == 404, path
    broken = c.get("/image/3")  # an undecodable file: a clear error, the page stays usable
    assert broken.status_code == 422 and "cannot display" in broken.get_json()["error"]


def test_a_fifo_or_device_in_a_hand_edited_queue_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    queue = small_queue([str(fifo), "/dev/zero"])
    c = create_app(queue, InboxSink(str(tmp_path / "inbox")), ProgressLog(str(tmp_path / "p.json")),
                   annotator="ann").test_client()
    for index in (0, 1):
        refused = c.get(f"/image/{index}")
        assert refused.status_code == 422 and "not a regular file" in refused.get_json()["error"]


def test_page_is_self_contained(app_env):
    c = client(app_env)
    html = c.get("/").get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    for asset in ("/static/review.js", "/static/review.css"):
        body = c.get(asset).get_data(as_text=True)
        assert c.get(asset).status_code == 200 and "https://" not in body and "http://" not in body


def test_token_guards_every_route_beyond_localhost(app_env):
    c = client(app_env, token="s3cret", loopback_only=False)
    assert c.get("/api/queue").status_code == 401
    assert c.get("/image/0").status_code == 401
    assert c.post("/api/submit", json={"index": 0, "tags": []}).status_code == 401
    assert c.get("/api/queue", headers={"X-Review-Token": "wrong"}).status_code == 401
    wrong = c.get("/?token=guess")
    assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers  # a wrong guess earns no cookie
    first = c.get("/?token=s3cret")
    assert first.status_code == 200 and "HttpOnly" in first.headers["Set-Cookie"]
    assert c.get("/api/queue").status_code == 200  # the cookie now carries the token
    assert c.get("/image/0").status_code == 200


def test_localhost_page_refuses_foreign_host_headers(app_env):
    c = client(app_env)
    assert c.get("/api/queue", headers={"Host": "evil.example:8765"}).status_code == 403
    assert c.get("/api/queue", headers={"Host": "localhost:8765"}).status_code == 200


def test_submit_validates_the_decision_and_writes_one_atomic_inbox_file(app_env):
    queue, inbox, _ = app_env
    c = client(app_env)
    assert c.post("/api/submit", data="index=0").status_code == 415
    assert c.post("/api/submit", json={"index": 9, "tags": []}).status_code == 400
    assert c.post("/api/submit", json={"index": True, "tags": []}).status_code == 400
    bad = c.post("/api/submit", json={"index": 0, "tags": ["circle", "kite"]})
    assert bad.status_code == 400 and "add it explicitly as a new class" in bad.get_json()["error"]
    assert c.post("/api/submit", json={"index": 0, "tags": ["circle\n"], "annotator": " "}).status_code == 400
    assert not inbox.exists() or not os.listdir(inbox)  # nothing written by refused submits
    ok = c.post("/api/submit", json={"index": 0, "tags": ["circle", "kite"], "new_classes": ["kite"]})
    assert ok.status_code == 200
    (path,) = glob.glob(str(inbox / "*.jsonl"))
    records = [json.loads(line) for line in open(path)]
    # item 0 started {circle, red}: circle confirmed, kite added as a new class, red removed
    assert {(r["tag"], r["verdict"], r["new_class"]) for r in records} == {
        ("circle", "present", False), ("kite", "present", True), ("red", "absent", False)}
    assert {r["annotator"] for r in records} == {"ann"}
    assert ok.get_json()["written"] == 3


def test_serve_refuses_a_missing_queue_with_one_line(tmp_path, capsys):
    assert main(["review", "serve", "--queue", str(tmp_path / "none.json"), "--inbox", str(tmp_path)]) == 2
    assert "no such queue file" in capsys.readouterr().err


def test_listening_beyond_localhost_requires_the_generated_token(app_env):
    import urllib.error
    import urllib.request

    from jobs.review_cmd import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    queue, inbox, tmp = app_env
    queue.write(str(tmp / "q.json"))
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "review", "serve", "--queue", str(tmp / "q.json"),
                             "--inbox", str(inbox), "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "review page for" not in line and proc.poll() is None:
            line = proc.stdout.readline()
        assert "?token=" in line, line
        port = line.split("?token=")[0].rstrip("/").rsplit(":", 1)[1]
        token = line.split("?token=")[1].strip()
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/queue", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(f"{base}/api/queue", headers={"X-Review-Token": token})
        assert len(json.load(urllib.request.urlopen(request, timeout=10))["items"]) == 4
    finally:
        proc.terminate()
        proc.wait(timeout=30)
