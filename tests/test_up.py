"""End to end: `trialpath up` starts the real Temporal dev server and a worker, plays the demo,
finds it again on a second run, and stops every process it started (Ctrl-C included)."""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session
from temporalio.client import Client

from trialpath.core.contract import workflow_id_for
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import CsTask
from trialpath.operations.ports import free_port
from trialpath.operations.services import Services, port_open
from trialpath.operations.temporal import DATA_CONVERTER

pytestmark = pytest.mark.slow

TRIALPATH = str(Path(sys.executable).parent / "trialpath")


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TRIALPATH_DATA_DIR=str(tmp_path / "data"),
        TRIALPATH_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        TRIALPATH_TEMPORAL_UI_PORT=str(free_port()),
        TRIALPATH_API_PORT=str(free_port()),
        TRIALPATH_TASK_QUEUE="trialpath-e2e",
        COLUMNS="200",
    )
    return env


def run_up(
    env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [TRIALPATH, "up", *args],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        stop_tree(process)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def grpc_port(env: dict[str, str]) -> int:
    return int(env["TRIALPATH_TEMPORAL_ADDRESS"].rsplit(":", 1)[1])


async def count_trials(address: str) -> tuple[int, int, int, int]:
    client = await Client.connect(address, data_converter=DATA_CONVERTER)
    total = await client.count_workflows("WorkflowType='TrialWorkflow'")
    technical = await client.count_workflows("Persona='technical'")
    converted = await client.count_workflows("TrialStage='converted'")
    # The saved view of docs/support.md: trials with a support task nobody closed.
    attention = await client.count_workflows("NeedsAttention IN ('stalled', 'inactive')")
    return total.count, technical.count, converted.count, attention.count


@pytest.mark.takes(seconds=150)
def test_up_runs_the_demo_and_finds_it_again(up_env: dict[str, str]) -> None:
    # The demo's own clock (4 s a journey day), as `make run` plays it.
    first = run_up(up_env, "--exit-after-demo", "--population", "0", timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Temporal dev server started" in first.stdout
    assert "Demo results" in first.stdout
    for behaviour in ("activates on day 1", "converts mid-trial", "cancels on day 3"):
        assert behaviour in first.stdout
    assert "cancelled" in first.stdout and "converted" in first.stdout and "expired" in first.stdout
    assert "✓ 12 of 12 scripted users ended as their script says." in first.stdout
    assert "✗" not in first.stdout
    # The support queue the journeys opened: activated users who went quiet, at least.
    queue = re.search(r"Support queue: (\d+) open task\(s\)", first.stdout)
    assert queue is not None and int(queue.group(1)) >= 1, first.stdout
    assert "inactive_alert.1" in first.stdout and "/dashboard/tasks" in first.stdout
    # The calls of the demo's users, spread over the agents' slots.
    assert "Success calls by agent" in first.stdout
    assert not port_open("127.0.0.1", grpc_port(up_env)), "the dev server was left running"

    # Found again on another clock: each is checked on the clock it ran on. Then the synthetic
    # population plays, once the demo is over, so it cannot starve it.
    second = run_up(up_env, "--seconds-per-day", "2", "--exit-after-demo", "--population", "12")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "12 demo trials already exist" in second.stdout
    assert "✓ 12 of 12 scripted users ended as their script says." in second.stdout
    demo_over = second.stdout.index("12 of 12 scripted users")
    assert second.stdout.index("Now 12 synthetic trials play") > demo_over
    assert "Synthetic population played: 12 synthetic trials (12 new)" in second.stdout

    # The same server state, browsed as support staff would: 24 trials, searchable by persona
    # (the 12 showcase trials: 4 technical, 2 converted; and the synthetic ones).
    settings = Settings(
        data_dir=Path(up_env["TRIALPATH_DATA_DIR"]),
        temporal_address=up_env["TRIALPATH_TEMPORAL_ADDRESS"],
        temporal_ui_port=int(up_env["TRIALPATH_TEMPORAL_UI_PORT"]),
    )
    services = Services(settings)
    try:
        assert services.start_temporal()
        total, technical, converted, attention = asyncio.run(
            count_trials(settings.temporal_address)
        )
        assert total == 24 and technical >= 4 and converted >= 2
        assert attention >= 1
        # Histories made by this code on a real server replay with it (what to do before each
        # deploy: docs/versioning.md), every version of the journey they ran included.
        sampled = Path(up_env["TRIALPATH_DATA_DIR"]) / "sampled-histories"
        exported = subprocess.run(
            [TRIALPATH, "history", "sample", "--count", "10", "--out", str(sampled)],
            env=up_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert exported.returncode == 0, exported.stdout + exported.stderr
        files = sorted(sampled.glob("trial-*.json"))
        assert len(files) == 10, exported.stdout
        replayed = subprocess.run(
            [TRIALPATH, "history", "replay", *map(str, files)],
            env=up_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert replayed.stdout.count("ok ") == 10, replayed.stdout
    finally:
        services.stop_all()

    outbox = subprocess.run(
        [TRIALPATH, "outbox", "list", "--user", "demo-tech-cancel", "--json"],
        env=up_env,
        capture_output=True,
        text=True,
        check=True,
    )
    steps = {json.loads(line)["step"] for line in outbox.stdout.splitlines()}
    assert {"welcome/email", "welcome/in_app", "call_invite.1/email"} <= steps
    # Cancelled on day 3: nothing of the end-of-trial sequence.
    assert not any(step.startswith(("trial_ending", "winback")) for step in steps)


@pytest.mark.takes(seconds=80)
def test_a_scripted_user_that_does_not_end_as_scripted_fails_the_run(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    """The journey changed under the demo: technical users now need 20 API calls to
    activate, so the technical scripts (10 calls) no longer activate. The table says so per
    user and `--exit-after-demo` exits 1."""
    journey = (PROJECT_ROOT / "trialpath" / "journey.toml").read_text()
    stricter = journey.replace(
        "require = { integration_connected = 1, api_call = 10 }",
        "require = { integration_connected = 1, api_call = 20 }",
    )
    assert stricter != journey
    (tmp_path / "journey.toml").write_text(stricter)
    env = up_env | {"TRIALPATH_JOURNEY_FILE": str(tmp_path / "journey.toml")}
    # The demo's own clock (4 s a day): faster ones are not promised beside other heavy work.
    done = run_up(env, "--exit-after-demo", "--population", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[1]: line for line in done.stdout.splitlines() if "│ demo-" in line}
    for user in ("tech-day1", "tech-convert"):
        assert "✗ not activated, expected by day 2" in rows[f"demo-{user}"]
    assert "✗" not in rows["demo-biz-day1"] and "✓" in rows["demo-biz-day1"]
    assert "✗ 3 of 12 scripted users did not end as their script says" in done.stdout
    assert "3 scripted demo users did not end as their script says" in done.stderr
    assert not port_open("127.0.0.1", grpc_port(up_env)), "the dev server was left running"


def api_checks(env: dict[str, str]) -> None:
    """The API served by `up`, on the real dev server: visibility listing and erasure."""
    key = (Path(env["TRIALPATH_DATA_DIR"]) / "api-key").read_text().strip()
    base = f"http://127.0.0.1:{env['TRIALPATH_API_PORT']}/v1"
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
        assert api.get("/readyz").json() == {"status": "ready"}
        body = {
            "user_id": "e2e-1",
            "email": "e2e@example.com",
            "name": "Grace Hopper",
            "qualification": {"role": "executive", "urgency": "this_week"},
        }
        assert api.post("/trials", json=body).status_code == 201
        found: list[dict[str, object]] = []
        for _ in range(50):  # visibility is eventually consistent
            found = api.get("/trials", params={"persona": "executive"}).json()["items"]
            if found:
                break
            time.sleep(0.2)
        assert [t["user_id"] for t in found] == ["e2e-1"]
        assert api.get("/trials", params={"persona": "technical"}).json()["items"] == []
        page = api.get("/trials", params={"page_size": 1}).json()
        assert len(page["items"]) == 1
        unsubscribe_link_works(Path(env["TRIALPATH_DATA_DIR"]), base, key)
        # Waits for Temporal to delete the history (about 30 s on the dev server; how it
        # settles is tested in tests/test_erasure.py).
        erased = api.delete("/trials/e2e-1", params={"erase": "true"}, timeout=150).json()
        assert (erased["cancelled"], erased["erased"]) == (True, True)
        assert erased["runs_deleted"] >= 1 and erased["erased_rows"]["trials"] == 1
        assert api.get("/trials/e2e-1").json()["stage"] == "cancelled"
    readme_curl_examples_work(base, key, Path(env["TRIALPATH_DATA_DIR"]))


def unsubscribe_link_works(data_dir: Path, base: str, key: str) -> None:
    """The one-click link in a real marketing email (written by the worker) points at this
    API, and following it unsubscribes the user."""
    path = data_dir / "outbox" / "trial-e2e-1_welcome_email.eml"
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    header = email.message_from_bytes(path.read_bytes())["List-Unsubscribe"]
    url = header.strip("<>")
    assert url.startswith(f"{base}/unsubscribe/"), url
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "<form method=post" in page.text
    done = httpx.post(url, content="List-Unsubscribe=One-Click", timeout=10)
    assert done.status_code == 200, done.text
    prefs = httpx.get(
        f"{base}/users/e2e-1/preferences", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert prefs["email"]["subscribed"] is False and prefs["email"]["source"] == "link"


def curl_blocks() -> list[str]:
    """The README's shell blocks that use curl against the API, in order."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    return [b for b in blocks if "curl" in b and "$API" in b]


def run_curl(block: str, base: str, key: str) -> list[int]:
    """Runs a README block as written, printing only each request's HTTP status."""
    script = re.sub(r"^curl ", "curl -s -o /dev/null -w '%{http_code}\\n' ", block, flags=re.M)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**os.environ, "API": base, "KEY": key},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [int(code) for code in done.stdout.split()]


def readme_python_example_works(base: str, key: str) -> None:
    """The README's five-line client example, run as written against the live API."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    code = snippet.replace('"http://127.0.0.1:8000"', repr(base.removesuffix("/v1")))
    code = code.replace('api_key="..."', f"api_key={key!r}").replace("user-42", "user-py")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("qualifying", "onboarding")


def readme_curl_examples_work(base: str, key: str, data_dir: Path) -> None:
    main, conversion, inbox, tasks, guidance = curl_blocks()
    # The example books the call on a fixed date, which the API refuses once it is past:
    # the same request, tomorrow.
    booked = re.search(r'"at": "([^"]+)"', main)
    assert booked is not None
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
    main = main.replace(booked.group(1), tomorrow)
    codes = run_curl(main, base, key)
    assert len(codes) == main.count("\ncurl") + main.startswith("curl")
    assert codes[0] == 201 and all(200 <= c < 300 for c in codes), codes
    readme_python_example_works(base, key)
    # Conversion, for another user started the same way.
    start = next(c for c in ("curl" + p for p in main.split("\ncurl")[1:]) if "$API/trials " in c)
    assert run_curl(start.replace("user-42", "user-43"), base, key) == [201]
    assert run_curl(conversion.replace("user-42", "user-43"), base, key) == [202]
    # The inbox block, with a real message id of that user.
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 30
    items: list[dict[str, object]] = []
    while not items and time.monotonic() < deadline:
        page = httpx.get(f"{base}/users/user-43/inbox", headers=headers, timeout=10)
        items = page.json()["items"]
        time.sleep(0.5)
    assert items, "user-43 never got an in-app message"
    block = inbox.replace("user-42", "user-43").replace("MESSAGE_ID", str(items[0]["id"]))
    assert run_curl(block, base, key) == [200, 200, 200]
    # The in-app guidance block: the checklist and a widget token.
    assert run_curl(guidance.replace("user-42", "user-43"), base, key) == [200, 200]
    # The support queue block, on a task of user-43 (as the journey opens one).
    task = f"{workflow_id_for('user-43')}:support_alert.1"
    with Session(make_engine(Settings(data_dir=data_dir).effective_database_url)) as session:
        session.add(
            CsTask(key=task, user_id="user-43", workflow_id=workflow_id_for("user-43"),
                   reason="no key action since the stall nudge", owner="Camille")
        )  # fmt: skip
        session.commit()
    block = tasks.replace("owner=Camille", "owner=Camille&user_id=user-43").replace("TASK", task)
    assert run_curl(block, base, key) == [200, 200, 200, 200]


@pytest.mark.takes(seconds=75)
def test_ctrl_c_stops_every_process(up_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [TRIALPATH, "up", "--no-demo"],
        env=up_env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Press Ctrl-C" in line or not line:
                break
        assert any("Press Ctrl-C" in line for line in lines), "".join(lines)
        assert port_open("127.0.0.1", grpc_port(up_env))
        ui = f"http://127.0.0.1:{up_env['TRIALPATH_TEMPORAL_UI_PORT']}/"
        with urllib.request.urlopen(ui, timeout=10) as response:
            assert response.status == 200
            assert b"<html" in response.read()
        children = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 3  # dev server, worker and API
        api_checks(up_env)
        # While it runs, the developer's starter script drives one trial through it.
        starter = subprocess.run(
            [sys.executable, "starter.py", "dev-starter"],
            env=up_env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert starter.returncode == 0, starter.stderr
        assert "qualified: persona technical" in starter.stdout
        assert '"integration_connected": 1' in starter.stdout
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # where each thread of `up` is stuck
            time.sleep(2)
            process.kill()
            out, _ = process.communicate()
            raise AssertionError(f"`up` did not stop within 60 s of Ctrl-C:\n{out}") from None
        assert process.returncode == 0, out
        assert "Stopped." in out
        assert not port_open("127.0.0.1", grpc_port(up_env))
        for pid in children:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
    finally:
        stop_tree(process)


def stop_tree(process: subprocess.Popen[str]) -> None:
    """Even when the test failed half-way: Ctrl-C lets `up` stop its services; anything still
    alive after that (services run in their own process groups) is killed by PID."""
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    for pid in map(int, children):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
