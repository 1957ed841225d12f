// Shipyard dashboard: draw the page's charts with plotly.js and keep the live part of a page
// fresh by refetching its fragment every few seconds. Every page works without this script.
"use strict";

function themed(layout) {
  const css = getComputedStyle(document.documentElement);
  const fg = css.getPropertyValue("--fg").trim();
  const line = css.getPropertyValue("--line").trim();
  const out = Object.assign({}, layout, {
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: fg },
  });
  for (const axis of ["xaxis", "yaxis"]) {
    out[axis] = Object.assign({ gridcolor: line, zerolinecolor: line }, layout[axis] || {});
  }
  return out;
}

function drawCharts(root) {
  if (typeof Plotly === "undefined") return;
  for (const spec of root.querySelectorAll("script[data-chart]")) {
    const target = document.getElementById(spec.dataset.chart);
    if (!target) continue;
    const figure = JSON.parse(spec.textContent);
    Plotly.react(target, figure.data, themed(figure.layout), {
      displaylogo: false,
      responsive: true,
    });
  }
}

function followLogs(root) {
  for (const pre of root.querySelectorAll("pre.log[data-follow='yes']")) {
    pre.scrollTop = pre.scrollHeight;
  }
}

function busy(root) {
  const active = document.activeElement;
  return active && root.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
}

function startLive() {
  const main = document.querySelector("main[data-live]");
  const live = document.getElementById("live");
  if (!main || !live) return;
  const every = parseInt(main.dataset.live, 10) || 5000;
  let inFlight = false;
  setInterval(async () => {
    if (document.hidden || inFlight || busy(live)) return;
    inFlight = true;
    try {
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", "live");
      url.searchParams.delete("done");
      const answer = await fetch(url, { credentials: "same-origin", redirect: "manual" });
      if (answer.status !== 200) return;
      const html = await answer.text();
      const scroll = window.scrollY;
      live.innerHTML = html;
      drawCharts(live);
      followLogs(live);
      window.scrollTo(0, scroll);
    } catch (err) {
      // the server may be restarting: try again at the next tick
    } finally {
      inFlight = false;
    }
  }, every);
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts(document);
  followLogs(document);
  startLive();
});
