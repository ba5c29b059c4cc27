"""A newcomer's first approval, timed: `scripts/run` in a checkout, then exactly what its output and the
README say — open the printed dashboard link, sign in as the first approver with the printed password and
`licet demo-code EMAIL`, approve the waiting transfer (issue 18: within two minutes of the server answering).

    .venv/bin/python -P bench/newcomer.py               # this checkout (stops a server it started)
    .venv/bin/python -P bench/newcomer.py --checkout /work/fresh-clone

A script types faster than a person: the figures are the floor, and the steps printed are what a person
does by hand (each a copy from the terminal or a click). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--port", type=int, default=8790)
    options = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="licet-newcomer-"))
    log = data / "run.log"
    started = time.perf_counter()
    server = subprocess.Popen(["scripts/run", "--port", str(options.port), "--data-dir", str(data)],
                              cwd=options.checkout, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        printed = ""
        while "codes " not in printed:  # the demo's lines are printed once the server is seeded
            if server.poll() is not None:
                sys.exit(f"scripts/run stopped:\n{log.read_text()}")
            time.sleep(0.2)
            printed = log.read_text()
        link = re.search(r"dashboard\s+(http\S+)", printed)
        approver = re.search(r"approver\s+(\S+)\s+password\s+(\S+)", printed)
        assert link and approver, printed
        while True:  # the lines come just before the server listens
            try:
                if httpx.get(link.group(1), timeout=5, follow_redirects=True).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        answering = time.perf_counter()
        steps = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(link.group(1))
            steps.append("open the dashboard link")
            page.fill("#email", approver.group(1))
            page.fill("#password", approver.group(2))
            page.click("#sign-in")
            steps.append("type the approver's email and password, Sign in")
            code = subprocess.run([".venv/bin/licet", "demo-code", approver.group(1), "--data-dir", str(data)],
                                  cwd=options.checkout, capture_output=True, text=True, check=True).stdout.split()[-1]
            steps.append(f"run `licet demo-code {approver.group(1)}` in a terminal")
            page.fill("#code", code)
            page.click("#verify-code")
            steps.append("type the code, Verify")
            page.click("#nav-approvals")
            steps.append("click Approvals")
            page.locator(".approval .approve").first.click()
            steps.append("click Approve on the waiting transfer")
            expect(page.locator("#approvals-notice")).to_contain_text("Approved", timeout=30_000)
            browser.close()
        done = time.perf_counter()
    finally:
        server.terminate()
        server.wait(20)
    print(f"scripts/run until the demo was printed (set-up, migration, seed, server): {answering - started:.1f} s")
    print(f"from the server answering to the approval recorded, scripted: {done - answering:.1f} s")
    print("what a person does, each step a copy from the terminal or a click:")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step}")


if __name__ == "__main__":
    main()
