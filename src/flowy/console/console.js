// Flowy's web console: the apps of a workspace, a form for each app's inputs, its runs
// with live progress, and their outputs.  Everything goes through the public API with
// the key the user pastes (kept in this tab's sessionStorage only).  API data is put
// into the page as text (textContent), never as markup.
"use strict";

const API = "/v1";
const TERMINAL = new Set(["run.completed", "run.failed", "run.canceled"]);
const MEDIA = new Set(["image_url", "audio_url", "video_url", "file_url"]);
const $ = (id) => document.getElementById(id);
// The labels of the open app's outputs, by node id.
let outputLabels = new Map();

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function say(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

function key() {
  return sessionStorage.getItem("flowy.key") || "";
}

// One call of the API: its JSON, or an Error with the API's own message.
async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(options.headers || {}) };
  const response = await fetch(API + path, { ...options, headers });
  const body = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) {
    // The API's message names the field or node at fault.
    throw new Error((body.error && body.error.message) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// -- apps

async function connect() {
  say("Loading apps…");
  const { data } = await api("/apps");
  const list = $("apps");
  list.replaceChildren();
  for (const app of data) {
    const button = el("button", { type: "button", text: app.title });
    button.addEventListener("click", () => openApp(app.id, button).catch((e) => say(e.message, true)));
    list.append(el("li", {}, button));
  }
  $("forget").hidden = false;
  say(data.length ? `${data.length} app(s)` : "This workspace has no apps yet.");
}

async function openApp(appId, button) {
  for (const b of $("apps").querySelectorAll("button")) b.setAttribute("aria-current", "false");
  if (button) button.setAttribute("aria-current", "true");
  const { data: app } = await api(`/apps/${encodeURIComponent(appId)}`);
  $("app").hidden = false;
  $("run").hidden = true;
  $("app-title").textContent = app.title;
  $("app-description").textContent = app.description || "";
  outputLabels = new Map(app.outputs.map((o) => [o.nodeId, o.label || o.nodeId]));
  renderForm(app);
  await listRuns(app.id);
  say("");
}

function field(input) {
  const id = `in-${input.nodeId}`;
  const hint = input.description ? el("span", { className: "hint", text: ` ${input.description}` }) : null;
  const label = el("label", { htmlFor: id }, `${input.label || input.nodeId}${input.required ? " *" : ""}`, hint);
  let control;
  if (input.kind === "choice") {
    control = el("select", { id });
    if (!input.required) control.append(el("option", { value: "", text: "" }));
    for (const o of input.options || []) control.append(el("option", { value: o, text: o }));
    if (input.default !== undefined) control.value = input.default;
  } else if (input.kind === "boolean") {
    control = el("input", { id, type: "checkbox", checked: Boolean(input.default) });
  } else if (input.kind === "number") {
    control = el("input", { id, type: "number", step: input.integer ? "1" : "any" });
    if (input.minimum !== undefined) control.min = input.minimum;
    if (input.maximum !== undefined) control.max = input.maximum;
    if (input.default !== undefined) control.value = input.default;
  } else if (MEDIA.has(input.kind)) {
    // A file from this computer (uploaded first), or a URL the server can reach.
    const file = el("input", { id, type: "file" });
    const url = el("input", { id: `${id}-url`, type: "url", placeholder: "or a URL: https://…" });
    if (input.kind === "image_url") file.accept = "image/*";
    control = el("div", {}, file, url);
  } else {
    control = el("textarea", { id, rows: 2 });
    if (input.maxLength) control.maxLength = input.maxLength;
    if (input.default !== undefined) control.value = input.default;
  }
  control.dataset.nodeId = input.nodeId;
  control.dataset.kind = input.kind;
  return [label, control];
}

function renderForm(app) {
  const form = $("run-form");
  form.replaceChildren();
  for (const input of app.inputs) form.append(...field(input));
  form.append(el("button", { type: "submit", text: "Run" }));
  form.onsubmit = (event) => {
    event.preventDefault();
    startRun(app).catch((e) => say(e.message, true));
  };
}

// The form's values as the API's inputs map; media files are uploaded first.
async function collectInputs(app) {
  const inputs = {};
  for (const input of app.inputs) {
    const control = $("run-form").querySelector(`[data-node-id="${CSS.escape(input.nodeId)}"]`);
    let value;
    if (MEDIA.has(input.kind)) {
      const [file, url] = control.querySelectorAll("input");
      if (file.files.length) {
        say(`Uploading ${file.files[0].name}…`);
        const body = new FormData();
        body.append("file", file.files[0]);
        value = (await api("/uploads", { method: "POST", body })).data.url;
      } else if (url.value.trim()) {
        value = url.value.trim();
      }
    } else if (input.kind === "boolean") {
      value = control.checked;
    } else if (input.kind === "number") {
      if (control.value !== "") value = Number(control.value);
    } else if (control.value !== "") {
      value = control.value;
    }
    if (value !== undefined) inputs[input.nodeId] = value;
  }
  return inputs;
}

// -- runs

async function startRun(app) {
  const inputs = await collectInputs(app);
  say("Starting…");
  const { data } = await api(`/apps/${encodeURIComponent(app.id)}/runs`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ inputs }),
  });
  say("");
  await followRun(data.runId);
  await listRuns(app.id);
}

function showStatus(status) {
  $("run-status").textContent = status;
  $("run-status").className = `badge ${status}`;
  $("cancel").hidden = !["queued", "running"].includes(status);
}

// Follow a run's event stream (fetch, since EventSource cannot send the key) until it
// ends, then show the run as the API answers it.
async function followRun(runId) {
  $("run").hidden = false;
  $("run-id").textContent = runId;
  $("cancel").onclick = () => {
    $("cancel").hidden = true;
    api(`/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" }).catch((e) => say(e.message, true));
  };
  $("nodes").replaceChildren();
  $("outputs").replaceChildren();
  $("run-error").hidden = true;
  showStatus("queued");
  const rows = new Map();
  const response = await fetch(`${API}/runs/${encodeURIComponent(runId)}/events`, {
    headers: { Authorization: `Bearer ${key()}`, Accept: "text/event-stream" },
  });
  if (!response.ok) throw new Error(`events: ${response.status} ${response.statusText}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
      if (!data) continue;
      const event = JSON.parse(data);
      onEvent(event, rows);
      if (TERMINAL.has(event.type)) {
        await reader.cancel();
        return showRun(runId);
      }
    }
  }
  return showRun(runId);
}

function onEvent(event, rows) {
  const d = event.data || {};
  if (event.type.startsWith("run.") && d.status) showStatus(d.status);
  if (!event.type.startsWith("node.") || !d.nodeId) return;
  let row = rows.get(d.nodeId);
  if (!row) {
    row = el("li");
    rows.set(d.nodeId, row);
    $("nodes").append(row);
  }
  const state = event.type === "node.progress" ? `${Math.round((d.progress || 0) * 100)}%` : event.type.slice(5);
  row.textContent = `${d.label || d.nodeId}: ${state}${d.error ? ` - ${d.error}` : ""}`;
}

async function showRun(runId) {
  const { data: run } = await api(`/runs/${encodeURIComponent(runId)}`);
  showStatus(run.status);
  if (run.error) {
    $("run-error").textContent = run.error;
    $("run-error").hidden = false;
  }
  const outputs = $("outputs");
  outputs.replaceChildren();
  for (const o of run.outputs || []) {
    outputs.append(el("h4", { text: outputLabels.get(o.nodeId) || o.nodeId }));
    if (o.kind === "image" && o.url) {
      outputs.append(el("img", { src: o.url, alt: `output ${o.nodeId}` }));
      outputs.append(el("a", { href: o.url, text: "download", download: "" }));
    } else if (o.url) {
      outputs.append(el("a", { href: o.url, text: `download (${o.contentType || "file"})` }));
    } else {
      const value = typeof o.value === "string" ? o.value : JSON.stringify(o.value, null, 2);
      outputs.append(el("pre", { text: value }));
    }
  }
}

async function listRuns(appId) {
  const { data } = await api(`/apps/${encodeURIComponent(appId)}/runs?limit=10`);
  const list = $("runs");
  list.replaceChildren();
  for (const run of data) {
    const open = el("button", { type: "button", text: run.runId });
    open.addEventListener("click", () => followRun(run.runId).catch((e) => say(e.message, true)));
    list.append(el("li", {}, open, ` ${run.status} · ${run.createdAt}`));
  }
}

// -- key

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("flowy.key", $("key").value.trim());
  $("key").value = "";
  connect().catch((e) => say(e.message, true));
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem("flowy.key");
  location.reload();
});
if (key()) connect().catch((e) => say(e.message, true));
else say("Paste an API key (flowy keys create) to see your workspace's apps.");
