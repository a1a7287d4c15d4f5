"""Which browser and build a job is pinned to at submit (coordinator/submit.py choose_browser).

Pure: an inventory file, the capability labels the hosts' probes gave, the settings submitted.
The farm path with real hosts is in tests/test_multihost.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from renderd.config import Inventory, load_inventory
from renderd.coordinator.hostcheck import capabilities
from renderd.coordinator.submit import choose_browser, waiting_reason
from renderd.settings import RenderSettings

SHELL_156 = capabilities(
    {"headless_shell": "/usr/bin/chromium-headless-shell", "headless_shell_version": "Chromium 156.0.8078.114",
     "chromium_version": "Chromium 156.0.8078.114 built on Debian GNU/Linux 12 (bookworm)"}
)  # fmt: skip
CHROMIUM_155 = capabilities({"chromium_version": "Chromium 155.0.7000.1 built on Debian"})
CHROMIUM_156 = capabilities({"chromium_version": "Chromium 156.0.8078.114 built on Debian"})


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "hosts.toml"
    path.write_text(
        "".join(f'[[hosts]]\nname = "{n}"\naddress = "127.0.0.{i + 2}"\n' for i, n in enumerate(("a", "b", "c")))
        + 'labels = ["gpu"]\n'
    )
    return load_inventory(path)


def test_capabilities_name_the_shell_and_each_build() -> None:
    assert SHELL_156 == {"browser=headless-shell", "headless-shell=156.0.8078.114", "chromium=156.0.8078.114"}
    assert CHROMIUM_155 == {"chromium=155.0.7000.1"}
    assert capabilities({}) == frozenset()


def test_auto_takes_the_shell_only_when_every_fitting_host_has_it(inventory: Inventory) -> None:
    auto = RenderSettings(browser="auto")
    everyone = {"a": SHELL_156, "b": SHELL_156, "c": SHELL_156}
    settings, require = choose_browser(auto, (), inventory, everyone)
    assert settings.browser == "headless-shell"
    assert require == ("browser=headless-shell", "headless-shell=156.0.8078.114")
    # One host without a shell: Chromium screenshots for the whole job, pinned to the usual build.
    settings, require = choose_browser(auto, (), inventory, {**everyone, "b": CHROMIUM_156})
    assert (settings.browser, require) == ("chromium", ("chromium=156.0.8078.114",))
    # ... unless that host cannot take the job anyway (c alone carries gpu).
    settings, require = choose_browser(auto, ("gpu",), inventory, {**everyone, "b": CHROMIUM_156})
    assert (settings.browser, require) == (
        "headless-shell",
        ("gpu", "browser=headless-shell", "headless-shell=156.0.8078.114"),
    )


def test_the_build_most_hosts_run_is_pinned_and_a_tie_takes_the_newest(inventory: Inventory) -> None:
    chromium = RenderSettings(browser="chromium")
    _s, require = choose_browser(chromium, (), inventory, {"a": CHROMIUM_155, "b": CHROMIUM_155, "c": SHELL_156})
    assert require == ("chromium=155.0.7000.1",)
    _s, require = choose_browser(chromium, (), inventory, {"a": CHROMIUM_155, "c": SHELL_156})
    assert require == ("chromium=156.0.8078.114",)
    # Nothing probed yet: nothing to pin; an explicit --chromium PATH pins nothing either.
    assert choose_browser(chromium, (), inventory, {})[1] == ()
    explicit = RenderSettings(chromium="/opt/chrome/headless_shell")
    assert choose_browser(explicit, (), inventory, {"a": SHELL_156}) == (explicit, ())


def test_a_shell_job_no_host_can_take_says_so_in_one_line(inventory: Inventory) -> None:
    caps = {"a": CHROMIUM_156, "b": CHROMIUM_156, "c": CHROMIUM_156}
    _s, require = choose_browser(RenderSettings(browser="headless-shell"), (), inventory, caps)
    assert require == ("browser=headless-shell",)
    why = waiting_reason(require, inventory, caps=caps)
    assert why == (
        "no host has chromium-headless-shell (the job's browser, chosen at submit; `renderd hosts check` "
        "shows each host's; hosts: a[], b[], c[gpu])"
    )
    # A pinned build no host runs any more (all upgraded mid-job), with a label: said in words.
    why = waiting_reason(("gpu", "chromium=155.0.7000.1"), inventory, caps=caps)
    assert why is not None and why.startswith("no host carrying label(s) gpu has Chromium 155.0.7000.1 (")
    assert waiting_reason(("gpu", "chromium=156.0.8078.114"), inventory, {"a"}, caps=caps) == (
        "every host carrying label(s) gpu is drained, quarantined or down: c"
    )
