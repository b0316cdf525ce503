// Evaluation: the offline metrics stored with each active version (leave-one-out by time, full ranking,
// K = 10), as a table and as bar charts of test NDCG@10 and HR@10 across models, the panels `deeprec evaluate` draws.
import { api } from "../api.js";
import { categoryBars } from "../charts.js";
import { duration, h, num, table } from "../ui.js";

const RANKING = ["hr", "precision", "recall", "ndcg", "mrr"];
const TITLES = { hr: "HR", precision: "P", recall: "R", ndcg: "NDCG", mrr: "MRR" };

export async function render(ctx) {
  const models = (await api("/v1/models")).models.filter((m) => m.active_version && Object.keys(m.metrics || {}).length);
  ctx.root.append(h("h1", {}, "Evaluation"));
  if (!models.length) {
    ctx.root.append(h("p", { class: "muted" }, "No active version has metrics yet: train a model first."));
    return;
  }
  const hasRating = models.some((m) => m.metrics.test_rmse !== undefined || m.metrics.valid_rmse !== undefined);
  const columns = ["model", ...RANKING.map((k) => ({ label: `test ${TITLES[k]}@10`, num: true })), { label: "valid NDCG@10", num: true },
    ...(hasRating ? [{ label: "test RMSE", num: true }, { label: "test MAE", num: true }] : []),
    { label: "training", num: true }, { label: "best epoch", num: true }, "split"];
  const rows = models.map((m) => {
    const x = m.metrics;
    return { attrs: { dataset: { model: m.name } }, cells: [m.name, ...RANKING.map((k) => num(x[`test_${k}@10`])), num(x["valid_ndcg@10"]),
      ...(hasRating ? [num(x.test_rmse), num(x.test_mae)] : []), duration(x.train_seconds), x.best_epoch ?? "–", x.split || "–"] };
  });
  const ndcg = h("div", { class: "chart", id: "eval-ndcg" });
  const hr = h("div", { class: "chart", id: "eval-hr" });
  ctx.root.append(
    h("section", {}, h("h2", {}, "Active versions"), table(columns, rows, { id: "eval-table" }),
      h("p", { class: "note" }, "Measured when each version was trained: each user's last event is the test item and the one before it the validation item; every catalogue item is ranked (the loo protocol of deeprec evaluate, one seed). Run `deeprec evaluate` for several seeds and all cut-offs.")),
    h("div", { class: "grid" },
      h("section", {}, h("h2", {}, "test NDCG@10"), ndcg),
      h("section", {}, h("h2", {}, "test HR@10"), hr)));
  const names = models.map((m) => m.name);
  const stops = [
    categoryBars(ndcg, names, models.map((m) => m.metrics["test_ndcg@10"] ?? null), { label: "NDCG@10" }),
    categoryBars(hr, names, models.map((m) => m.metrics["test_hr@10"] ?? null), { label: "HR@10" }),
  ];
  ctx.onLeave(() => stops.forEach((s) => s()));
}
