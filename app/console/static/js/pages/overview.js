// Overview: data counts and events per day, active models, the job queue, workers, request rate and p99.
import { api } from "../api.js";
import { timeBars } from "../charts.js";
import { badge, duration, h, inlineError, num, table, when } from "../ui.js";
import { eta, progressText } from "./jobs.js";

const REFRESH_MS = 5000;

function card(stat, label, value) {
  return h("div", { class: "card", dataset: { stat } }, h("div", { class: "value" }, num(value)), h("div", { class: "label" }, label));
}

function dataSection(stats, chart) {
  const cards = h("div", { class: "cards" },
    card("users", "users", stats.users),
    card("items", `items (${num(stats.active_items)} active)`, stats.items),
    card("interactions", "events", stats.interactions));
  const span = stats.last_event_at
    ? `Events per day up to the newest event (${when(stats.last_event_at)} UTC); the oldest is from ${when(stats.first_event_at)}.`
    : "No events yet.";
  return [cards, h("section", {}, h("h2", {}, "Events per day"), h("p", { class: "note" }, span), chart)];
}

function modelsSection(models) {
  const rows = models.filter((m) => m.active_version || m.error).map((m) => [
    h("a", { href: "#/models" }, m.name),
    h("span", { class: "mono" }, m.active_version || "–"),
    m.loaded ? badge("loaded", "ok") : badge(m.error ? "error" : "not loaded", m.error ? "bad" : ""),
    m.device || "–",
    num(m.metrics["valid_ndcg@10"]), num(m.metrics["test_ndcg@10"]), num(m.metrics["test_hr@10"]),
    when(m.trained_at),
  ]);
  const training = models.filter((m) => m.training_job).map((m) => `${m.name} (job #${m.training_job})`);
  const untrained = models.filter((m) => !m.active_version && !m.error && !m.training_job).map((m) => m.name);
  return h("section", { id: "overview-models" }, h("h2", {}, "Active models"),
    rows.length ? table(["model", "active version", "state", "device",
      { label: "valid NDCG@10", num: true }, { label: "test NDCG@10", num: true }, { label: "test HR@10", num: true },
      "trained"], rows) : h("p", { class: "muted" }, "No model trained yet: popularity is counted from the database."),
    training.length ? h("p", { class: "note", id: "overview-training" }, `Training: ${training.join(", ")}`) : null,
    untrained.length ? h("p", { class: "note" }, `Not trained: ${untrained.join(", ")}`) : null);
}

function queueSection(jobs) {
  const open = jobs.filter((j) => j.status === "queued" || j.status === "running");
  return h("section", { id: "overview-queue" }, h("h2", {}, "Job queue"),
    open.length
      ? table(["job", "status", "models", "progress", "ETA"], open.map((j) => [
        h("a", { href: `#/jobs?job=${j.job_id}` }, `#${j.job_id}`), badge(j.status), j.models.join(", "), progressText(j),
        eta(j) === null ? "–" : `≈ ${duration(eta(j))}`]))
      : h("p", { class: "muted" }, "No job queued or running."),
    h("p", { class: "note" }, h("a", { href: "#/jobs" }, "All jobs")));
}

function serviceSection(service) {
  const r = service.requests;
  const w = service.workers;
  const workers = [];
  if (w.embedded) workers.push([`embedded (pid ${w.embedded.pid})`, w.embedded.alive ? badge("alive", "ok") : badge(`exited ${w.embedded.exit_code}`, "bad"), "–"]);
  for (const b of w.busy) workers.push([b.worker, b.alive ? badge("running", "ok") : badge("no heartbeat", "bad"), `job #${b.job_id}`]);
  const window = `over the last ${Math.round(r.window_s)} s`;
  return h("section", { id: "overview-service" },
    h("h2", {}, "Service"),
    h("div", { class: "cards" },
      h("div", { class: "card", dataset: { stat: "rate" } }, h("div", { class: "value" }, r.rate_per_s === null ? "–" : `${num(r.rate_per_s, 2)}/s`), h("div", { class: "label" }, `requests ${window}`)),
      h("div", { class: "card", dataset: { stat: "p99" } }, h("div", { class: "value" }, r.p99_ms === null ? "–" : `${num(r.p99_ms, 1)} ms`), h("div", { class: "label" }, `p99 (p50 ${r.p50_ms === null ? "–" : num(r.p50_ms, 1) + " ms"})`))),
    h("h3", {}, "Workers"),
    workers.length ? table(["worker", "state", "job"], workers) : h("p", { class: "muted" }, "No embedded worker, and no worker running a job."),
    h("p", { class: "note" }, `API process ${service.process.pid}, up ${Math.round(service.process.uptime_s)} s. Workers that run separately show while they run a job.`),
    h("h3", {}, "Busiest API routes since the start"),
    table(["route", { label: "requests", num: true }, { label: "5xx", num: true }, { label: "p99 ms", num: true }],
      r.routes.slice(0, 8).map((x) => [`${x.method} ${x.route}`, num(x.requests), num(x.errors), num(x.p99_ms, 1)])));
}

export async function render(ctx) {
  const chartBox = h("div", { class: "chart", id: "events-chart" });
  const top = h("div", { id: "overview-data" });
  const modelsBox = h("div", { id: "overview-models-box" });
  const grid = h("div", { class: "grid" });
  ctx.root.append(h("h1", {}, "Overview"), top, modelsBox, grid);
  let stopChart = null;
  let drawn = "";
  ctx.onLeave(() => stopChart && stopChart());

  async function load(first) {
    const parts = await Promise.allSettled([
      api("/v1/stats", { query: { days: 90 } }), api("/v1/models"), api("/v1/jobs", { query: { limit: 50 } }), api("/v1/stats/service"),
    ]);
    if (ctx.gone) return;
    const [stats, models, jobs, service] = parts;
    const failed = parts.filter((p) => p.status === "rejected");
    failed.forEach((p) => ctx.error(p.reason));
    if (stats.status === "fulfilled") {
      top.replaceChildren(...dataSection(stats.value, chartBox));
      const days = stats.value.events_per_day;
      if (JSON.stringify(days) !== drawn) {
        drawn = JSON.stringify(days);
        if (stopChart) stopChart();
        stopChart = timeBars(chartBox, days.map((d) => Date.parse(d.day) / 1000), days.map((d) => d.events), { label: "events" });
      }
    } else if (first) top.replaceChildren(inlineError(stats.reason));
    modelsBox.replaceChildren(models.status === "fulfilled" ? modelsSection(models.value.models) : inlineError(models.reason));
    grid.replaceChildren(
      jobs.status === "fulfilled" ? queueSection(jobs.value.jobs) : inlineError(jobs.reason),
      service.status === "fulfilled" ? serviceSection(service.value) : inlineError(service.reason));
  }

  await load(true);
  ctx.every(REFRESH_MS, () => load(false));
}
