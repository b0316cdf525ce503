// DOM helpers: elements, tables, number and time formats, the error banner and a confirmation dialog.

// h("td", {class: "num"}, "3"): text children are set as text, never parsed as HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "class") el.className = v;
    else if (k === "value" || k === "checked") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function num(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return Number(value).toFixed(digits);
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function badge(text, kind = text) {
  return h("span", { class: `badge ${kind}` }, text);
}

// table(["a", {label: "b", num: true}], rows): each row an array of cells (text, nodes) or {cells, attrs}
export function table(columns, rows, attrs = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.label ?? c)));
  const body = rows.map((row) => {
    const cells = Array.isArray(row) ? row : row.cells;
    return h("tr", Array.isArray(row) ? {} : row.attrs,
      cells.map((cell, i) => h("td", { class: columns[i]?.num ? "num" : null }, cell)));
  });
  return h("div", { class: "scroll" }, h("table", attrs, h("thead", {}, head), h("tbody", {}, body)));
}

export function inlineError(err) {
  return h("p", { class: "inline-error", role: "alert" }, err.message || String(err));
}

// The banner under the header: every API error the operator should see; an auth error offers the key dialog.
export function showError(err, { onKey } = {}) {
  const box = document.getElementById("errors");
  const message = err.message || String(err);
  for (const old of box.children) if (old.dataset.message === message) old.remove();
  const row = h("div", { class: "error", role: "alert", dataset: { message } },
    h("span", { class: "text" }, message),
    err.isAuth && onKey ? h("button", { type: "button", onclick: () => onKey() }, "Change key") : null,
    h("button", { type: "button", onclick: () => row.remove(), "aria-label": "Dismiss" }, "×"));
  box.append(row);
  while (box.children.length > 5) box.firstElementChild.remove();
}

export function clearErrors() {
  document.getElementById("errors").replaceChildren();
}

export function confirmDialog(text) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

// An item as the console shows it: title (or id) and its categories; ``info`` from GET /v1/items.
export function itemLabel(itemId, info) {
  return h("span", {},
    h("span", { class: "item-title" }, info?.title || itemId), " ",
    h("span", { class: "muted small mono" }, itemId),
    info?.categories?.length ? h("span", { class: "muted small" }, ` · ${info.categories.join(", ")}`) : null);
}
