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

// A followed log asks only for the lines after the ones it shows (the page's `offset`), and
// appends them, instead of fetching the whole log every few seconds.
async function followLog(live, pre) {
  const url = new URL(window.location.href);
  url.searchParams.set("fragment", "live");
  url.searchParams.set("offset", pre.dataset.offset);
  url.searchParams.delete("done");
  const answer = await fetch(url, { credentials: "same-origin", redirect: "manual" });
  if (answer.status !== 200) return;
  const page = new DOMParser().parseFromString(await answer.text(), "text/html");
  const fresh = page.querySelector("pre.log");
  if (!fresh) return;
  if (parseInt(fresh.dataset.lines, 10) > 0) {
    if (pre.dataset.lines === "0") pre.textContent = "";
    pre.append(fresh.textContent);
    pre.dataset.lines = String(parseInt(pre.dataset.lines, 10) + parseInt(fresh.dataset.lines, 10));
  }
  pre.dataset.offset = fresh.dataset.offset;
  pre.dataset.follow = fresh.dataset.follow;
  const state = page.getElementById("log-state");
  const shown = document.getElementById("log-state");
  if (state && shown) shown.replaceWith(document.importNode(state, true));
  followLogs(live);
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
    const log = live.querySelector("pre.log[data-offset]");
    if (log && log.dataset.follow !== "yes") return;
    inFlight = true;
    try {
      if (log) {
        await followLog(live, log);
        return;
      }
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
