// The planner console: signs in with the admin key (kept in sessionStorage only, sent as a
// bearer header to this node's /admin JSON endpoints), then shows the cost report of the
// chosen window, the live state and the plan calculator. Every headline figure sits in an
// element with data-figure (its path in the report JSON) and data-value (the exact value
// as JSON gave it); the visible text is rounded for reading.
"use strict";

(() => {
  const KEY = "spillgate.adminKey";
  const WINDOWS_MS = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
  const LIVE_EVERY_MS = 5000;
  const $ = (id) => document.getElementById(id);
  let liveTimer = null;

  // --- the key and the admin API --------------------------------------------------------
  const adminKey = () => sessionStorage.getItem(KEY);

  class Refused extends Error {}

  async function api(path) {
    const reply = await fetch(path, {
      headers: { authorization: "Bearer " + adminKey() },
      cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
    });
    let body = null;
    try { body = await reply.json(); } catch (e) { body = null; }
    if (reply.status === 401 || reply.status === 403) {
      throw new Refused(errorText(body, "the node refused the admin key"));
    }
    if (!reply.ok) throw new Error(errorText(body, "HTTP " + reply.status));
    return body;
  }

  function errorText(body, fallback) {
    return body && body.error && body.error.message ? body.error.message : fallback;
  }

  // --- formatting (the visible text; data-value keeps the exact figure) ------------------
  function usd(v) {
    if (v === null || v === undefined) return "n/a";
    const d = Number(v);
    if (d === 0) return "$0";
    const sign = d < 0 ? "-" : "";
    const a = Math.abs(d);
    if (a >= 1) return sign + "$" + a.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    if (a >= 0.01) return sign + "$" + a.toFixed(4);
    // 4 significant digits in plain decimals ($0.000007004, never 7.004e-6)
    return sign + "$" + a.toFixed(Math.min(20, 3 - Math.floor(Math.log10(a))));
  }

  function pct(v) {
    if (v === null || v === undefined) return "n/a";
    const p = Number(v) * 100;
    return (p !== 0 && Math.abs(p) < 1 ? p.toPrecision(2) : p.toFixed(1)) + "%";
  }

  const FORMAT = {
    usd: usd, pct: pct,
    int: (v) => (v === null ? "n/a" : Number(v).toLocaleString("en-US")),
    bool: (v) => (v === null ? "n/a" : v ? "yes" : "no"),
    text: (v) => (v === null ? "n/a" : String(v)),
  };

  function exact(v) {
    if (v === null || v === undefined) return "null";
    return typeof v === "string" ? v : String(v);
  }

  function at(obj, path) {
    return path.split(".").reduce((o, k) => (o === null || o === undefined ? undefined : o[k]), obj);
  }

  function showFigures(report) {
    for (const el of document.querySelectorAll("[data-figure]")) {
      const v = at(report, el.dataset.figure);
      el.dataset.value = exact(v);
      el.textContent = (FORMAT[el.dataset.kind] || FORMAT.text)(v === undefined ? null : v);
      el.classList.toggle("good", v === true);
      el.classList.toggle("bad", v === false);
    }
  }

  function verdictLine(report) {
    const v = report.verdict;
    const parts = [];
    parts.push(`Savings ${usd(v.savings_usd)} (${pct(v.savings_share)}) against sending everything to the API.`);
    if (v.utilization !== null && v.break_even_utilization !== null) {
      parts.push(`Utilization ${pct(v.utilization)} vs break-even ${pct(v.break_even_utilization)}: local ${v.local_pays ? "pays" : "does not pay yet"}.`);
    }
    parts.push(`One more ${report.assumptions.hardware_profile} unit ${v.one_more_unit_pays ? "would pay" : "would not pay"} (${usd(v.one_more_unit_net_monthly_usd)} net a month).`);
    return parts.join(" ");
  }

  // --- tables ---------------------------------------------------------------------------
  function fillTable(id, rows) {
    const body = $(id).querySelector("tbody");
    body.textContent = "";
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const [text, numeric] of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        if (numeric) td.className = "num";
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function moneyRows(part) {
    return Object.entries(part).map(([name, s]) => [
      [name, false], [FORMAT.int(s.requests), true], [FORMAT.int(s.local_tokens), true],
      [FORMAT.int(s.api_tokens), true], [usd(s.local_usd), true], [usd(s.api_usd), true],
      [usd(s.all_api_usd), true],
    ]);
  }

  function spillRows(spill) {
    return spill.reasons.map((r) => [
      [r.reason || "(none)", false], [r.spill ? "yes" : "no", false],
      [FORMAT.int(r.requests), true], [pct(r.share), true], [FORMAT.int(r.tokens), true],
      [usd(r.usd), true],
    ]);
  }

  // --- the report of the chosen window --------------------------------------------------
  async function loadReport() {
    const section = $("report");
    section.dataset.state = "loading";
    const until = new Date();
    const since = new Date(until.getTime() - WINDOWS_MS[$("window").value]);
    const query = "since=" + encodeURIComponent(since.toISOString()) +
      "&until=" + encodeURIComponent(until.toISOString());
    try {
      const [report, spill] = await Promise.all([
        api("/admin/report?format=json&" + query), api("/admin/spill?" + query)]);
      showFigures(report);
      $("window-text").textContent = `${report.window.since} to ${report.window.until} (by ${report.window.bucket})`;
      $("verdict-line").textContent = verdictLine(report);
      SpillgateCharts.cost($("chart-cost"), report);
      SpillgateCharts.perMillion($("chart-permillion"), report);
      SpillgateCharts.utilization($("chart-util"), report);
      fillTable("spill-table", spillRows(spill));
      fillTable("key-table", moneyRows(report.by_key));
      fillTable("tag-table", moneyRows(report.by_tag));
      section.dataset.since = report.window.since;
      section.dataset.until = report.window.until;
      section.dataset.state = "ready";
      $("status").textContent = "";
    } catch (err) {
      section.dataset.state = "error";
      failed(err);
    }
  }

  // --- live state -----------------------------------------------------------------------
  function fillList(id, items) {
    const ul = $(id);
    ul.textContent = "";
    for (const text of items.length ? items : ["none"]) {
      const li = document.createElement("li");
      li.textContent = text;
      ul.appendChild(li);
    }
  }

  async function loadLive() {
    try {
      const live = await api("/admin/live");
      $("live-at").textContent = live.at;
      fillList("live-inflight", Object.entries(live.inflight).map(
        ([b, n]) => `${b}: ${n}${live.ready[b] ? "" : " (not ready)"}`));
      fillList("live-routes", live.routes.map(
        (r) => `${r.route}: ${r.spilling ? "SPILLING to " + r.backend : r.backend || "refusing"} (${r.reason})`));
      fillList("live-engines", Object.entries(live.engines).map(([b, e]) =>
        e.waiting === null ? `${b}: no fresh reading` : `${b}: ${e.running} running, ${e.waiting} waiting`));
      fillList("live-gpus", live.gpus.map((g) =>
        `GPU ${g.index}: ${pct(g.utilization)}` + (g.power_watts === null ? "" : `, ${g.power_watts.toFixed(0)} W`)));
      const guard = live.spend_guard;
      const lines = [];
      if (!guard || !guard.enabled) {
        lines.push("not configured");
      } else {
        lines.push(`node: ${guard.node.open ? "OPEN (" + guard.node.why + ")" : "closed"}, ${usd(guard.node.window_usd)} in ${guard.window_s}s`);
        for (const [k, s] of Object.entries(guard.keys)) lines.push(`key ${k}: OPEN (${s.why})`);
      }
      fillList("live-guard", lines);
      $("live").dataset.state = "ready";
    } catch (err) {
      failed(err);
    }
  }

  // --- plan calculator ------------------------------------------------------------------
  function fillSelect(id, values, chosen) {
    const select = $(id);
    select.textContent = "";
    for (const v of values) {
      const option = document.createElement("option");
      option.value = v;
      option.textContent = v;
      option.selected = v === chosen;
      select.appendChild(option);
    }
  }

  async function loadPlan() {
    const result = $("plan-result");
    result.dataset.state = "loading";
    $("plan-error").textContent = "";
    const query = new URLSearchParams({
      tokens_per_day: $("plan-tokens").value, peak_factor: $("plan-peak").value,
      hardware: $("plan-hardware").value, api_model: $("plan-model").value,
    });
    try {
      const out = await api("/admin/plan?" + query.toString());
      const plan = out.plan;
      fillTable("plan-table", Object.entries(plan.strategies).map(([name, s]) => [
        [name, false], [FORMAT.int(s.units), true], [usd(s.hardware_monthly_usd), true],
        [usd(s.api_monthly_usd), true], [usd(s.total_monthly_usd), true]]));
      for (const el of result.querySelectorAll("[data-plan]")) {
        const v = plan[el.dataset.plan];
        el.dataset.value = exact(v);
        el.textContent = v === null ? "none" : el.dataset.plan === "cheapest" ? v : FORMAT.int(Math.round(Number(v)));
      }
      SpillgateCharts.plan($("chart-plan"), out);
      result.dataset.state = "ready";
    } catch (err) {
      result.dataset.state = "error";
      if (err instanceof Refused) return failed(err);
      $("plan-error").textContent = err.message;
    }
  }

  // --- sign-in and the page's life ------------------------------------------------------
  function failed(err) {
    if (err instanceof Refused) return signOut(err.message);
    $("status").textContent = "Could not load: " + err.message;
  }

  async function enter() {
    $("signin").hidden = true;
    $("app").hidden = false;
    $("controls").hidden = false;
    const options = await api("/admin/plan/options");
    fillSelect("plan-hardware", options.profiles, options.hardware);
    fillSelect("plan-model", options.api_models, options.api_model);
    await Promise.all([loadReport(), loadLive(), loadPlan()]);
    liveTimer = setInterval(loadLive, LIVE_EVERY_MS);
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    if (liveTimer !== null) clearInterval(liveTimer);
    liveTimer = null;
    $("app").hidden = true;
    $("controls").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("key");
      sessionStorage.setItem(KEY, input.value);
      input.value = "";
      enter().catch(failed);
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("refresh").addEventListener("click", () => { loadReport(); loadLive(); });
    $("window").addEventListener("change", loadReport);
    $("plan-form").addEventListener("submit", (event) => { event.preventDefault(); loadPlan(); });
    if (adminKey()) enter().catch(failed);
  });
})();
