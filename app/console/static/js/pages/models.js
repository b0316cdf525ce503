// Models: every version of each model with its metrics (a chart across versions), training time and data
// size; activate a version or roll back, after a confirmation (the API asks for the admin key).
import { api } from "../api.js";
import { lines } from "../charts.js";
import { badge, bytes, confirmDialog, duration, h, inlineError, num, table, when } from "../ui.js";

const CHARTED = ["valid_ndcg@10", "test_ndcg@10", "test_hr@10"];

function dataSize(m) {
  const d = m.data;
  if (!d) return "–";
  return `${num(d.n_users)} × ${num(d.n_items)}, ${num(d.n_interactions)}`;
}

async function activate(ctx, name, version, active) {
  const back = active && version < active; // version ids sort by time
  const verb = back ? "Roll back" : "Activate";
  if (!(await confirmDialog(`${verb} ${name} to version ${version}? Every API process swaps it in within seconds.`))) return false;
  try {
    await api(`/v1/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}/activate`, { method: "POST" });
    return true;
  } catch (err) {
    ctx.error(err);
    return false;
  }
}

function versionRows(ctx, model, versions, reload) {
  return versions.slice().reverse().map((v) => {
    const m = v.metrics || {};
    const action = v.active ? badge("active", "active") : h("button", {
      type: "button", class: "secondary", dataset: { activate: v.version },
      onclick: async () => { if (await activate(ctx, model.name, v.version, model.active_version)) reload(); },
    }, model.active_version && v.version < model.active_version ? "Roll back" : "Activate");
    return {
      attrs: { dataset: { version: v.version } },
      cells: [h("span", { class: "mono" }, v.version), when(v.trained_at), v.status ? badge(v.status) : "–",
        num(m["valid_ndcg@10"]), num(m["test_ndcg@10"]), num(m["test_hr@10"]), duration(m.train_seconds),
        m.epochs_run ?? "–", dataSize(m), bytes(v.size_bytes), h("span", { class: "small" }, v.note || ""), v.job_id ? h("a", { href: `#/jobs?job=${v.job_id}` }, `#${v.job_id}`) : "–", action],
    };
  });
}

export async function render(ctx) {
  const models = (await api("/v1/models")).models;
  const trained = models.filter((m) => m.active_version || m.error);
  const untrained = models.filter((m) => !m.active_version && !m.error).map((m) => m.name);
  const body = h("div", { class: "stack" });
  ctx.root.append(h("h1", {}, "Models"), body);
  const stops = [];
  ctx.onLeave(() => stops.forEach((s) => s()));
  const reload = () => { location.hash = "#/models"; window.dispatchEvent(new HashChangeEvent("hashchange")); };

  const answers = await Promise.allSettled(trained.map((m) => api(`/v1/models/${encodeURIComponent(m.name)}/versions`)));
  trained.forEach((model, i) => {
    const section = h("section", { dataset: { model: model.name } },
      h("h2", {}, model.name, " ", model.loaded ? badge("loaded", "ok") : badge(model.error ? "error" : "not loaded", model.error ? "bad" : "")),
      h("p", { class: "note" }, `active ${model.active_version || "–"} on ${model.device || "–"}`,
        model.weights ? ` · learned weights ${Object.entries(model.weights).map(([k, w]) => `${k} ${num(w, 2)}`).join(", ")}` : ""),
      model.error ? h("p", { class: "inline-error" }, model.error) : null);
    body.append(section);
    const answer = answers[i];
    if (answer.status === "rejected") { section.append(inlineError(answer.reason)); ctx.error(answer.reason); return; }
    const versions = answer.value.versions;
    if (versions.length > 1) {
      const chart = h("div", { class: "chart" });
      section.append(chart);
      stops.push(lines(chart, versions.map((_, j) => j + 1),
        CHARTED.map((k) => ({ label: k, values: versions.map((v) => v.metrics?.[k] ?? null) })),
        { xLabel: "version", names: versions.map((v) => v.version), height: 170 }));
    }
    section.append(table(["version", "trained", "status", { label: "valid NDCG@10", num: true }, { label: "test NDCG@10", num: true },
      { label: "test HR@10", num: true }, { label: "training", num: true }, { label: "epochs", num: true }, "data: users × items, events", { label: "size", num: true },
      "note", "job", ""], versionRows(ctx, model, versions, reload)));
  });
  if (untrained.length) body.append(h("p", { class: "note" }, `Not trained yet: ${untrained.join(", ")} (start them from Jobs).`));
}
