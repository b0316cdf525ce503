// Calls to the DeepRec JSON API with the operator's key; every failure becomes an ApiError to show.

const KEY = "deeprec.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value),
  // null until the operator answered the key dialog once in this tab (an empty answer: no key)
  answered: () => sessionStorage.getItem(KEY) !== null,
};

export class ApiError extends Error {
  constructor(status, detail, where, body) {
    super(`${where}: ${status ? status + " " : ""}${detail}`);
    this.status = status;
    this.detail = detail;
    this.where = where;
    this.body = body;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

function detailOf(body) {
  if (body && typeof body === "object") {
    if (typeof body.detail === "string") return body.detail;
    if (body.detail !== undefined) return JSON.stringify(body.detail);
  }
  return typeof body === "string" && body ? body.slice(0, 300) : "";
}

// api("/v1/models"), api("/v1/items", {query: {q: "x"}}), api("/v1/train", {method: "POST", body: {...}})
export async function api(path, { method = "GET", query, body } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const where = `${method} ${url.pathname}`;
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, `the service did not answer (${err.message})`, where);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!res.ok) throw new ApiError(res.status, detailOf(data) || res.statusText, where, data);
  return data;
}
