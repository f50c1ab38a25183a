"""Browser tests of the JavaScript client and the demo page, in headless Chromium.

Two browser sessions use the demo page of a real `snorky serve --workers 2 --demo` (its
own private redis-server): they chat with each other, see each other's presence, feed
posts and cursors, and keep working after the test kills (SIGKILL) the worker one of them
is connected to: that page reconnects, joins again, and everything still flows.

Needs Debian's `chromium` and `chromium-driver` and Python's `selenium` (requirements.txt);
scripts/test.sh installs them. Run from the repository root after `swift build`:

    python3 clients/js/tests/test_browser.py

SNORKY_BIN names the snorky executable (default .build/debug/snorky). A screenshot of the
demo page is saved to artifacts/demo.png.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPOSITORY = pathlib.Path(__file__).resolve().parents[3]
ARTIFACTS = REPOSITORY / "artifacts"
BACKEND_KEY = "browser-test-key"
# Generous: the machine running the tests may be busy.
TIMEOUT = 20
# The demo page's canvas is 640 x 400 CSS pixels.
CANVAS_SIZE = (640, 400)


def find_executable(*names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


class Cluster:
    """A `snorky serve` process group, its output, and the ports it listens on."""

    def __init__(self, executable, workers):
        environment = {key: value for key, value in os.environ.items() if not key.startswith("SNORKY_")}
        self.process = subprocess.Popen(
            [executable, "serve", "--workers", str(workers), "--demo", "--port", "0", "--backend-port", "0",
             "--backend-key", BACKEND_KEY, "--log-level", "info"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment,
            start_new_session=True, text=True)
        self.lines = []
        self.condition = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self.ws_port = int(self.wait_for_line(r"role=supervisor .*msg=listening .*ws=[\d.]+:(\d+)").group(1))
            self.backend_port = int(self.wait_for_line(r"role=supervisor .*msg=listening .*backend=[\d.]+:(\d+)").group(1))
            self.wait_for_line(r"cluster ready")
        except Exception:
            self.stop()
            raise
        self.base_url = f"http://127.0.0.1:{self.ws_port}"

    def _read(self):
        for line in self.process.stderr:
            with self.condition:
                self.lines.append(line.rstrip("\n"))
                self.condition.notify_all()
        with self.condition:
            self.condition.notify_all()

    def wait_for_line(self, pattern, after=0, timeout=30):
        """The first output line (printed already or to come) matching `pattern`."""
        expression = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                for line in self.lines[after:]:
                    match = expression.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None and not self.reader.is_alive():
                    raise AssertionError(f"no line matching {pattern!r}; last lines:\n" + self.recent())
                self.condition.wait(remaining)

    def recent(self, count=40):
        with self.condition:
            return "\n".join(self.lines[-count:])

    def stats_once(self):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.backend_port}/stats", headers={"X-Backend-Key": BACKEND_KEY})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def stats(self, workers=2, requests=400):
        """Every worker's `/stats` by slot. Each request is a new connection, which the
        kernel hashes to one worker slot, so enough requests reach every worker."""
        seen = {}
        for _ in range(requests):
            stats = self.stats_once()
            seen[int(stats["slot"])] = stats
            if len(seen) == workers:
                return seen
        raise AssertionError(f"only slots {sorted(seen)} answered /stats")

    def connections_by_slot(self):
        return {slot: stats["connections"] for slot, stats in self.stats().items()}

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.join(timeout=5)


def chromium():
    options = webdriver.ChromeOptions()
    options.binary_location = find_executable("chromium", "chromium-browser", "google-chrome")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1040", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=find_executable("chromedriver")), options=options)


class DemoPage:
    """One browser session on the demo page."""

    def __init__(self, driver, cluster, name):
        self.driver = driver
        self.cluster = cluster
        self.name = name

    def open(self):
        self.driver.get(f"{self.cluster.base_url}/?name={self.name}")
        self.wait(lambda: self.status()["state"] == "connected", "connected")
        # Pointer positions are only stable on a page that never scrolls (Chrome sends a
        # mousemove when the page scrolls under a still pointer).
        height, viewport = self.driver.execute_script(
            "return [document.documentElement.scrollHeight, window.innerHeight]")
        assert height <= viewport, f"the demo page ({height} px) is taller than the window ({viewport} px)"

    def wait(self, condition, description, timeout=TIMEOUT):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda _: condition())
        except TimeoutException:
            raise AssertionError(f"{self.name}: not {description} within {timeout} s; "
                                 f"status {self.status()}, events {self.texts('#events li')}") from None

    # The page redraws its lists as events arrive: each read is one script, so it never
    # holds an element the page has replaced since.

    def status(self):
        return self.driver.execute_script(
            "const d = document.getElementById('status').dataset;"
            "return {state: d.state, connections: d.connections, restorations: d.restorations};")

    def texts(self, selector):
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]), (e) => e.textContent);", selector)

    def members(self):
        return sorted(self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#members li'), (e) => e.dataset.name);"))

    def cursors(self):
        return [tuple(cursor) for cursor in self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#cursor-list li'),"
            " (e) => [e.dataset.owner, Number(e.dataset.x), Number(e.dataset.y)]);")]

    def say(self, text):
        self._submit("chat-input", text)

    def post(self, text):
        self._submit("feed-input", text)

    def _submit(self, input_id, text):
        field = self.driver.find_element(By.ID, input_id)
        field.clear()
        field.send_keys(text)
        field.submit()

    def point_at(self, x, y):
        """Moves the pointer to canvas coordinates (x, y)."""
        canvas = self.driver.find_element(By.ID, "canvas")
        ActionChains(self.driver).move_to_element_with_offset(
            canvas, x - CANVAS_SIZE[0] // 2, y - CANVAS_SIZE[1] // 2).perform()

    def wait_for_message(self, selector, text):
        self.wait(lambda: any(text in line for line in self.texts(selector)), f"showing {text!r} in {selector}")

    def wait_for_cursor(self, owner, x, y):
        """Exactly one cursor of `owner`, at (x, y) give or take a pixel of rounding."""
        def placed():
            mine = [cursor for cursor in self.cursors() if cursor[0] == owner]
            return len(mine) == 1 and abs(mine[0][1] - x) <= 1 and abs(mine[0][2] - y) <= 1
        self.wait(placed, f"showing {owner}'s cursor alone at ({x}, {y}) (cursors: {self.cursors()})")

    def browser_log(self):
        try:
            return "\n".join(entry["message"] for entry in self.driver.get_log("browser"))
        except WebDriverException:
            return "(no browser log)"


@unittest.skipUnless(find_executable("chromium", "chromium-browser", "google-chrome") and find_executable("chromedriver"),
                     "Chromium and chromedriver are not installed")
class DemoInTwoBrowsers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        executable = os.environ.get("SNORKY_BIN") or str(REPOSITORY / ".build" / "debug" / "snorky")
        if not os.access(executable, os.X_OK):
            raise unittest.SkipTest(f"no snorky executable at {executable}: run swift build first")
        cls.cluster = Cluster(executable, workers=2)
        cls.drivers = []
        try:
            cls.check_served_files_are_current()
            cls.drivers = [chromium(), chromium()]
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def check_served_files_are_current(cls):
        """The binary embeds clients/js at build time: testing an old build would test old code."""
        for path, source in (("/snorky.js", "snorky.js"), ("/snorky.mjs", "snorky.mjs"), ("/", "demo/index.html")):
            with urllib.request.urlopen(cls.cluster.base_url + path, timeout=10) as response:
                served = response.read().decode("utf-8")
            expected = (REPOSITORY / "clients" / "js" / source).read_text(encoding="utf-8")
            if served != expected:
                raise AssertionError(f"the snorky binary serves an older {source}: run scripts/embed-client.sh, then swift build")

    @classmethod
    def tearDownClass(cls):
        for driver in cls.drivers:
            driver.quit()
        cls.cluster.stop()

    def run(self, result=None):
        # When this test fails, show what the server and the browsers said.
        problems = len(result.failures) + len(result.errors) if result is not None else 0
        outcome = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > problems:
            sys.stderr.write("\n--- cluster output ---\n" + self.cluster.recent(80) + "\n")
            for driver in self.drivers:
                sys.stderr.write("--- browser console ---\n" + DemoPage(driver, self.cluster, "?").browser_log() + "\n")
        return outcome

    def test_client_is_served_as_plain_script_and_es_module(self):
        driver = self.drivers[0]
        driver.get(self.cluster.base_url + "/")  # the name form: nothing connects
        self.assertEqual(driver.execute_script("return typeof window.Snorky"), "function")
        imported = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            import("/snorky.mjs").then(
              (module) => done([module.default === module.Snorky, typeof module.default.PubSub, module.default.VERSION]),
              (error) => done(String(error)));
        """)
        self.assertEqual(imported, [True, "function", driver.execute_script("return Snorky.VERSION")])

    def test_two_browsers_chat_see_presence_and_cursors_and_survive_a_worker_kill(self):
        cluster = self.cluster
        alice = DemoPage(self.drivers[0], cluster, "alice")
        bob = DemoPage(self.drivers[1], cluster, "bob")

        # Alice alone: her WebSocket is the only connection, so the worker holding one
        # connection is hers.
        alice.open()
        alice.wait(lambda: cluster.connections_by_slot() in ({0: 1, 1: 0}, {0: 0, 1: 1}), "counted by a worker")
        stats = cluster.stats()
        alice_slot = next(slot for slot, each in stats.items() if each["connections"] == 1)
        alice_pid = int(stats[alice_slot]["pid"])

        # Bob on the other worker, so that everything between them crosses Redis: a new
        # page load is a new connection, which lands on a slot by its source port.
        bob.open()
        for _ in range(30):
            bob.wait(lambda: sum(cluster.connections_by_slot().values()) == 2, "counted by a worker")
            if cluster.connections_by_slot() == {0: 1, 1: 1}:
                break
            bob.open()
        self.assertEqual(cluster.connections_by_slot(), {0: 1, 1: 1}, "bob never reached the other worker")

        # Presence, chat, feed and cursors, both ways.
        alice.wait(lambda: alice.members() == ["alice", "bob"], "seeing bob present")
        bob.wait(lambda: bob.members() == ["alice", "bob"], "seeing alice present")
        alice.say("hello from alice")
        bob.wait_for_message("#messages li", "alice: hello from alice")
        bob.say("hi alice, bob here")
        alice.wait_for_message("#messages li", "bob: hi alice, bob here")
        bob.post("the feed works")
        alice.wait_for_message("#feed li", "bob: the feed works")
        alice.point_at(150, 90)
        bob.wait_for_cursor("alice", 150, 90)
        bob.point_at(420, 260)
        alice.wait_for_cursor("bob", 420, 260)

        # Kill Alice's worker outright: her page reconnects (the supervisor restarts the
        # slot, or the kernel hands her to the other worker) and restores chat, feed and
        # cursor; Bob, on the other worker, stays connected throughout.
        log_mark = len(cluster.lines)
        os.kill(alice_pid, signal.SIGKILL)
        cluster.wait_for_line(rf"slot={alice_slot} .*worker started", after=log_mark)
        alice.wait(lambda: alice.status()["connections"] == "2" and alice.status()["state"] == "connected", "reconnected")
        alice.wait(lambda: alice.status()["restorations"] == "1", "restored after reconnecting")
        self.assertIn("chat, feed and cursors restored", " ".join(alice.texts("#events li")))
        self.assertEqual(bob.status()["connections"], "1", "bob's connection should not have dropped")

        alice.wait(lambda: alice.members() == ["alice", "bob"], "seeing bob present after rejoining")
        bob.wait(lambda: bob.members() == ["alice", "bob"], "seeing alice present after her rejoin")
        alice.say("alice is back")
        bob.wait_for_message("#messages li", "alice: alice is back")
        bob.say("welcome back")
        alice.wait_for_message("#messages li", "bob: welcome back")
        bob.post("the feed survived")
        alice.wait_for_message("#feed li", "bob: the feed survived")
        alice.point_at(320, 200)
        # Her old cursor is reaped with the dead worker's state; the re-created one moves.
        bob.wait_for_cursor("alice", 320, 200)
        bob.point_at(60, 330)
        alice.wait_for_cursor("bob", 60, 330)

        # Alice's page after all that, for the README.
        ARTIFACTS.mkdir(exist_ok=True)
        alice.driver.execute_script("window.scrollTo(0, 0)")
        self.assertTrue(alice.driver.save_screenshot(str(ARTIFACTS / "demo.png")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
