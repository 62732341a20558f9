// Charts of the console, drawn by the vendored uPlot (vendor/uPlot.LICENSE, MIT).
// Each function takes report JSON and a container, and (re)draws one chart in it.
"use strict";

const SpillgateCharts = (() => {
  const COLORS = ["#2f6fdf", "#9aa5b8", "#d9822b", "#7b3fbf", "#1b7f3b", "#b3261e"];
  const drawn = new Map();

  function num(v) {
    return v === null || v === undefined ? null : Number(v);
  }

  // Axis ticks in plain decimals with two significant digits (uPlot's default rounds
  // sub-cent amounts to 0), and loads in compact form (5M, 120M).
  function plain(v) {
    if (v === 0 || v === null) return "0";
    const a = Math.abs(v);
    if (a >= 1) return v.toLocaleString("en-US", { maximumFractionDigits: 2 });
    return v.toFixed(Math.min(20, 1 - Math.floor(Math.log10(a))));
  }

  const compact = new Intl.NumberFormat("en-US", { notation: "compact" });

  function draw(el, title, xTime, names, data, yLabel) {
    const old = drawn.get(el.id);
    if (old) old.destroy();
    el.textContent = "";
    const series = [{}].concat(names.map((name, i) => ({
      label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
    })));
    const opts = {
      title: title, width: Math.max(320, el.clientWidth - 10), height: 240,
      scales: { x: { time: xTime } }, series: series,
      axes: [
        xTime ? {} : { values: (u, splits) => splits.map((v) => compact.format(v)) },
        { label: yLabel, size: 80, values: (u, splits) => splits.map(plain) },
      ],
    };
    drawn.set(el.id, new uPlot(opts, data, el));
  }

  function times(report) {
    return report.series.map((b) => Date.parse(b.start) / 1000);
  }

  function pick(report, field) {
    return report.series.map((b) => num(b[field]));
  }

  return {
    cost(el, report) {
      draw(el, "USD per bucket", true,
        ["local busy", "local idle", "API", "all-API counterfactual"],
        [times(report), pick(report, "local_busy_usd"), pick(report, "idle_usd"),
         pick(report, "api_usd"), pick(report, "all_api_usd")], "USD");
    },
    perMillion(el, report) {
      draw(el, "USD per 1M tokens", true,
        ["local, usage basis", "local, reservation basis", "API", "reference model"],
        [times(report), pick(report, "usage_basis_usd_per_million"),
         pick(report, "reservation_basis_usd_per_million"),
         pick(report, "api_usd_per_million"), pick(report, "reference_usd_per_million")],
        "USD / 1M");
    },
    utilization(el, report) {
      const x = times(report);
      const breakEven = num(report.totals.break_even_utilization);
      draw(el, "busy share of the hardware's time", true, ["utilization", "break-even"],
        [x, pick(report, "utilization"), x.map(() => breakEven)], "share");
    },
    plan(el, result) {
      const x = result.sweep.map((p) => Number(p.tokens_per_day));
      draw(el, "monthly cost by load", false, ["all-API", "all-local", "hybrid"],
        [x, result.sweep.map((p) => num(p["all-api"])),
         result.sweep.map((p) => num(p["all-local"])),
         result.sweep.map((p) => num(p.hybrid))], "USD / month");
    },
  };
})();
