"""Chromium has no network: a composition cannot reach services on the render host by any protocol.

Real listeners (TCP and UDP on 127.0.0.1, a DNS server on a loopback address that a private
/etc/resolv.conf names) must see nothing while `renderd render` renders a composition that tries
every way out a page has: fetch, XHR, WebSocket, WebRTC with STUN/TURN (UDP and TCP), beacons,
WebTransport, images, CSS, fonts, iframes, workers, service workers, import(), EventSource and DNS.
The page also paints one square per attempt, red when the page saw it succeed.

A control run shows the page is a real attack: the same page in a Chromium launched as renderd
launched it before confinement (host network, request routing only) does reach the listeners.
Runs as root (CI) and as a throwaway unprivileged user (tests/users.py), through `renderd render`
and through a daemon to which that user submits; the kernel's view (namespaces, seccomp,
capabilities of Chromium's processes) is checked too.
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, renderd_cmd, run_renderd
from daemonctl import Daemon
from users import ThrowawayUser
from videotools import close, decode_frames, pixel

from renderd.engine import sandbox
from renderd.engine.browser import chromium_args

pytestmark = pytest.mark.browser

SIZE = 160
SQUARE = 20
GREEN = (0, 255, 0)
RED = (255, 0, 0)
DNS_ADDRESS = "127.0.0.153"
# Attempts that request routing never saw, so they reached the listeners before confinement (the
# control test checks that they still would without it): the non-HTTP ones, and a cross-origin
# iframe's navigation, which Playwright's page.route does not intercept.
ESCAPES_ROUTING = ("websocket", "worker-ws", "iframe", "stun-udp", "turn-udp", "turn-tcp", "dns")

TCP_VECTORS = (
    "fetch", "xhr", "websocket", "beacon", "img", "css", "font", "iframe", "worker-fetch", "worker-ws",
    "service-worker", "import", "eventsource", "turn-tcp",
)  # fmt: skip
UDP_VECTORS = ("stun-udp", "turn-udp", "webtransport")


class Listeners:
    """TCP and UDP sockets on loopback, one per attempt, that record every contact from a thread."""

    def __init__(self, dns: bool) -> None:
        self.ports: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        self._socks: dict[socket.socket, tuple[str, bool]] = {}
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        for name in TCP_VECTORS:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            self._add(name, s, tcp=True)
        for name in UDP_VECTORS:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            self._add(name, s, tcp=False)
        if dns:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((DNS_ADDRESS, 53))
            self._add("dns", s, tcp=False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _add(self, name: str, s: socket.socket, *, tcp: bool) -> None:
        s.setblocking(False)
        self.ports[name] = s.getsockname()[1]
        self._socks[s] = (name, tcp)
        self._sel.register(s, selectors.EVENT_READ)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                name, tcp = self._socks[sock]
                try:
                    if tcp:
                        conn, _ = sock.accept()
                        conn.close()
                    else:
                        sock.recvfrom(65536)
                except OSError:
                    continue
                with self._lock:
                    self.seen[name] = self.seen.get(name, 0) + 1

    def contacts(self) -> dict[str, int]:
        """Return how often each attempt reached its listener so far."""
        with self._lock:
            return dict(self.seen)

    def close(self) -> None:
        """Stop the thread and close every socket."""
        self._stop.set()
        self._thread.join(5)
        for s in self._socks:
            s.close()


ATTACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<style>
  html, body { margin: 0; width: 160px; height: 160px; background: #000; overflow: hidden; }
  .sq { position: absolute; width: 20px; height: 20px; background: #808080; }
  #css { position: absolute; left: 0; top: 150px; width: 4px; height: 4px; }
</style></head>
<body><div id="css"></div>
<script>
const P = PORTS;
const NAMES = NAMES_JSON;
const H = "http://127.0.0.1:";
function settle(p, ms) {
  return Promise.race([Promise.resolve().then(p).then(ok => !!ok, () => false),
                       new Promise(r => setTimeout(() => r(false), ms || 3000))]);
}
function evented(make, good, bad) {
  return new Promise(resolve => {
    let o;
    try { o = make(); } catch (e) { resolve(false); return; }
    o[good] = () => resolve(true);
    o[bad] = () => resolve(false);
  });
}
function worker(code) {
  return new Promise(resolve => {
    try {
      const w = new Worker(URL.createObjectURL(new Blob([code], {type: "text/javascript"})));
      w.onmessage = e => resolve(e.data === 1);
      w.onerror = () => resolve(false);
    } catch (e) { resolve(false); }
  });
}
async function ice(server) {
  const pc = new RTCPeerConnection({iceServers: [server]});
  const types = [];
  pc.onicecandidate = e => { if (e.candidate) types.push(e.candidate.type); };
  pc.createDataChannel("x");
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r();
                           setTimeout(r, 4000); });
  pc.close();
  return types.includes("srflx") || types.includes("relay");
}
const TURN = {username: "u", credential: "p"};
const ATTEMPTS = {
  "fetch": () => fetch(H + P.fetch + "/", {mode: "no-cors"}).then(() => true),
  "xhr": () => evented(() => { const x = new XMLHttpRequest(); x.open("GET", H + P.xhr + "/"); x.send(); return x; },
                       "onload", "onerror"),
  "websocket": () => evented(() => new WebSocket("ws://127.0.0.1:" + P.websocket + "/"), "onopen", "onerror"),
  "beacon": () => { navigator.sendBeacon(H + P.beacon + "/", "x"); return false; },
  "img": () => evented(() => { const i = new Image(); i.src = H + P.img + "/i.png"; return i; }, "onload", "onerror"),
  // Set from script: a url() in the style sheet would be fetched by `renderd prepare` (renderd
  // itself, not Chromium) when the daemon stages the job.
  "css": () => { document.getElementById("css").style.backgroundImage = `url(${H}${P.css}/bg.png)`; return false; },
  "font": () => new FontFace("leak", "url(" + H + P.font + "/f.woff2)").load().then(() => true),
  "iframe": () => { const f = document.createElement("iframe"); f.src = H + P.iframe + "/";
                    f.style.display = "none"; document.body.appendChild(f); return false; },
  "worker-fetch": () => worker("fetch('" + H + P["worker-fetch"] + "/', {mode: 'no-cors'})" +
                               ".then(() => postMessage(1), () => postMessage(0))"),
  "worker-ws": () => worker("const s = new WebSocket('ws://127.0.0.1:" + P["worker-ws"] + "/');" +
                            "s.onopen = () => postMessage(1); s.onerror = () => postMessage(0);"),
  "service-worker": () => navigator.serviceWorker.register(H + P["service-worker"] + "/sw.js").then(() => true),
  "import": () => import(H + P.import + "/m.js").then(() => true),
  "eventsource": () => evented(() => new EventSource(H + P.eventsource + "/"), "onopen", "onerror"),
  "stun-udp": () => ice({urls: "stun:127.0.0.1:" + P["stun-udp"]}),
  "turn-udp": () => ice({urls: "turn:127.0.0.1:" + P["turn-udp"] + "?transport=udp", ...TURN}),
  "turn-tcp": () => ice({urls: "turn:127.0.0.1:" + P["turn-tcp"] + "?transport=tcp", ...TURN}),
  "webtransport": () => new WebTransport("https://127.0.0.1:" + P.webtransport + "/").ready.then(() => true),
  "dns": () => Promise.all([
    evented(() => new WebSocket("ws://renderd-leak-" + Date.now() + ".example.com:81/"), "onopen", "onerror"),
    ice({urls: "stun:renderd-stun-leak.example.com:3478"}),
  ]).then(r => r.includes(true)),
};
const outcome = {};
// renderd waits for the hook's ready promise: every attempt has settled before frame 0 is taken.
const done = Promise.all(NAMES.map((name, i) => settle(ATTEMPTS[name], 6000).then(ok => {
  outcome[name] = ok;
  const d = document.createElement("div");
  d.className = "sq";
  d.style.left = (i % 8) * 20 + "px";
  d.style.top = Math.floor(i / 8) * 20 + "px";
  d.style.background = ok ? "#ff0000" : "#00ff00";
  document.body.appendChild(d);
}))).then(() => { window.__outcome = outcome; });
window.__renderd = {width: 160, height: 160, fps: 10, duration: 0.2, seek: function () {}, ready: done};
</script></body></html>
"""


def write_attack(directory: Path, listeners: Listeners) -> list[str]:
    """Write the attack composition aimed at ``listeners``; return the attempts in square order."""
    names = [*TCP_VECTORS, *UDP_VECTORS, "dns"]
    ports = {**listeners.ports}
    html = ATTACK_PAGE.replace("PORTS", json.dumps(ports)).replace("NAMES_JSON", json.dumps(names))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text(html)
    return names


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    """Listeners for every attempt; the DNS one only where a private resolv.conf can be mounted."""
    ls = Listeners(dns=os.geteuid() == 0 and shutil.which("unshare") is not None)
    try:
        yield ls
    finally:
        ls.close()


@pytest.fixture
def listeners_without_dns() -> Iterator[Listeners]:
    """Listeners for every attempt but DNS (for a daemon, which resolves with the host's resolver)."""
    ls = Listeners(dns=False)
    try:
        yield ls
    finally:
        ls.close()


def with_private_resolver(argv: list[str], work: Path) -> list[str]:
    """Wrap ``argv`` in a mount namespace whose /etc/resolv.conf names the test's DNS listener."""
    if os.geteuid() != 0:
        return argv
    resolv = work / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_ADDRESS}\noptions timeout:1 attempts:1\n")
    resolv.chmod(0o644)
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "--mount", "--", "sh", "-c", script, str(resolv), *argv]


def check_render(out: Path, names: list[str], listeners: Listeners) -> None:
    """Assert that no listener was reached and that the page saw every attempt fail."""
    assert listeners.contacts() == {}, f"Chromium reached listeners on the host: {listeners.contacts()}"
    frame = decode_frames(out, SIZE, SIZE)[0]
    red = []
    for i, name in enumerate(names):
        rgb = pixel(frame, SIZE, (i % 8) * SQUARE + SQUARE // 2, (i // 8) * SQUARE + SQUARE // 2)
        if close(rgb, RED, 60):
            red.append(name)
        else:
            assert close(rgb, GREEN, 60), f"{name}: square is {rgb}, neither green nor red (page did not finish)"
    assert red == [], f"the page saw these attempts succeed: {red}"


def render(argv_prefix: list[str], comp: Path, out: Path, work: Path, env: dict[str, str] | None = None) -> None:
    """Render the attack composition with ``renderd render`` started by ``argv_prefix``."""
    # --no-prepare: `renderd prepare` downloads a composition's remote URLs from renderd itself
    # (outside Chromium; only from public addresses, see test_confinement_prepare.py), which is
    # not what this test is about.
    render_args = ["render", str(comp), "-o", str(out), "--workers", "1", "--no-prepare"]
    argv = with_private_resolver([*argv_prefix, *render_args], work)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=ROOT, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    assert "WITH THE HOST'S NETWORK" not in r.stderr, r.stderr


def test_render_reaches_nothing_on_the_host(listeners: Listeners, short_tmp: Path) -> None:
    names = write_attack(short_tmp / "comp", listeners)
    out = short_tmp / "out.mp4"
    render(renderd_cmd()[:1], short_tmp / "comp", out, short_tmp)
    check_render(out, names, listeners)


@pytest.fixture
def unprivileged(request: pytest.FixtureRequest) -> ThrowawayUser | None:
    """The throwaway user when the tests run as root; None when they already run unprivileged."""
    if os.geteuid() != 0:
        return None
    user: ThrowawayUser = request.getfixturevalue("throwaway_user")
    return user


def test_render_as_unprivileged_user_reaches_nothing_and_keeps_the_sandbox(
    listeners: Listeners, short_tmp: Path, unprivileged: ThrowawayUser | None
) -> None:
    names = write_attack(short_tmp / "comp", listeners)
    home = short_tmp / "home"
    home.mkdir()
    out_dir = short_tmp / "out"
    out_dir.mkdir()
    if unprivileged is None:
        prefix = renderd_cmd()[:1]
    else:
        for directory in (home, out_dir):
            os.chown(directory, unprivileged.uid, unprivileged.gid)
        prefix = unprivileged.renderd_argv(env={"HOME": str(home)})
    probe = subprocess.run([*prefix, "agent", "--probe"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert '"network": "none"' in probe.stdout and '"chromium_sandbox": true' in probe.stdout, probe.stdout
    render(prefix, short_tmp / "comp", out_dir / "out.mp4", short_tmp)
    check_render(out_dir / "out.mp4", names, listeners)


def test_daemon_job_reaches_nothing_on_the_host(
    listeners_without_dns: Listeners, short_tmp: Path, unprivileged: ThrowawayUser | None
) -> None:
    """An unprivileged user submits the attack to a daemon: the describing agent and local workers are confined."""
    comp = short_tmp / "comp"
    names = write_attack(comp, listeners_without_dns)
    out_dir = short_tmp / "out"
    out_dir.mkdir()
    out = out_dir / "out.mp4"
    daemon = Daemon(short_tmp, slots=1)
    submit = ("submit", comp, "-o", out, "--wait", "--socket", daemon.socket)
    if unprivileged is None:
        daemon.start()
    else:
        # The submitter's own composition and output directory; the daemon (root) writes the
        # video only where that uid could.
        for path in (comp, comp / "index.html", out_dir):
            os.chown(path, unprivileged.uid, unprivileged.gid)
        daemon.allow_uids(unprivileged.uid)
        daemon.start(socket_mode="0666")
    try:
        if unprivileged is None:
            r = run_renderd(*submit, timeout=240)
        else:
            r = unprivileged.renderd(*submit, timeout=240)
        assert r.returncode == 0, r.stderr + daemon.log.read_text()[-2000:]
    finally:
        daemon.stop()
    assert "WITH THE HOST'S NETWORK" not in daemon.log.read_text()
    if unprivileged is not None:
        assert os.stat(out).st_uid == unprivileged.uid
    check_render(out, [n for n in names if n != "dns"], listeners_without_dns)


def test_agent_probe_reports_the_confinement() -> None:
    r = subprocess.run([*renderd_cmd("agent", "--probe")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)["confinement"]
    # This machine can make namespaces (the render tests above depend on it): root gets a user
    # namespace in which Chromium is not uid 0, so its sandbox stays on.
    assert facts == {"network": "none", "method": "userns+netns", "chromium_sandbox": True, "problem": None}


def path_without_unshare(directory: Path) -> str:
    """Return a PATH with what a render needs but util-linux's unshare, as on a host without it."""
    directory.mkdir()
    for tool in ("ffmpeg", "ffprobe", "sh"):
        found = shutil.which(tool)
        assert found
        (directory / tool).symlink_to(found)
    return str(directory)


def test_without_a_namespace_one_loud_warning(short_tmp: Path) -> None:
    comp = ROOT / "tests" / "fixtures" / "frame-index-hook"
    env = {**os.environ, "PATH": path_without_unshare(short_tmp / "bin")}
    env.pop(sandbox.POLICY_ENV, None)
    argv = renderd_cmd("render", comp, "-o", short_tmp / "out.mp4", "--frames", "0:4", "--workers", "2")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "WITH THE HOST'S NETWORK" in line]
    assert len(warnings) == 1, r.stderr
    assert "WARNING" in warnings[0] and "'unshare' is not installed" in warnings[0], warnings
    probe = subprocess.run(renderd_cmd("agent", "--probe"), capture_output=True, text=True, timeout=60, env=env)
    assert json.loads(probe.stdout)["confinement"]["network"] == "HOST NETWORK", probe.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a noexec tmpfs in a mount namespace needs root")
def test_noexec_temp_dir_puts_the_wrapper_elsewhere_or_says_so(short_tmp: Path) -> None:
    """Hardened hosts mount /tmp noexec: the wrapper goes to ~/.cache, or one error line names TMPDIR."""
    comp = ROOT / "tests" / "fixtures" / "frame-index-hook"
    noexec = short_tmp / "noexec"
    noexec.mkdir()
    home = short_tmp / "home"
    home.mkdir()
    script = 'mount -t tmpfs -o noexec,size=8m tmpfs "$0" && exec "$@"'
    for home_dir, ok in ((home, True), (noexec, False)):
        out = short_tmp / f"out-{ok}.mp4"
        argv = ["unshare", "--mount", "--", "sh", "-c", script, str(noexec)]
        argv += renderd_cmd("render", comp, "-o", out, "--frames", "0:2")
        env = {**os.environ, "TMPDIR": str(noexec), "HOME": str(home_dir)}
        env.pop("XDG_RUNTIME_DIR", None)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
        if ok:
            assert r.returncode == 0, r.stderr
            assert "WARNING" not in r.stderr, r.stderr
        else:
            assert r.returncode != 0
            assert r.stderr.startswith("renderd: error: no directory allows executing Chromium's"), r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_require_refuses_to_render_unconfined(short_tmp: Path) -> None:
    """With RENDERD_CONFINEMENT=require and no way to make a namespace, nothing renders."""
    comp = ROOT / "tests" / "fixtures" / "frame-index-hook"
    env = {**os.environ, "PATH": path_without_unshare(short_tmp / "bin"), sandbox.POLICY_ENV: "require"}
    argv = renderd_cmd("render", comp, "-o", short_tmp / "out.mp4", "--frames", "0:2")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode != 0
    assert r.stderr.startswith("renderd: error: cannot confine Chromium to an empty network namespace"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (short_tmp / "out.mp4").exists()


async def test_control_the_page_escapes_routing_without_a_namespace(listeners: Listeners, short_tmp: Path) -> None:
    """The attack page, in Chromium launched as before confinement, reaches the non-HTTP listeners."""
    from playwright.async_api import Route, async_playwright

    from renderd.engine.page import ORIGIN

    write_attack(short_tmp / "comp", listeners)
    html = (short_tmp / "comp" / "index.html").read_bytes()
    chromium = "/usr/bin/chromium"
    if "dns" in listeners.ports:
        chromium = str(short_tmp / "chromium")
        resolving = shlex.join(with_private_resolver(["/usr/bin/chromium"], short_tmp))
        Path(chromium).write_text(f'#!/bin/sh\nexec {resolving} "$@"\n')
        Path(chromium).chmod(0o755)

    async def route(r: Route) -> None:
        # As renderd's router: the composition's own origin is served, everything else refused.
        if r.request.url.startswith(ORIGIN):
            await r.fulfill(status=200, body=html, headers={"content-type": "text/html"})
        else:
            await r.abort("blockedbyclient")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, headless=True, args=chromium_args(False), chromium_sandbox=False
        )
        try:
            page = await browser.new_page()
            await page.route("**/*", route)
            await page.goto(f"{ORIGIN}/index.html")
            await page.wait_for_function("() => window.__outcome !== undefined", timeout=60000)
        finally:
            await browser.close()
    reached = listeners.contacts()
    print("control reached:", reached)
    expected = [v for v in ESCAPES_ROUTING if v != "dns" or "dns" in listeners.ports]
    assert sorted(v for v in expected if v not in reached) == [], f"reached only {reached}"
    assert sandbox.POLICY_ENV == "RENDERD_CONFINEMENT"


def _status(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


async def test_chromium_processes_have_no_network_and_renderers_are_sandboxed() -> None:
    """Read the kernel's view of renderd's Chromium: its network namespace and the renderers' seccomp."""
    import psutil
    from playwright.async_api import async_playwright

    from renderd.engine.browser import BrowserOptions, launch_browser

    ours = os.readlink("/proc/self/ns/net")
    async with async_playwright() as pw:
        browser = await launch_browser(pw, BrowserOptions())
        try:
            page = await browser.new_page()
            await page.set_content("<p>renderer</p>")
            # Descendants only (Playwright's driver is our child): other Chromiums may run here.
            cmdlines = {p.pid: " ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)}
            chromium = [pid for pid, cmd in cmdlines.items() if "chromium" in cmd]
            assert chromium, "no Chromium process found"
            nets = {os.readlink(f"/proc/{pid}/ns/net") for pid in chromium}
            assert ours not in nets, "a Chromium process shares the host's network namespace"
            renderers = [pid for pid in chromium if "--type=renderer" in cmdlines[pid]]
            assert renderers, [cmdlines[pid][:80] for pid in chromium]
            # Seccomp 2: a seccomp-BPF filter is installed, i.e. Chromium's own sandbox is on.
            assert [_status(pid, "Seccomp") for pid in renderers] == ["2"] * len(renderers)
            browser_procs = [pid for pid in chromium if "--type=" not in cmdlines[pid]]
            assert browser_procs and all(_status(pid, "CapEff") == "0000000000000000" for pid in browser_procs)
        finally:
            await browser.close()
