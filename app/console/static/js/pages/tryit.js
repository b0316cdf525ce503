// Try it: a user's history and each model's recommendations side by side; a session built by clicking
// items, with the next items of the sequence models; predicted scores and ratings for chosen items.
import { api } from "../api.js";
import { badge, h, inlineError, itemLabel, num, table, when } from "../ui.js";

const SEQUENCE_MODELS = ["gru4rec", "sasrec"];
const titles = new Map(); // item id -> {title, categories} from GET /v1/items

async function describe(ids) {
  const missing = [...new Set(ids)].filter((id) => !titles.has(id));
  for (let i = 0; i < missing.length; i += 500) {
    const chunk = missing.slice(i, i + 500);
    const page = await api("/v1/items", { query: { ids: chunk.join(","), limit: 500 } });
    for (const it of page.items) titles.set(it.item_id, it);
    for (const id of chunk) if (!titles.has(id)) titles.set(id, null);
  }
}

function itemList(items, onPick) {
  return h("ol", { class: "items" }, items.map((it) => h("li", { dataset: { itemId: it.item_id } },
    h("button", { type: "button", class: "linklike", title: "add to the session", onclick: () => onPick(it.item_id) }, itemLabel(it.item_id, titles.get(it.item_id))),
    h("div", { class: "small muted" }, `score ${num(it.score, 3)}`, it.reason ? ` · ${it.reason}` : "", it.retrieved_by ? ` · via ${it.retrieved_by}` : ""))));
}

function column(model, answer, onPick) {
  if (answer.status === "rejected") return h("div", { class: "card", dataset: { model } }, h("h3", {}, model), inlineError(answer.reason));
  const r = answer.value;
  return h("div", { class: "card", dataset: { model, strategy: r.strategy } },
    h("h3", {}, model, " ", badge(r.strategy)),
    r.model !== model ? h("p", { class: "note" }, `answered by ${r.model}`) : null,
    r.detail ? h("p", { class: "note" }, r.detail) : null,
    r.items.length ? itemList(r.items, onPick) : h("p", { class: "muted" }, "no items"));
}

function controls() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  return {
    user: h("input", { id: "try-user", list: "try-users", placeholder: "user id, e.g. u1", value: params.get("user") || "", autocomplete: "off" }),
    users: h("datalist", { id: "try-users" }),
    n: h("input", { id: "try-n", type: "number", min: 1, max: 100, value: 10, style: "width: 5em" }),
    categories: h("input", { id: "try-categories", placeholder: "e.g. Comedy,Drama" }),
    seen: h("input", { id: "try-exclude-seen", type: "checkbox", checked: true }),
    show: h("button", { type: "submit", id: "try-show" }, "Show"),
  };
}

export async function render(ctx) {
  const loaded = (await api("/v1/models")).models.filter((m) => m.loaded).map((m) => m.name);
  const c = controls();
  const history = h("section", { id: "try-history" }, h("h2", {}, "History"), h("p", { class: "muted" }, "Pick a user."));
  const recs = h("div", { class: "cols", id: "try-recs" });
  const session = [];
  const chips = h("div", { class: "chips", id: "session-items" });
  const found = h("div", { id: "session-found" });
  const next = h("div", { class: "cols", id: "session-next" });
  const search = h("input", { id: "session-search", placeholder: "search items by title or id", autocomplete: "off" });
  const predictIds = h("input", { id: "predict-items", placeholder: "item ids, comma separated", style: "flex: 1" });
  const predictModel = h("select", { id: "predict-model" }, loaded.map((m) => h("option", { value: m }, m)));
  const predicted = h("div", { id: "predict-out" });

  async function showNext() {
    chips.replaceChildren(...session.map((id, i) => h("span", { class: "chip", dataset: { itemId: id } }, titles.get(id)?.title || id,
      h("button", { type: "button", "aria-label": `remove ${id}`, onclick: () => { session.splice(i, 1); showNext(); } }, "×"))));
    predictIds.value = session.join(",");
    if (!session.length) { next.replaceChildren(h("p", { class: "muted" }, "Click items to build a session.")); return; }
    const answers = await Promise.allSettled(SEQUENCE_MODELS.map((model) => api("/v1/sessions/next-items", { method: "POST", body: { item_ids: session, n: Number(c.n.value) || 10, model } })));
    await describe(answers.flatMap((a) => (a.status === "fulfilled" ? a.value.items.map((i) => i.item_id) : []))).catch(ctx.error);
    if (ctx.gone) return;
    next.replaceChildren(...SEQUENCE_MODELS.map((m, i) => column(m, answers[i], pick)));
    next.dataset.session = session.join(",");
  }

  function pick(itemId) {
    session.push(itemId);
    showNext().catch(ctx.error);
  }

  async function showUser() {
    const user = c.user.value.trim();
    if (!user) return;
    history.replaceChildren(h("h2", {}, `History of ${user}`), h("p", { class: "muted" }, "loading…"));
    recs.replaceChildren();
    recs.removeAttribute("data-user");
    const query = { n: Number(c.n.value) || 10, categories: c.categories.value.trim(), exclude_seen: c.seen.checked };
    const [events, ...answers] = await Promise.allSettled([
      api(`/v1/users/${encodeURIComponent(user)}/interactions`, { query: { limit: 10 } }),
      ...loaded.map((model) => api(`/v1/users/${encodeURIComponent(user)}/recommendations`, { query: { ...query, model } })),
    ]);
    const ids = [...(events.status === "fulfilled" ? events.value.interactions.map((e) => e.item_id) : []),
      ...answers.flatMap((a) => (a.status === "fulfilled" ? a.value.items.map((i) => i.item_id) : []))];
    await describe(ids).catch(ctx.error);
    if (ctx.gone) return;
    if (events.status === "rejected") {
      history.replaceChildren(h("h2", {}, `History of ${user}`), inlineError(events.reason));
      ctx.error(events.reason);
    } else {
      history.replaceChildren(h("h2", {}, `History of ${user} (newest first)`),
        events.value.interactions.length ? table(["item", "event", { label: "rating", num: true }, "when"], events.value.interactions.map((e) => [
          h("button", { type: "button", class: "linklike", onclick: () => pick(e.item_id) }, itemLabel(e.item_id, titles.get(e.item_id))),
          e.type, num(e.rating, 1), when(e.timestamp)])) : h("p", { class: "muted" }, "No events."));
    }
    recs.replaceChildren(...loaded.map((m, i) => column(m, answers[i], pick)));
    recs.dataset.user = user;
  }

  async function findItems() {
    try {
      const page = await api("/v1/items", { query: { q: search.value.trim(), limit: 12 } });
      for (const it of page.items) titles.set(it.item_id, it);
      found.replaceChildren(h("div", { class: "chips" }, page.items.map((it) => h("button", {
        type: "button", class: "secondary", dataset: { itemId: it.item_id }, onclick: () => pick(it.item_id),
      }, it.title || it.item_id))));
    } catch (err) {
      found.replaceChildren(inlineError(err));
      ctx.error(err);
    }
  }

  async function predict() {
    const ids = predictIds.value.split(",").map((s) => s.trim()).filter(Boolean);
    const user = c.user.value.trim();
    if (!user || !ids.length) { predicted.replaceChildren(inlineError(new Error("pick a user and at least one item"))); return; }
    try {
      const out = await api("/v1/predict", { method: "POST", body: { user_id: user, item_ids: ids, model: predictModel.value || null } });
      await describe(ids);
      predicted.replaceChildren(h("p", { class: "note" }, `${out.model} (${out.strategy})${out.detail ? ": " + out.detail : ""}`),
        table(["item", { label: "score", num: true }, { label: "rating", num: true }, "scored by"],
          out.predictions.map((p) => [itemLabel(p.item_id, titles.get(p.item_id)), num(p.score, 3), num(p.rating, 2), p.model])));
    } catch (err) {
      predicted.replaceChildren(inlineError(err));
      ctx.error(err);
    }
  }

  let typing = null;
  c.user.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(async () => {
      try {
        const page = await api("/v1/users", { query: { q: c.user.value.trim(), limit: 20 } });
        c.users.replaceChildren(...page.users.map((u) => h("option", { value: u.user_id })));
      } catch (err) { ctx.error(err); }
    }, 250);
  });
  let searching = null;
  search.addEventListener("input", () => { clearTimeout(searching); searching = setTimeout(findItems, 250); });
  const form = h("form", { id: "try-form", class: "row" },
    h("label", {}, "user", c.user), c.users, h("label", {}, "n", c.n), h("label", {}, "categories", c.categories),
    h("label", { style: "flex-direction: row; align-items: center; gap: 4px" }, c.seen, "exclude seen"), c.show);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); showUser().catch(ctx.error); });

  ctx.root.append(h("h1", {}, "Try it"),
    h("section", {}, form, h("p", { class: "note" }, "Recommendations of every loaded model for this user; click an item to add it to the session below.")),
    history, h("h2", {}, "Recommendations"), recs,
    h("section", { id: "session" }, h("h2", {}, "Session builder"), h("div", { class: "row" }, search,
      h("button", { type: "button", class: "secondary", id: "session-clear", onclick: () => { session.length = 0; showNext(); } }, "Clear")),
    found, h("h3", {}, "Session"), chips, h("h3", {}, "Next items"), next),
    h("section", { id: "predict" }, h("h2", {}, "Predict"), h("div", { class: "row" }, predictIds, predictModel,
      h("button", { type: "button", id: "predict-run", onclick: predict }, "Predict")), predicted));
  await Promise.all([findItems(), showNext()]);
  if (c.user.value) await showUser();
}
