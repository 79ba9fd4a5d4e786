// AG-VAS web page: talks to the same HTTP API as any client (/v1/segment, /v1/chat, /healthz).
// Chat history lives here, in the page: every /v1/chat request sends the dialogue so far and the
// response returns it extended by one turn; changing the image starts a new dialogue.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, fileName: "", history: [], busy: false, maskUrl: null, model: "" };

function setBusy(busy) {
  state.busy = busy;
  $("busy").hidden = !busy;
  $("segment-button").disabled = busy || !state.file;
  $("chat-send").disabled = busy || !state.file;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setImage(blob, name) {
  state.file = blob;
  state.fileName = name;
  const preview = $("preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  $("drop-hint").hidden = true;
  $("image-name").textContent = name;
  resetChat();
  showError("");
  setBusy(false);
}

// ---- examples --------------------------------------------------------------------------------
async function loadExamples() {
  let list = [];
  try {
    const response = await fetch("/static/examples/examples.json");
    if (response.ok) list = await response.json();
  } catch (err) {
    return;  // the page works without examples
  }
  const box = $("examples");
  for (const example of list) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.title = example.title;
    button.dataset.file = example.file;
    const img = document.createElement("img");
    img.src = `/static/examples/${example.file}`;
    img.alt = example.title;
    const caption = document.createElement("span");
    caption.textContent = example.title;
    button.append(img, caption);
    button.addEventListener("click", () => pickExample(example, button));
    box.append(button);
  }
}

async function pickExample(example, button) {
  const response = await fetch(`/static/examples/${example.file}`);
  if (!response.ok) { showError(`could not load the example ${example.file}`); return; }
  setImage(await response.blob(), example.file);
  document.querySelectorAll(".example").forEach((b) => b.classList.toggle("selected", b === button));
  if (!$("expectation").value.trim() || $("expectation").dataset.fromExample === "1") {
    $("expectation").value = example.expectation || "";
    $("expectation").dataset.fromExample = "1";
  }
}

// ---- input: file picker and drag & drop ------------------------------------------------------
function wireInput() {
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) {
      document.querySelectorAll(".example").forEach((b) => b.classList.remove("selected"));
      setImage(file, file.name);
    }
  });
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) setImage(file, file.name);
  });
  drop.addEventListener("click", (event) => {
    if (event.target.tagName !== "INPUT" && event.target.tagName !== "LABEL") $("file").click();
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
  $("expectation").addEventListener("input", () => { $("expectation").dataset.fromExample = "0"; });
}

// ---- talking to the API ----------------------------------------------------------------------
async function post(path, options) {
  const form = new FormData();
  form.append("image", state.file, state.fileName || "image");
  form.append("options", JSON.stringify(options));
  let response;
  try {
    response = await fetch(path, { method: "POST", body: form });
  } catch (err) {
    throw new Error(`the server did not answer (${err.message})`);
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

function pngUrl(base64) {
  return base64 ? `data:image/png;base64,${base64}` : "";
}

// The anchor tokens are the model's handles on the mask, not words: shown as small labels, not as text.
function renderAnswer(element, raw) {
  element.replaceChildren();
  for (const part of raw.split(/(\[(?:NOR|ANO|SEG)\])/)) {
    if (!part) continue;
    const anchor = /^\[(NOR|ANO|SEG)\]$/.exec(part);
    if (anchor) {
      const label = document.createElement("span");
      label.className = "anchor";
      label.textContent = anchor[1];
      label.title = `anchor token ${part}: its hidden state decodes the mask`;
      element.append(label);
    } else {
      element.append(document.createTextNode(part));
    }
  }
}

function showResult(result) {
  $("placeholder").hidden = true;
  $("result").hidden = false;
  const decision = $("decision");
  const verdict = !result.anchors_found ? "none" : result.anomalous ? "anomalous" : "normal";
  decision.textContent = { none: "NO MASK", anomalous: "ANOMALOUS", normal: "NORMAL" }[verdict];
  decision.className = `badge ${verdict}`;
  decision.title = verdict === "none" ? "the answer held no anchor tokens, so no mask was decoded" : "";
  $("score").textContent = result.score.toFixed(3);
  $("area").textContent = `${(100 * result.area_fraction).toFixed(2)} %`;
  $("elapsed").textContent = `${result.width}×${result.height} px · ${Math.round(result.elapsed_ms)} ms`;
  renderAnswer($("answer"), result.raw_text);
  $("note").textContent = result.note || "";
  $("note").hidden = !result.note;
  $("overlay").src = pngUrl(result.overlay_png_base64);
  $("heat").src = pngUrl(result.heat_png_base64);
  $("mask").src = pngUrl(result.mask_png_base64);
  const bytes = Uint8Array.from(atob(result.mask_png_base64), (c) => c.charCodeAt(0));
  if (state.maskUrl) URL.revokeObjectURL(state.maskUrl);
  state.maskUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  const stem = (state.fileName || "image").replace(/\.[^.]+$/, "");
  $("download").href = state.maskUrl;
  $("download").download = `${stem}_mask.png`;
}

async function segment(event) {
  event.preventDefault();
  if (!state.file || state.busy) return;
  const mode = $("mode").value;
  const options = { mode, visuals: true };
  const instruction = $("instruction").value.trim();
  if (instruction) options.instruction = instruction;
  if (mode === "describe-plus") options.expectation = $("expectation").value.trim();
  showError("");
  setBusy(true);
  try {
    showResult(await post("/v1/segment", options));
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(false);
  }
}

// ---- chat ------------------------------------------------------------------------------------
function addMessage(role, text, meta) {
  const log = $("chat-log");
  const item = document.createElement("div");
  item.className = `msg ${role}`;
  if (role === "assistant") renderAnswer(item, text);
  else item.textContent = text;
  if (meta) {
    const extra = document.createElement("span");
    extra.className = "meta";
    extra.textContent = meta;
    item.append(extra);
  }
  log.append(item);
  log.scrollTop = log.scrollHeight;
}

function resetChat() {
  state.history = [];
  $("chat-log").querySelectorAll(".msg").forEach((m) => m.remove());
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("chat-input");
  const message = input.value.trim();
  if (!message || !state.file || state.busy) return;
  showError("");
  addMessage("user", message);
  input.value = "";
  setBusy(true);
  try {
    const result = await post("/v1/chat", { message, history: state.history, visuals: true });
    state.history = result.history;
    const meta = result.anchors_found
      ? `mask: ${result.anomalous ? "anomalous" : "normal"}, score ${result.score.toFixed(3)}` : "";
    addMessage("assistant", result.raw_text, meta);
    if (result.anchors_found) showResult(result);
  } catch (err) {
    showError(err.message);
    addMessage("assistant", `(error: ${err.message})`);
  } finally {
    setBusy(false);
  }
}

// ---- tabs, mode, health ----------------------------------------------------------------------
function selectTab(name) {
  const chat = name === "chat";
  $("tab-segment").classList.toggle("active", !chat);
  $("tab-chat").classList.toggle("active", chat);
  $("tab-segment").setAttribute("aria-selected", String(!chat));
  $("tab-chat").setAttribute("aria-selected", String(chat));
  $("segment-form").hidden = chat;
  $("chat-panel").hidden = !chat;
}

async function loadInfo() {
  try {
    const response = await fetch("/v1/info");
    if (response.ok) state.model = (await response.json()).model;
  } catch (err) {
    state.model = "";
  }
}

async function pollHealth() {
  const pill = $("health");
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const body = await response.json();
    const model = state.model ? `${state.model} · ` : "";
    pill.textContent = response.ok ? `${model}ready · queue ${body.queue}` : `unavailable: ${body.detail || ""}`;
    pill.className = `pill ${response.ok ? "ok" : "down"}`;
  } catch (err) {
    pill.textContent = "server unreachable";
    pill.className = "pill down";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  wireInput();
  loadExamples();
  $("segment-form").addEventListener("submit", segment);
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-reset").addEventListener("click", resetChat);
  $("tab-segment").addEventListener("click", () => selectTab("segment"));
  $("tab-chat").addEventListener("click", () => selectTab("chat"));
  $("mode").addEventListener("change", () => {
    $("expectation-row").hidden = $("mode").value !== "describe-plus";
  });
  loadInfo().then(pollHealth);
  setInterval(pollHealth, 5000);
});
