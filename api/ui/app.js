// maskq's page. Plain JavaScript, no dependency, no build step; every request goes to this origin
// and uses only the public HTTP API, so this file is also an example of it:
//   GET /v1/operations           the operations and their parameters' JSON schemas -> the form
//   GET /v1/models               the segmentation models, when the server has that route
//   POST /v1/jobs | /v1/batches  one photo | several photos (multipart)
//   GET /v1/jobs/{id}, /v1/batches/{id}                  live states (polled)
//   GET /v1/jobs/{id}/result/content                     the result's bytes (same origin, see api/routes/ui.py)
//   GET /v1/jobs?limit=&cursor=&state=, /readyz, /metrics  the second view
// The key stays in sessionStorage and travels only in the Authorization header. Text from the API is
// always set with textContent (the page's CSP enforces Trusted Types: no HTML from strings at all).
"use strict";

const KEY_STORAGE = "maskq.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const OUTPUT_FIELDS = new Set(["format", "quality", "flatten_color"]);
const POLL_MIN_MS = 300, POLL_MAX_MS = 2000, HEALTH_EVERY_MS = 5000;
const $ = (id) => document.getElementById(id);
const NARROW = window.matchMedia("(max-width: 64rem)");   // one column: the results are below the form
const PHONE = window.matchMedia("(max-width: 40rem)");    // the parameters start folded

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  operations: null,        // name -> JSON schema
  models: null,            // GET /v1/models answer, or null when the server has no such route
  files: [],
  cards: new Map(),        // job id -> card
  batches: new Map(),      // batch id -> [job ids]
  pollTimer: 0, pollDelay: POLL_MIN_MS,
  healthTimer: 0, cursor: null,
  blobs: { results: [], preview: [] },   // object URLs to revoke when their images go away
};

function revoke(list) {
  for (const url of list.splice(0)) URL.revokeObjectURL(url);
}

// ---------- HTTP ----------

class ApiError extends Error {
  constructor(status, code, message, details, retryAfter) {
    super(message);
    this.status = status; this.code = code; this.details = details || {}; this.retryAfter = retryAfter;
  }
}

async function api(path, { method = "GET", body, auth = true, raw = false } = {}) {
  const headers = {};
  if (auth) headers.Authorization = "Bearer " + state.key;
  if (body !== undefined && !(body instanceof FormData)) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body instanceof FormData || body === undefined ? body : JSON.stringify(body),
      credentials: "omit", cache: "no-store", redirect: "error" });
  } catch (err) {
    throw new ApiError(0, "network", "The API did not answer (" + err.message + "). Is the server running?");
  }
  if (resp.ok) return raw ? resp : resp.status === 204 ? null : resp.json();
  let info = {};
  try { info = (await resp.json()).error || {}; } catch (_) { /* not our JSON error body */ }
  const err = new ApiError(resp.status, info.code || "http_" + resp.status, info.message || resp.statusText,
    info.details, resp.headers.get("Retry-After"));
  if (resp.status === 401 && auth) keyRefused(err);
  throw err;
}

// A sentence a person can act on, from an error answer (never the raw JSON).
function describe(err) {
  const m = err.message ? err.message.replace(/\.?$/, ".") : "";
  switch (err.code) {
    case "network": return err.message;
    case "unauthorized": return "The API key was refused (401 unauthorized). Enter a valid key.";
    case "image_too_large": return "Too large (413 image_too_large): " + m + " Send a smaller photo, or fewer photos at once.";
    case "unsupported_format": return "Not an image maskq reads (415 unsupported_format): " + m;
    case "invalid_image": return "Not a readable image (invalid_image): " + m;
    case "invalid_parameter": return "Invalid parameter" + (err.details.field ? " " + err.details.field : "") +
      " (invalid_parameter): " + m;
    case "backlog_full": return "The service is busy (429 backlog_full): " + m +
      (err.retryAfter ? " Try again in " + err.retryAfter + " s." : "");
    case "storage_unavailable": return "The service cannot reach its storage (" + (err.status || "job") + " storage_unavailable): " + m;
    case "not_found": return "Not found (404): " + m;
    case "conflict": return "Conflict (409): " + m;
    case "timeout": return "The job took too long (timeout): " + m;
    default: return (err.status ? err.status + " " : "") + err.code + ": " + m;
  }
}

// ---------- small DOM helpers (text only) ----------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function show(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

function banner(text, info = false) {
  const b = $("banner");
  b.className = info ? "banner info" : "banner";
  delete b.dataset.from;
  show(b, text);
}

// ---------- the key ----------

function keyRefused(err) {
  state.key = "";
  sessionStorage.removeItem(KEY_STORAGE);
  route();
  show($("key-error"), describe(err));
  $("key-input").focus();
}

async function submitKey(ev) {
  ev.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) { show($("key-error"), "Enter the API key that maskq up printed."); return; }
  state.key = key;
  try {
    await api("/v1/jobs?limit=1", { auth: true });
  } catch (err) {
    if (err.status !== 401) { state.key = ""; show($("key-error"), describe(err)); }
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key-input").value = "";
  show($("key-error"), "");
  route();
  schedulePoll(true);  // jobs followed before the key was refused are followed again
}

// ---------- views ----------

function route() {
  const want = location.hash === "#jobs" ? "jobs" : "try";
  const needKey = !state.key;
  $("key-view").hidden = !needKey;
  $("try-view").hidden = needKey || want !== "try";
  $("jobs-view").hidden = needKey || want !== "jobs";
  $("forget-key").hidden = needKey;
  for (const v of ["try", "jobs"]) {
    const a = $("nav-" + v);
    if (!needKey && v === want) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  clearInterval(state.healthTimer);
  if (needKey) { $("key-input").focus(); return; }
  if (want === "jobs") {
    loadHealth(); loadJobs(true);
    state.healthTimer = setInterval(() => { if (!document.hidden) loadHealth(); }, HEALTH_EVERY_MS);
  } else if (!state.operations) {
    loadOperations();
  }
}

// ---------- the form, from the JSON schemas ----------

async function loadOperations() {
  try {
    state.operations = await api("/v1/operations", { auth: false });
  } catch (err) {
    banner("Could not load the operations: " + describe(err));
    return;
  }
  try {
    state.models = await api("/v1/models", { auth: false });
  } catch (_) {
    state.models = null;  // an older server: no model choice, the server's default model is used
  }
  const sel = $("operation");
  sel.replaceChildren();
  for (const name of Object.keys(state.operations)) sel.append(el("option", { value: name, text: name }));
  if (state.operations.remove) sel.value = "remove";
  buildParams();
}

function resolve(schema, root) {
  let s = schema || {};
  for (let i = 0; s.$ref && i < 8; i++) {
    const path = s.$ref.replace(/^#\//, "").split("/");
    let t = root;
    for (const p of path) t = t && t[p];
    s = { ...t, ...s, $ref: undefined };
  }
  return s;
}

// One parameter's schema, flattened: {kind, type, enum, min, max, step, nullable, default, ...}.
function describeParam(name, raw, root) {
  let s = resolve(raw, root);
  let nullable = false;
  if (s.anyOf || s.oneOf) {
    const alts = (s.anyOf || s.oneOf).map((a) => resolve(a, root));
    const real = alts.filter((a) => a.type !== "null");
    nullable = real.length < alts.length;
    s = real.length === 1 ? { ...real[0], default: s.default, title: s.title, description: s.description } : { ...s, type: "json" };
  }
  const p = { name, title: s.title || name, help: s.description || "", def: s.default, nullable, type: s.type };
  const isNum = s.type === "number" || s.type === "integer";
  if (s.enum) p.kind = "enum", p.options = s.enum;
  else if (s.type === "boolean") p.kind = "bool";
  else if (s.type === "string" && (/^#[0-9a-f]{6}$/i.test(String(s.default)) || /(^|_)colou?r$/.test(name))) p.kind = "color";
  else if (isNum) {
    p.min = s.minimum ?? s.exclusiveMinimum; p.max = s.maximum ?? s.exclusiveMaximum;
    const span = p.max - p.min;
    p.step = s.type === "integer" ? 1 : span <= 1 ? 0.01 : span <= 10 ? 0.05 : 1;
    if (s.exclusiveMinimum !== undefined) p.min = +(p.min + p.step).toFixed(4);
    if (s.exclusiveMaximum !== undefined) p.max = +(p.max - p.step).toFixed(4);
    p.kind = !nullable && p.min !== undefined && p.max !== undefined && typeof p.def === "number" ? "range" : "number";
  } else if (s.type === "string") p.kind = "text";
  else p.kind = "json";
  return p;
}

function buildParams() {
  const op = $("operation").value;
  const schema = state.operations[op] || {};
  $("operation-help").textContent = schema.description || "";
  const main = $("params"), out = $("params-output");
  main.replaceChildren(el("legend", { class: "visually-hidden", text: "Parameters" }));
  out.replaceChildren();
  state.params = [];
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    const p = describeParam(name, raw, schema);
    state.params.push(p);
    (OUTPUT_FIELDS.has(name) ? out : main).append(paramField(p));
  }
  $("params-box").hidden = main.children.length <= 1;
  $("more-params").hidden = out.children.length === 0;
}

function paramField(p) {
  const id = "param-" + p.name;
  const help = p.help ? el("p", { class: "hint", id: id + "-help", text: p.help }) : null;
  const err = el("p", { class: "error", id: id + "-error", hidden: true });
  const described = [help && id + "-help", id + "-error"].filter(Boolean).join(" ");
  let input, control;
  const common = { id, name: p.name, "aria-describedby": described };
  if (p.kind === "enum") {
    input = el("select", common);
    if (p.nullable || p.def === undefined || p.def === null) input.append(el("option", { value: "", text: defaultLabel(p.name) }));
    for (const o of p.options) input.append(el("option", { value: String(o), text: modelLabel(p.name, o) }));
    if (p.def !== undefined && p.def !== null) input.value = String(p.def);
  } else if (p.kind === "bool") {
    input = el("input", { ...common, type: "checkbox" });
    input.checked = !!p.def;
  } else if (p.kind === "color") {
    input = el("input", { ...common, type: "color", value: /^#[0-9a-f]{6}$/i.test(p.def) ? p.def : "#ffffff" });
  } else if (p.kind === "range") {
    input = el("input", { ...common, type: "range", min: p.min, max: p.max, step: p.step, value: p.def });
    const output = el("output", { for: id, text: String(p.def) });
    input.addEventListener("input", () => { output.textContent = input.value; });
    control = el("div", { class: "range" }, input, output);
  } else if (p.kind === "number") {
    input = el("input", { ...common, type: "number", inputmode: "decimal", min: p.min, max: p.max,
      step: p.type === "integer" ? 1 : "any", placeholder: p.def === null || p.def === undefined ? "default" : String(p.def) });
  } else {
    input = el(p.kind === "json" ? "textarea" : "input", { ...common, type: p.kind === "json" ? undefined : "text",
      rows: p.kind === "json" ? 2 : undefined, placeholder: p.kind === "json" ? "JSON, e.g. {}" : "default",
      spellcheck: "false", autocomplete: "off" });
  }
  input.addEventListener("input", () => markInvalid(p.name, ""));
  const label = el("label", { for: id, text: p.title });
  if (p.kind === "bool") return el("div", { class: "field" }, el("div", { class: "row" }, input, label), help, err);
  return el("div", { class: "field" }, label, control || input, help, err);
}

// The model select (a `model` parameter, when the server has models): labelled from GET /v1/models.
function modelLabel(name, value) {
  if (name !== "model" || !state.models || !Array.isArray(state.models.models)) return String(value);
  const m = state.models.models.find((x) => x.name === value);
  return m && m.description ? value + " — " + String(m.description).split(/[.;:] /)[0] : String(value);
}

function defaultLabel(name) {
  const d = name === "model" && state.models && state.models.default;
  return d ? "(the service's default: " + d + ")" : "(default)";
}

// The parameters that differ from their defaults (the server fills in the rest), or throws with the field.
function collectParams() {
  const params = {};
  for (const p of state.params) {
    const input = $("param-" + p.name);
    let v;
    if (p.kind === "bool") v = input.checked;
    else if (p.kind === "range") v = Number(input.value);
    else if (p.kind === "number") {
      if (input.value.trim() === "") continue;
      v = Number(input.value);
      if (!Number.isFinite(v)) throw fieldError(p.name, "a number is needed");
    } else if (p.kind === "json") {
      if (input.value.trim() === "") continue;
      try { v = JSON.parse(input.value); } catch (_) { throw fieldError(p.name, "not valid JSON"); }
    } else {
      v = input.value;
      if (v === "") continue;
    }
    if (p.kind === "enum" && typeof p.options[0] !== "string") v = p.options.find((o) => String(o) === v);
    if (v === p.def) continue;
    params[p.name] = v;
  }
  return params;
}

function fieldError(name, message) {
  return new ApiError(0, "invalid_parameter", message, { field: "params." + name });
}

function markInvalid(name, message) {
  const input = $("param-" + name), err = $("param-" + name + "-error");
  if (!input) return false;
  if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
  show(err, message);
  return true;
}

// ---------- choosing photos ----------

function setFiles(list) {
  state.files = Array.from(list).filter((f) => f.size > 0 || f.name);
  const n = state.files.length;
  $("chosen").textContent = n === 0 ? "No photo chosen yet." :
    n === 1 ? "1 photo: " + state.files[0].name : n + " photos: " + state.files.map((f) => f.name).join(", ");
  show($("form-error"), "");
}

function setupDrop() {
  const drop = $("drop");
  const over = (on) => (ev) => { ev.preventDefault(); drop.classList.toggle("over", on); };
  drop.addEventListener("dragenter", over(true));
  drop.addEventListener("dragover", over(true));
  drop.addEventListener("dragleave", over(false));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer && ev.dataTransfer.files.length) setFiles(ev.dataTransfer.files);
  });
  $("files").addEventListener("change", (ev) => setFiles(ev.target.files));
}

// ---------- submitting and following jobs ----------

async function submitJobs(ev) {
  ev.preventDefault();
  show($("form-error"), "");
  for (const p of state.params || []) markInvalid(p.name, "");
  if (!state.files.length) { show($("form-error"), "Choose or drop one or more photos first."); $("files").focus(); return; }
  const operation = $("operation").value;
  let params;
  try { params = collectParams(); } catch (err) { return formError(err); }
  const files = state.files.slice();
  const form = new FormData();
  form.append("operation", operation);
  form.append("params", JSON.stringify(params));
  const button = $("submit");
  button.disabled = true;
  button.textContent = files.length > 1 ? "Sending " + files.length + " photos…" : "Sending…";
  try {
    if (files.length === 1) {
      form.append("image", files[0], files[0].name);
      const job = await api("/v1/jobs", { method: "POST", body: form });
      addCard(job, files[0]);
    } else {
      for (const f of files) form.append("images", f, f.name);
      const batch = await api("/v1/batches", { method: "POST", body: form });
      state.batches.set(batch.id, batch.jobs.map((j) => j.id));
      batch.jobs.forEach((j, i) => addCard({ id: j.id, state: j.state, operation }, files[i], batch.id));
    }
    schedulePoll(true);
    if (NARROW.matches) $("results-title").scrollIntoView({ block: "start", behavior: "smooth" });
  } catch (err) {
    formError(err, files);
  } finally {
    button.disabled = false;
    button.textContent = "Start";
  }
}

function formError(err, files) {
  let text = describe(err);
  if (files && files.length > 1 && err.details && /^images\.?/.test(err.details.field || ""))
    text += " The batch was refused whole: nothing was queued.";
  show($("form-error"), text);
  const field = (err.details && err.details.field) || "";
  if (field.startsWith("params.") && markInvalid(field.slice(7).split(".")[0], err.message))
    $("param-" + field.slice(7).split(".")[0]).focus();
}

function addCard(job, file, batchId) {
  const stateBadge = el("span", { class: "state state-" + job.state, text: job.state });
  const info = el("span", { text: batchId ? "batch " + batchId.slice(0, 8) : "" });
  const body = el("div", { class: "body" });
  const li = el("li", { class: "result", "data-job": job.id, "aria-label": file.name },
    el("h3", { text: file.name }),
    el("div", { class: "meta", "aria-live": "polite" }, stateBadge, el("span", { class: "id", title: job.id, text: "job " + job.id.slice(0, 8) }), info),
    body);
  $("results").prepend(li);
  $("results-empty").hidden = true;
  const card = { id: job.id, file, operation: job.operation, li, stateBadge, info, body, state: job.state, done: false };
  state.cards.set(job.id, card);
  return card;
}

function setState(card, s) {
  card.state = s;
  card.stateBadge.className = "state state-" + s;
  card.stateBadge.textContent = s;
  card.li.setAttribute("data-state", s);
}

function schedulePoll(reset) {
  if (reset) state.pollDelay = POLL_MIN_MS;
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(poll, state.pollDelay);
}

async function poll() {
  const live = [...state.cards.values()].filter((c) => !c.done);
  if (!live.length || !state.key) return;
  let changed = false;
  try {
    // a batch is read in one request; its jobs are then read one by one only when they have finished
    const byBatch = new Map();
    for (const c of live) {
      const b = [...state.batches].find(([, ids]) => ids.includes(c.id));
      if (b) byBatch.set(b[0], true);
    }
    const states = new Map();
    for (const id of byBatch.keys()) {
      const b = await api("/v1/batches/" + encodeURIComponent(id));
      for (const j of b.jobs) states.set(j.id, j.state);
    }
    for (const c of live) {
      const s = states.get(c.id);
      if (s !== undefined && !TERMINAL.has(s)) {
        if (s !== c.state) { setState(c, s); changed = true; }
        continue;
      }
      const job = await api("/v1/jobs/" + encodeURIComponent(c.id));
      if (job.state !== c.state) { setState(c, job.state); changed = true; }
      if (TERMINAL.has(job.state)) { c.done = true; finished(c, job); }
    }
    if ($("banner").dataset.from === "poll") banner("");
  } catch (err) {
    if (err.status === 401) return;
    banner("Could not read the jobs' states: " + describe(err) + " Retrying.");
    $("banner").dataset.from = "poll";
  }
  state.pollDelay = changed ? POLL_MIN_MS : Math.min(POLL_MAX_MS, state.pollDelay * 1.5);
  schedulePoll(false);
}

function took(job) {
  if (!job.created_at || !job.finished_at) return "";
  const s = (Date.parse(job.finished_at) - Date.parse(job.created_at)) / 1000;
  return s >= 0 ? s.toFixed(1) + " s" : "";
}

// The mask confidence of a finished job, and a "review" badge when it is below the job's review_below.
function confidenceText(job) {
  return typeof job.confidence === "number" ? "confidence " + job.confidence.toFixed(2) : "";
}

function reviewBadge(job) {
  return job.review ? el("span", { class: "state state-review", text: "review",
    title: "The mask's confidence is below review_below: look at this cut-out before publishing it" }) : null;
}

function finished(card, job) {
  card.info.textContent = [card.info.textContent, took(job) && "took " + took(job), confidenceText(job)]
    .filter(Boolean).join(" · ");
  const badge = reviewBadge(job);
  if (badge) card.stateBadge.after(badge);
  if (job.state === "succeeded") {
    showResult(card.body, job, card.file, state.blobs.results).catch((err) => card.body.append(el("p", { class: "error", text: describe(err) })));
  } else if (job.state === "failed") {
    const e = job.error || {};
    card.body.append(el("p", { class: "error", text: describe(new ApiError(0, e.code || "internal", e.message || "", e.details)) }));
  } else {
    card.body.append(el("p", { class: "hint", text: "Canceled." }));
  }
}

const EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

async function showResult(container, job, original, blobs) {
  const resp = await api("/v1/jobs/" + encodeURIComponent(job.id) + "/result/content", { raw: true });
  const blob = await resp.blob();
  const afterUrl = URL.createObjectURL(blob);
  const beforeUrl = original ? URL.createObjectURL(original) : null;
  blobs.push(afterUrl);
  if (beforeUrl) blobs.push(beforeUrl);
  const stem = original ? original.name.replace(/\.[^.]*$/, "") : job.id;
  const name = stem + "-" + job.operation + "." + (EXT[blob.type] || "bin");
  const after = el("img", { class: "after", alt: "result of " + job.operation, src: afterUrl });
  const figure = el("div", { class: "compare" });
  if (beforeUrl) {
    figure.append(el("img", { class: "before", alt: "original", src: beforeUrl }), after, el("div", { class: "divider" }),
      el("span", { class: "tag l", text: "before" }), el("span", { class: "tag r", text: "after" }));
  } else {
    figure.append(after);
    figure.style.setProperty("--pos", "0%");
  }
  after.addEventListener("load", () => {
    figure.style.aspectRatio = after.naturalWidth + " / " + after.naturalHeight;
    size.textContent = after.naturalWidth + " × " + after.naturalHeight + " px, " + kb(blob.size);
  });
  const size = el("span", { class: "hint size" });
  const actions = el("div", { class: "actions" });
  if (beforeUrl) {
    const slider = el("input", { type: "range", min: 0, max: 100, value: 50, "aria-label": "Before / after: share of the original shown" });
    slider.addEventListener("input", () => figure.style.setProperty("--pos", slider.value + "%"));
    actions.append(el("div", { class: "range" }, slider));
  }
  actions.append(el("a", { href: afterUrl, download: name, class: "download", text: "Download " + name }), size);
  container.append(figure, actions);
}

function kb(n) { return n < 1024 * 1024 ? (n / 1024).toFixed(0) + " KB" : (n / 1048576).toFixed(1) + " MB"; }

// ---------- the second view: recent jobs, health and backlog ----------

async function loadJobs(reset) {
  if (reset) { state.cursor = null; $("jobs-table").tBodies[0].replaceChildren(); $("job-preview").replaceChildren(); }
  const q = new URLSearchParams({ limit: "20" });
  const st = $("state-filter").value;
  if (st === "review") q.set("review", "true");
  else if (st) q.set("state", st);
  if (state.cursor) q.set("cursor", state.cursor);
  let page;
  try {
    page = await api("/v1/jobs?" + q);
  } catch (err) {
    if (err.status !== 401) banner("Could not list the jobs: " + describe(err));
    return;
  }
  const tbody = $("jobs-table").tBodies[0];
  for (const job of page.jobs) tbody.append(jobRow(job));
  state.cursor = page.next_cursor;
  $("more-jobs").hidden = !state.cursor;
  $("jobs-empty").hidden = tbody.children.length > 0;
}

function jobRow(job) {
  const created = job.created_at ? new Date(job.created_at) : null;
  let last;
  if (job.state === "succeeded") {
    last = el("button", { type: "button", class: "quiet", text: "Show result" });
    last.addEventListener("click", () => {
      const box = el("div", { class: "result" }, el("h3", { text: "Job " + job.id + " (" + job.operation + ")" }));
      $("job-preview").replaceChildren(box);
      revoke(state.blobs.preview);
      showResult(box, job, null, state.blobs.preview).catch((err) => box.append(el("p", { class: "error", text: describe(err) })));
      box.scrollIntoView({ block: "nearest" });
    });
  } else if (job.error) {
    last = el("span", { class: "error", text: job.error.code + ": " + (job.error.message || "") });
  } else last = "";
  return el("tr", { "data-job": job.id },
    el("td", { text: created ? created.toLocaleString() : "" }),
    el("td", { class: "id", title: job.id, text: job.id.slice(0, 8) }),
    el("td", { text: job.operation }),
    el("td", {}, el("span", { class: "state state-" + job.state, text: job.state }), reviewBadge(job)),
    el("td", { text: took(job) }),
    el("td", {}, last, confidenceText(job) ? el("span", { class: "hint", text: " " + confidenceText(job) }) : ""));
}

// Prometheus text exposition: metric{labels} value -> [{name, labels, value}]
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || line.startsWith("#")) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

async function loadHealth() {
  const dl = $("health");
  const rows = [];
  try {
    const resp = await fetch("/readyz", { cache: "no-store", credentials: "omit" });
    const body = await resp.json();
    const checks = Object.entries(body.checks || {}).map(([k, v]) => k + " " + v).join(", ");
    rows.push(["Ready", (resp.ok ? "yes" : "no") + (checks ? " (" + checks + ")" : "")]);
  } catch (err) {
    rows.push(["Ready", "the API did not answer (" + err.message + ")"]);
  }
  try {
    const resp = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const metrics = parseMetrics(await resp.text());
    const queues = new Map();
    for (const m of metrics) {
      const q = m.labels.queue;
      if (!q || !["maskq_queue_backlog_jobs", "maskq_queue_waiting_jobs", "maskq_queue_reserved_jobs"].includes(m.name)) continue;
      const entry = queues.get(q) || {};
      entry[m.name.split("_")[2]] = m.value;
      queues.set(q, entry);
    }
    const up = metrics.find((m) => m.name === "maskq_backlog_redis_up");
    if (up && up.value !== 1) rows.push(["Backlog", "could not be read from Redis"]);
    for (const [q, e] of queues) {
      rows.push(["Queue " + q, (e.backlog ?? "?") + " job(s) in the backlog: " + (e.waiting ?? "?") + " queued, " +
        (e.reserved ?? "?") + " taken by workers"]);
    }
    if (!queues.size) rows.push(["Backlog", "not reported by this server's /metrics"]);
  } catch (err) {
    rows.push(["Backlog", "/metrics is not available here (" + err.message + ")"]);
  }
  rows.push(["Updated", new Date().toLocaleTimeString()]);
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

// ---------- start ----------

function start() {
  $("key-form").addEventListener("submit", submitKey);
  $("job-form").addEventListener("submit", submitJobs);
  $("operation").addEventListener("change", buildParams);
  $("clear").addEventListener("click", () => {
    for (const c of state.cards.values()) c.done = true;
    state.cards.clear(); state.batches.clear();
    $("results").replaceChildren();
    revoke(state.blobs.results);
    $("results-empty").hidden = false;
  });
  $("forget-key").addEventListener("click", () => {
    state.key = ""; sessionStorage.removeItem(KEY_STORAGE); route();
  });
  $("refresh-jobs").addEventListener("click", () => { loadHealth(); loadJobs(true); });
  $("state-filter").addEventListener("change", () => loadJobs(true));
  $("more-jobs").addEventListener("click", () => loadJobs(false));
  window.addEventListener("hashchange", route);
  setupDrop();
  if (PHONE.matches) $("params-box").open = false;
  route();
}

start();
