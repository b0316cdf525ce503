// Jobs: start a retrain, follow every job's progress live, cancel, and draw a job's loss and metric curves.
import { api } from "../api.js";
import { lines } from "../charts.js";
import { badge, confirmDialog, duration, h, inlineError, num, table, when } from "../ui.js";

const REFRESH_MS = 1000; // the worker reports every epoch; the curves are drawn from what the polls see
const OPEN = new Set(["queued", "running"]);

// Fraction of the job done: whole models before this one, plus this one's epochs.
export function fraction(job) {
  const p = job.progress;
  if (!p || !p.models_total) return job.status === "succeeded" ? 1 : 0;
  const within = p.stage === "done" ? 1 : p.epochs ? (p.epoch || 0) / p.epochs : 0;
  return Math.min(1, ((p.model_index || 1) - 1 + within) / p.models_total);
}

// The worker's estimate when it sent one (the model's epochs left, then the models after it), else by fraction.
export function eta(job) {
  const p = job.progress;
  if (job.status === "running" && p && p.eta_s !== null && p.eta_s !== undefined) return p.eta_s;
  const f = fraction(job);
  const ran = job.timings.running_s;
  if (job.status !== "running" || !ran || f <= 0 || f >= 1) return null;
  return (ran * (1 - f)) / f; // early stopping ends models sooner: an upper estimate
}

export function progressText(job) {
  const p = job.progress;
  if (!p) return job.status === "queued" ? "waiting for a worker" : "–";
  const parts = [`${p.model} (${p.model_index}/${p.models_total})`];
  if (p.epochs) parts.push(`epoch ${p.epoch ?? 0}/${p.epochs}`);
  if (p.loss !== null && p.loss !== undefined) parts.push(`loss ${num(p.loss)}`);
  if (p.metric !== null && p.metric !== undefined) parts.push(`${p.metric_name} ${num(p.metric)}`);
  if (p.stage === "done") parts.push("done");
  if (p.models_left !== null && p.models_left !== undefined && p.models_total > 1) {
    parts.push(`${p.models_left} model${p.models_left === 1 ? "" : "s"} left` +
      (p.pending && p.pending.length ? ` (then ${p.pending.join(", ")})` : ""));
  }
  return parts.join(" · ");
}

// Curves are gathered from the progress seen while this tab is open: the API keeps a job's latest epoch only.
function curvesKey(id) { return `deeprec.curves.${id}`; }

export function recordProgress(job) {
  const p = job.progress;
  if (!p || p.stage !== "epoch" || !p.model) return;
  const all = JSON.parse(sessionStorage.getItem(curvesKey(job.job_id)) || "{}");
  const points = (all[p.model] ||= []);
  if (!points.some((x) => x.epoch === p.epoch)) points.push({ epoch: p.epoch, loss: p.loss, metric: p.metric, name: p.metric_name });
  sessionStorage.setItem(curvesKey(job.job_id), JSON.stringify(all));
}

function startForm(ctx, names, onStarted) {
  const boxes = names.map((n) => h("label", { class: "chip" }, h("input", { type: "checkbox", name: "model", value: n }), n));
  const params = h("textarea", { id: "train-params", rows: 2, placeholder: '{"epochs": 5}' });
  const promote = h("select", { id: "train-promote" }, ["auto", "always", "never"].map((p) => h("option", { value: p }, p)));
  const status = h("p", { class: "note", id: "train-status" });
  const submit = h("button", { type: "submit", id: "train-start" }, "Start retrain");
  const form = h("form", { id: "train-form", class: "card" },
    h("h2", {}, "Start a retrain"),
    h("div", { class: "chips" }, boxes),
    h("p", { class: "note" }, "default: the set `make run` trains; a model brings the models it needs. Parameters: TrainConfig or model fields for every model, or {\"mf\": {...}} for one. Promotion: auto activates a version no worse than the active one; always; never (kept as a candidate). Needs the admin key."),
    h("div", { class: "row" }, h("label", { style: "flex: 1" }, "parameters (JSON)", params), h("label", {}, "promotion", promote), submit),
    status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const models = [...form.querySelectorAll("input[name=model]:checked")].map((b) => b.value);
    let parsed = {};
    try {
      parsed = params.value.trim() ? JSON.parse(params.value) : {};
    } catch (err) {
      status.replaceChildren(inlineError(new Error(`parameters are not JSON: ${err.message}`)));
      return;
    }
    if (!models.length) { status.replaceChildren(inlineError(new Error("choose at least one model"))); return; }
    submit.disabled = true;
    try {
      const out = await api("/v1/train", { method: "POST", body: { models, params: parsed, promote: promote.value } });
      status.textContent = `Job #${out.job_id} ${out.deduplicated ? "already open" : "queued"}: ${out.models.join(", ")}`;
      onStarted(out.job_id);
    } catch (err) {
      status.replaceChildren(inlineError(err));
      ctx.error(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function detail(ctx, job, chartBoxes) {
  const box = h("section", { id: "job-detail", dataset: { job: job.job_id, status: job.status } },
    h("h2", {}, `Job #${job.job_id} `, badge(job.status)),
    h("p", {}, progressText(job)),
    job.error ? h("p", { class: "inline-error" }, job.error) : null);
  const curves = JSON.parse(sessionStorage.getItem(curvesKey(job.job_id)) || "{}");
  for (const [model, points] of Object.entries(curves)) {
    points.sort((a, b) => a.epoch - b.epoch);
    const chart = h("div", { class: "chart", dataset: { curve: model } });
    box.append(h("h3", {}, `${model}: loss and ${points[0]?.name || "metric"} by epoch`), chart);
    chartBoxes.push([chart, points]);
  }
  if (!Object.keys(curves).length) box.append(h("p", { class: "note" }, "Curves are drawn from the epochs seen while this console is open."));
  const versions = job.result?.versions || [];
  if (versions.length) {
    box.append(h("h3", {}, "Published versions"), table(["model", "version", "promoted", "why", { label: "valid NDCG@10", num: true }, { label: "seconds", num: true }],
      versions.map((v) => [v.model, h("span", { class: "mono" }, v.version), v.promoted ? badge("active", "ok") : badge("candidate"), v.reason || "", num(v["valid_ndcg@10"]), num(v.seconds, 1)]),
      { id: "job-versions" }));
  }
  return box;
}

export async function render(ctx) {
  const selected = { id: Number(new URLSearchParams(location.hash.split("?")[1] || "").get("job")) || null };
  const models = await api("/v1/models");
  const names = ["default", "all", ...models.models.map((m) => m.name).filter((n) => !n.endsWith("-rating"))];
  const list = h("section", { id: "jobs-list" });
  const detailBox = h("div", { id: "job-detail-box" });
  let charts = [];
  const stopCharts = () => { charts.forEach((stop) => stop()); charts = []; };
  ctx.onLeave(stopCharts);
  ctx.root.append(h("h1", {}, "Jobs"), startForm(ctx, names, (id) => { selected.id = id; load(); }), list, detailBox);

  async function cancel(job) {
    if (!(await confirmDialog(`Cancel job #${job.job_id} (${job.models.join(", ")})?`))) return;
    try {
      await api(`/v1/jobs/${job.job_id}/cancel`, { method: "POST" });
    } catch (err) {
      ctx.error(err);
    }
    load();
  }

  async function load() {
    let jobs;
    try {
      jobs = (await api("/v1/jobs", { query: { limit: 50 } })).jobs;
    } catch (err) {
      ctx.error(err);
      return;
    }
    if (ctx.gone) return;
    jobs.forEach(recordProgress);
    const rows = jobs.map((j) => ({
      attrs: { class: `clickable${j.job_id === selected.id ? " selected" : ""}`, dataset: { job: j.job_id, status: j.status }, onclick: () => { selected.id = j.job_id; load(); } },
      cells: [`#${j.job_id}`, badge(j.status), j.models.join(", "),
        h("span", {}, h("progress", { max: 1, value: fraction(j) }), " ", h("span", { class: "small" }, progressText(j))),
        eta(j) === null ? "–" : `≈ ${duration(eta(j))}`, when(j.timings.created_at), duration(j.timings.running_s),
        OPEN.has(j.status) ? h("button", { type: "button", class: "danger", onclick: (ev) => { ev.stopPropagation(); cancel(j); } }, "Cancel") : ""],
    }));
    list.replaceChildren(h("h2", {}, "Queued, running and finished jobs"),
      rows.length ? table(["job", "status", "models", "progress", "ETA", "created", "ran", ""], rows, { id: "jobs-table" }) : h("p", { class: "muted" }, "No job yet."));
    const job = jobs.find((j) => j.job_id === selected.id) || null;
    stopCharts();
    const boxes = [];
    detailBox.replaceChildren(job ? detail(ctx, job, boxes) : "");
    for (const [el, points] of boxes) {
      const metricName = points[0]?.name || "metric";
      charts.push(lines(el, points.map((p) => p.epoch), [
        { label: "loss", values: points.map((p) => p.loss) },
        { label: metricName, values: points.map((p) => p.metric) },
      ], { xLabel: "epoch", right: [metricName], height: 180 }));
    }
  }

  await load();
  ctx.every(REFRESH_MS, load);
}
