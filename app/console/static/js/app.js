// The console's shell: asks for the API key once per tab, routes #/page to its module, runs its timers.
import { apiKey } from "./api.js";
import { showError } from "./ui.js";
import * as overview from "./pages/overview.js";
import * as models from "./pages/models.js";
import * as jobs from "./pages/jobs.js";
import * as tryit from "./pages/tryit.js";
import * as evaluation from "./pages/evaluation.js";

const PAGES = { overview, models, jobs, try: tryit, evaluation };
let current = null; // {timers, cleanups} of the page on screen

function keyState() {
  document.getElementById("key-state").textContent = apiKey.get() ? "key: set" : "key: none";
}

export function askKey() {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  input.value = apiKey.get();
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "save") apiKey.set(input.value.trim());
      else if (dialog.returnValue === "none") apiKey.set("");
      keyState();
      resolve();
    }, { once: true });
  });
}

// What a page gets: the element to fill, timers that stop when the operator leaves the page, error display.
function context(root) {
  const state = { timers: [], cleanups: [], gone: false };
  current = state;
  return {
    root,
    // run fn now and every ms while the page is shown (skipped while the tab is hidden)
    every(ms, fn) {
      state.timers.push(setInterval(() => { if (!document.hidden && !state.gone) fn(); }, ms));
    },
    onLeave(fn) { state.cleanups.push(fn); },
    get gone() { return state.gone; },
    error(err) { if (!state.gone) showError(err, { onKey: () => askKey().then(route) }); },
    ready() { root.dataset.ready = "true"; },
  };
}

function leave() {
  if (!current) return;
  current.gone = true;
  current.timers.forEach(clearInterval);
  current.cleanups.forEach((fn) => { try { fn(); } catch { /* a chart already gone */ } });
  current = null;
}

async function route() {
  leave();
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0] || "overview");
  const page = PAGES[name] || overview;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  const old = document.getElementById("page");
  const root = old.cloneNode(false);
  root.removeAttribute("data-ready");
  root.dataset.page = name;
  old.replaceWith(root);
  const ctx = context(root);
  try {
    await page.render(ctx);
  } catch (err) {
    ctx.error(err);
  }
  ctx.ready();
}

async function start() {
  keyState();
  document.getElementById("key-change").addEventListener("click", () => askKey().then(route));
  if (!apiKey.answered()) await askKey();
  window.addEventListener("hashchange", route);
  await route();
}

start();
