#!/usr/bin/env python3
"""The dashboard (GET /) in Debian's headless chromium, driven over the DevTools protocol, on
a live coordinator with two simulated agents: both agents are listed; the page's Interrupt
button stops dev-2 and the feed shows the interrupt with both agents and their times; an
interrupt with an agent missing is shown failed with that agent highlighted; the chart has
its points. A screenshot (dashboard.png) and the DOM (dashboard.html) are kept as artifacts.
IHC_DASHBOARD_DEMO=SECONDS keeps interrupting for that long first, for a fuller chart."""

import json
import os
import signal
import time

import cdp
import ihc_env as E

FEED = "document.querySelector('#feed > li[data-id=\"%d\"]')"

# What the feed shows for interrupt %d: class, verdict, total and one row per agent.
FEED_ITEM = """(() => {
  const li = %s;
  if (!li) return null;
  return {cls: li.className, verdict: li.querySelector('.verdict').textContent,
          total: li.querySelector('.total').textContent,
          agents: [...li.querySelectorAll('tr[data-agent]')].map(tr => ({
            agent: tr.dataset.agent, status: tr.className,
            time: tr.querySelector('.atime').textContent,
            modules: tr.querySelectorAll('.mod').length}))};
})()"""


def feed_item(b, iid):
    return b.eval(FEED_ITEM % (FEED % iid))


def main():
    exe = cdp.find_chromium()
    if not exe:
        E.log("SKIP: chromium is not installed (apt-get install chromium); the dashboard "
              "test did not run")
        raise SystemExit(E.SKIP)
    env = E.Env("dashboard")
    env.start_redis()
    env.start_coordinator()
    env.start_agent("a1", "dev-1,dev-2")
    a2 = env.start_agent("a2", "dev-2")
    env.wait_agents(["a1", "a2"])
    art = E.artifacts_dir()

    demo = float(os.environ.get("IHC_DASHBOARD_DEMO", "0"))
    end = time.monotonic() + demo
    while time.monotonic() < end:  # a history for the chart (the page replays it)
        env.interrupt("*", reason="demo")
        time.sleep(0.25)

    b = cdp.Browser(exe, os.path.join(env.dir, "chromium-profile"))
    try:
        b.navigate("http://127.0.0.1:%d/" % env.http_port)
        ok = b.wait("document.querySelectorAll('#agents tbody tr[data-agent]').length == 2 && "
                    "document.getElementById('stream').textContent == 'stream: live' && "
                    "document.querySelector('#hws tr[data-hw=\"dev-2\"] button') != null", 20)
        E.check(ok, "the page did not list both agents with a live stream: %s" %
                b.eval("document.body.innerText.slice(0, 600)"))
        agents = b.eval("[...document.querySelectorAll('#agents tbody tr')]"
                        ".map(tr => tr.dataset.agent)")
        E.check(sorted(agents) == ["a1", "a2"], "agents table: %s" % agents)
        E.check(b.eval("document.getElementById('redis').textContent") == "Redis: up",
                "Redis status not shown")

        # the page's own Interrupt button
        before = env.get_json("/v1/stats")[1]["total_interrupts"]
        b.eval("document.querySelector('#hws tr[data-hw=\"dev-2\"] button').click()")
        E.check(E.wait_until(lambda: env.get_json("/v1/stats")[1]["total_interrupts"] > before,
                             10), "the Interrupt button did not interrupt")
        iid = b.wait("(() => { const li = document.querySelector('#feed > li.ok'); "
                     "return li && li.querySelector('.hw').textContent == 'dev-2' && "
                     "li.querySelectorAll('tr.answered').length == 2 ? +li.dataset.id : 0; })()",
                     10)
        E.check(iid, "the feed did not show the interrupt of dev-2 answered by both agents")
        item = feed_item(b, iid)
        E.log("feed item of interrupt %d: %s" % (iid, json.dumps(item)))
        E.check(item["cls"] == "ok" and item["verdict"] == "stopped" and "ms" in item["total"],
                "interrupt %d shown as %s" % (iid, item))
        E.check([a["agent"] for a in item["agents"]] == ["a1", "a2"] and
                all(a["status"] == "answered" and "ms" in a["time"] and a["modules"] == 3
                    for a in item["agents"]), "agents of interrupt %d: %s" % (iid, item))
        E.check("interrupt" in b.eval("document.getElementById('interrupt-msg').textContent") or
                "stopped" in b.eval("document.getElementById('interrupt-msg').textContent"),
                "the button's answer was not shown")

        # a few more for the chart, then the points are drawn
        for _ in range(10):
            env.interrupt("*", reason="chart")
        n = b.wait("(() => { const m = /^(\\d+) interrupts/.exec("
                   "document.getElementById('chart-note').textContent); "
                   "return m ? +m[1] : 0; })() >= 11", 10)
        E.check(n, "the chart did not count the interrupts: %s" %
                b.eval("document.getElementById('chart-note').textContent"))

        # an agent that does not answer: failed, the agent highlighted as missing
        def a2_holds_dev2():
            st, doc = env.get_json("/v1/sessions?hardware_id=dev-2")
            return st == 200 and any(s["agent_id"] == "a2" for s in doc["sessions"])
        E.check(E.wait_until(a2_holds_dev2, 10), "a2 did not begin a new session of dev-2")
        a2.p.send_signal(signal.SIGSTOP)
        try:
            st, res = env.interrupt("dev-2", timeout_ms=400, reason="a2 stopped")
        finally:
            a2.p.send_signal(signal.SIGCONT)
        E.check(st == 200 and not res["success"] and res["agents"]["missing"] == ["a2"],
                "interrupt with a2 stopped: %s" % res)
        fid = res["interrupt_id"]
        ok = b.wait((FEED % fid) + "?.className == 'failed'", 10)
        item = feed_item(b, fid)
        E.log("feed item of interrupt %d: %s" % (fid, json.dumps(item)))
        E.check(ok and item["verdict"] == "failed" and
                {a["agent"]: a["status"] for a in item["agents"]} ==
                {"a1": "answered", "a2": "missing"}, "failed interrupt shown as %s" % item)

        # the simulated agents begin new sessions a second after an interrupt; the page follows
        env.wait_agents(["a1", "a2"])
        n = env.get_json("/v1/sessions")[1]["count"]
        E.check(b.wait("document.getElementById('sessions-count').textContent == '%d active'" % n,
                       10), "the sessions table did not follow: %s" %
                b.eval("document.getElementById('sessions-count').textContent"))
        b.eval("window.scrollTo(0, 0)")
        time.sleep(0.5)  # the chart redraws within 200 ms of a result
        b.screenshot(os.path.join(art, "dashboard.png"))
        with open(os.path.join(art, "dashboard.html"), "w") as f:
            f.write(b.eval("document.documentElement.outerHTML"))
        E.log("screenshot and DOM in", art)
    finally:
        b.close()
    env.stop_coordinator()
    env.close()
    E.log("ok")


if __name__ == "__main__":
    main()
