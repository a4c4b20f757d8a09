"""Human verification against one real Label Studio server (started once for the session)."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter

import pyarrow as pa
import pytest

import schemas
from annotation import client as lsclient
from annotation import config as lsconfig
from annotation import export, pull, server, sync, votes
from curation import atomic, config
from curation.errors import UserError
from tests.support.label_studio import make_run

pytestmark = pytest.mark.timeout(900)


def _conn(cfg):
    spec = cfg.annotation
    return lsclient.connect(spec.url, spec.files_root, retries=spec.retries, backoff=spec.backoff)


def _tasks_on_server(ls, run):
    conn = _conn(config.load(run))
    return export.export_tasks(conn, sync.find_project(conn, run))


def _annotate(ann_client, task_id, background, is_class="yes", flags=(), skip=False):
    if skip:
        return ann_client.annotations.create(id=task_id, result=[], was_cancelled=True)
    return ann_client.annotations.create(id=task_id, result=lsconfig.annotation_result(background, is_class, flags),
                                         lead_time=1.5)


def test_round_trip_two_annotators_with_disagreements(label_studio, tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "roundtrip", per_group=3, overlap=2, calibration_share=0.25,
                   initial_per_stratum=2)
    cfg = config.load(run)
    first = sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    again = sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    # Round 0, per class: 2 photos of each of its 4 model backgrounds (the least sure photo has a
    # stratum of its own, taken from the first), the unsure one and the flagged one = 10; 3 classes
    # = 30, + round(0.25 * 30) = 8 calibration photos from the gold answers not chosen yet.
    assert first["roles"] == {"coverage": 30, "calibration": 8}
    assert (first["added"], again["added"], again["already"]) == (38, 0, 38)

    ledger = {r["uid"]: r for r in sync.read_ledger(run).to_pylist()}
    alice = label_studio.annotator("alice@example.org")
    bob = label_studio.annotator("bob@example.org")
    sent = {}
    disagree = sorted(ledger)[:4]           # bob picks another background: 1-1 ties at overlap 2
    not_class = sorted(ledger)[4]           # both say it is not the class
    flagged = sorted(ledger)[5]             # both tick "several animals"
    skipped = sorted(ledger)[6]             # bob skips: one vote only -> pending
    for uid, t in ledger.items():
        truth = t["gold_background"]
        is_class = "no" if uid == not_class else "yes"
        flags = ["several_animals"] if uid == flagged else []
        _annotate(alice, t["task_id"], truth, is_class, flags)
        sent[(uid, "alice@example.org")] = (truth, is_class, flags)
        other = "sky" if truth != "sky" else "grass"
        bob_bg = other if uid in disagree else truth
        if uid == skipped:
            _annotate(bob, t["task_id"], None, skip=True)
        else:
            _annotate(bob, t["task_id"], bob_bg, is_class, flags)
            sent[(uid, "bob@example.org")] = (bob_bg, is_class, flags)

    summary = pull.pull(run, cfg, _conn(cfg), say=lambda s: None)
    raw = schemas.read(run / "annotation" / "annotations.parquet", "annotations").to_pylist()
    assert len(raw) == 2 * len(ledger)
    got = {(r["uid"], r["annotator"]): (r["background"], r["is_class"], r["flags"]) for r in raw if not r["skipped"]}
    assert got == sent                                    # every value round-trips, per annotator
    assert [r["uid"] for r in raw if r["skipped"]] == [skipped]

    verdicts = {r["uid"]: r for r in pull.read_verdicts(run).to_pylist()}
    assert {u for u, v in verdicts.items() if v["status"] == "tie"} == set(disagree)
    assert all(verdicts[u]["background"] is None for u in disagree)
    assert verdicts[skipped]["status"] == "pending"
    assert verdicts[not_class]["is_class"] == "no" and verdicts[flagged]["flags"] == ["several_animals"]
    human = schemas.read(run / "groups" / "human.parquet", "groups").to_pylist()
    expect = set(ledger) - set(disagree) - {skipped, not_class, flagged}
    assert {r["uid"] for r in human} == expect
    assert all(r["method"] == "human" and r["background"] == ledger[r["uid"]]["gold_background"] for r in human)

    people = {r["annotator"]: r for r in schemas.read(run / "annotation" / "annotators.parquet",
                                                      "annotators").to_pylist()}
    gold_tasks = len(ledger)     # the test run has known answers for every photo
    assert people["alice@example.org"]["background_accuracy"] == 1.0
    assert people["bob@example.org"]["background_accuracy"] == pytest.approx((gold_tasks - 1 - 4) / (gold_tasks - 1))
    assert people["alice@example.org"]["is_class_accuracy"] == pytest.approx((gold_tasks - 1) / gold_tasks)
    alpha = summary["agreement"]["background"]["alpha"]
    assert alpha is not None and 0 < alpha < 1
    units = [[v[0] for k, v in sent.items() if k[0] == uid] for uid in ledger]
    assert alpha == pytest.approx(votes.krippendorff_alpha(units))

    report = pull.status(run, cfg, _conn(cfg))
    assert report["per_annotator"] == {"alice@example.org": len(ledger), "bob@example.org": len(ledger)}
    assert report["complete"] == len(ledger) - 1 and report["deleted_by_hand"] == []


def test_server_killed_mid_push_then_restarted_every_task_once(label_studio, tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "killed", per_group=2, overlap=1, calibration_share=0.0,
                   batch_size=10)
    cfg = config.load(run)
    killed = []

    def kill_after_first_batch(done):
        if not killed:
            label_studio.kill()
            killed.append(done)

    # Round 0: 3 classes x (4 backgrounds x 2 + 1 flagged) = 27 photos, 3 batches of 10.
    with pytest.raises(lsclient.ServerDown, match="not answering"):
        sync.push(run, cfg, _conn(cfg), say=lambda s: None, after_batch=kill_after_first_batch)
    assert killed == [10]
    label_studio.restart()
    counts = sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    assert counts["added"] == 17 and counts["already"] == 10
    ledger = sync.read_ledger(run).to_pylist()
    alice = label_studio.annotator("alice@example.org")
    labelled = {t["uid"]: t["task_id"] for t in ledger[:3]}
    made = {_annotate(alice, tid, "snow").id for tid in labelled.values()}
    again = sync.push(run, cfg, _conn(cfg), say=lambda s: None)      # round 0 not pulled: nothing new
    assert again["added"] == 0 and again["already"] == 27

    on_server = _tasks_on_server(label_studio, run)
    uids = Counter(t["data"]["uid"] for t in on_server)
    assert set(uids.values()) == {1} and len(uids) == 27 == len(ledger)
    by_uid = {t["data"]["uid"]: t for t in on_server}
    for uid, tid in labelled.items():          # labelled tasks untouched, their annotations kept
        assert by_uid[uid]["id"] == tid
    assert {a["id"] for t in on_server for a in t["annotations"]} == made
    assert all(t["total_predictions"] == 0 for t in on_server)      # nothing pre-filled by default


def test_wrong_token_is_a_clear_error(label_studio, tmp_path_factory, monkeypatch):
    run = make_run(tmp_path_factory.mktemp("runs") / "token", per_group=1)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-the-token-0123456789")
    cfg = config.load(run)
    with pytest.raises(UserError) as err:
        sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    assert "refused the API token from the LABEL_STUDIO_API_KEY environment variable" in str(err.value)
    assert "not-the-token" not in str(err.value)
    proc = subprocess.run([os.path.join(os.path.dirname(os.sys.executable), "counteranimal"), "annotate", "push",
                           str(run)], capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 2 and "HTTP 401" in proc.stderr and "Traceback" not in proc.stderr
    assert "not-the-token" not in proc.stdout + proc.stderr


def test_tasks_deleted_by_hand_are_reported_and_annotations_kept(label_studio, tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "deleted", per_group=1, overlap=1, calibration_share=0.0)
    cfg = config.load(run)
    sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    ledger = sync.read_ledger(run).to_pylist()
    alice = label_studio.annotator("alice@example.org")
    for t in ledger:
        _annotate(alice, t["task_id"], t["gold_background"])
    pull.pull(run, cfg, _conn(cfg), say=lambda s: None)
    admin = label_studio.admin()
    gone = ledger[:2]
    for t in gone:
        admin.tasks.delete(id=t["task_id"])

    report = pull.status(run, cfg, _conn(cfg))
    assert report["deleted_by_hand"] == sorted(t["uid"] for t in gone)
    summary = pull.pull(run, cfg, _conn(cfg), say=lambda s: None)
    assert summary["kept_from_deleted_tasks"] == 2 and summary["deleted_by_hand"] == 2
    raw = schemas.read(run / "annotation" / "annotations.parquet", "annotations").to_pylist()
    assert len(raw) == len(ledger)
    assert {r["uid"] for r in raw if not r["on_server"]} == {t["uid"] for t in gone}
    verdicts = {r["uid"]: r["status"] for r in pull.read_verdicts(run).to_pylist()}
    assert all(verdicts[t["uid"]] == "verified" for t in gone)     # their votes still count

    counts = sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    assert counts["recreated"] == 2 and counts["added"] == 2


def test_label_studio_command_reports_status(label_studio):
    exe = os.path.join(os.path.dirname(os.sys.executable), "counteranimal")
    proc = subprocess.run([exe, "label-studio", "status"], capture_output=True, text=True)
    assert proc.returncode == 0 and label_studio.url in proc.stdout
    token = server.token_path(label_studio.home).read_text().strip()
    assert token not in proc.stdout + proc.stderr
    assert oct(server.token_path(label_studio.home).stat().st_mode & 0o777) == "0o600"


# -- the labeling page in a real browser ---------------------------------------------------------

class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe: CDP as NUL-terminated JSON on fds 3/4."""

    def __init__(self, exe: str):
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="cdp-")

        def child():
            a, b = os.dup(r_in), os.dup(w_out)   # move out of the way of fds 3 and 4 first
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "--window-size=1280,900", "about:blank"],
            close_fds=False, preexec_fn=child, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r_in)
        os.close(w_out)
        self.w = os.fdopen(w_in, "wb", buffering=0)
        self.r = os.fdopen(r_out, "rb", buffering=0)
        self.buf, self.next_id = b"", 0

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = self.r.read(65536)
                if not chunk:
                    raise RuntimeError("chromium closed the debugging pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def close(self):
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def _login_cookies(url, email, password):
    import httpx
    with httpx.Client(base_url=url, follow_redirects=False) as c:
        page = c.get("/user/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        r = c.post("/user/login/", data={"csrfmiddlewaretoken": csrf, "email": email, "password": password},
                   headers={"Referer": f"{url}/user/login/"})
        assert r.status_code in (302, 303), f"login failed: HTTP {r.status_code}"
        return [{"name": k, "value": v, "url": url} for k, v in c.cookies.items()]


def test_labeling_page_renders_the_image_in_chromium(label_studio, tmp_path_factory):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium is not installed (`apt-get install -y chromium`; `make test` does it)")
    run = make_run(tmp_path_factory.mktemp("runs") / "browser", per_group=1, calibration_share=0.0)
    cfg = config.load(run)
    sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    task = sync.read_ledger(run).to_pylist()[0]
    project = json.loads((run / "annotation" / "project.json").read_text())["project_id"]
    cookies = _login_cookies(label_studio.url, server.ADMIN,
                             server.password_path(label_studio.home).read_text().strip())
    browser = Chromium(exe)
    try:
        browser.send("Storage.setCookies", {"cookies": cookies})
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.navigate", {"url": f"{label_studio.url}/projects/{project}/data?task={task['task_id']}"},
                     session=page)
        # The labeling form is up when the question shows. Its image element is the large one; Label
        # Studio fetches the task's URL and shows it through a blob: URL, so the fetch is checked too.
        probe = ("(() => { const q = %s, want = %s;"
                 " if (!document.body || !document.body.innerText.includes(q)) return null;"
                 " const img = [...document.querySelectorAll('img')].find(i => i.getBoundingClientRect().width > 300);"
                 " const got = performance.getEntriesByType('resource').find(e => e.name.includes(want));"
                 " return img ? JSON.stringify({complete: img.complete, w: img.naturalWidth,"
                 "  fetched: got ? got.name : null, status: got ? got.responseStatus : null}) : null; })()"
                 ) % (json.dumps(lsconfig.question(task["class_name"])), json.dumps("images/" + task["image"]))
        found, deadline = None, time.monotonic() + 90
        while time.monotonic() < deadline:
            value = browser.send("Runtime.evaluate", {"expression": probe, "returnByValue": True},
                                 session=page)["result"].get("value")
            found = json.loads(value) if value else None
            if found and found["complete"] and found["w"] > 0:
                break
            time.sleep(1)
        shot = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, session=page)["data"])
    finally:
        browser.close()
    (run / "annotation" / "labeling-page.png").write_bytes(shot)   # kept with the test's run for a look
    assert found and found["complete"] and found["w"] == 96, f"labeling image not loaded: {found}"
    assert "/data/local-files/?d=" in found["fetched"] and found["status"] == 200
    from PIL import Image, ImageStat
    img = Image.open(io.BytesIO(shot)).convert("L")
    assert max(ImageStat.Stat(img).stddev) > 10 and len(img.getcolors(1 << 16) or []) > 20   # not blank
