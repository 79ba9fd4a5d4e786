// AG-VAS web page: talks to the same HTTP API as any client (/v1/segment, /v1/chat, /v1/info, /healthz).
// Chat history lives here, in the page: every /v1/chat request sends the dialogue so far and the
// response returns it extended by one turn; changing the image starts a new dialogue.
// The threshold slider re-cuts the returned probability map (map_png_base64) here, without a new request;
// a batch is a pool of ordinary /v1/segment requests, as many in flight as the server batches.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  file: null, fileName: "", history: [], busy: false, maskUrl: null, model: "",
  info: { max_batch: 4, threshold: 0.5, min_area: 0 },
  shown: null,  // the result on screen, with its decoded map for re-cutting
  batch: { items: [], rows: [], running: false, stop: false, sort: null, urls: [] },
};

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
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    const files = await droppedFiles(event.dataTransfer);
    if (files.length === 1 && !files[0].relativePath?.includes("/")) setImage(files[0], files[0].name);
    else if (files.length) chooseBatch(files);
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
async function post(path, options, file = state.file, name = state.fileName) {
  const form = new FormData();
  form.append("image", file, name || "image");
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
  showVerdict(result.anchors_found, result.anomalous, result.area_fraction);
  $("score").textContent = result.score.toFixed(3);
  $("elapsed").textContent = `${result.width}×${result.height} px · ${Math.round(result.elapsed_ms)} ms`;
  renderAnswer($("answer"), result.raw_text);
  showNote(result, result.anomalous);
  $("overlay").src = pngUrl(result.overlay_png_base64);
  $("heat").src = pngUrl(result.heat_png_base64);
  $("mask").src = pngUrl(result.mask_png_base64);
  const bytes = Uint8Array.from(atob(result.mask_png_base64), (c) => c.charCodeAt(0));
  if (state.maskUrl) URL.revokeObjectURL(state.maskUrl);
  state.maskUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  const stem = (state.fileName || "image").replace(/\.[^.]+$/, "");
  $("download").href = state.maskUrl;
  $("download").download = `${stem}_mask.png`;
  state.shown = { result, serverMaskUrl: state.maskUrl, pixels: null, heat: null, preview: null };
  setThreshold(result.threshold);
  if (result.map_png_base64 && result.anchors_found) decodeMaps(state.shown);
}

// ---- the threshold: re-cut the shown map in the browser ---------------------------------------
function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not decode an image"));
    img.src = src;
  });
}

async function decodeMaps(shown) {
  const [grey, heat, preview] = await Promise.all([loadImage(pngUrl(shown.result.map_png_base64)),
    loadImage(pngUrl(shown.result.heat_png_base64)), loadImage($("preview").src)]);
  const canvas = document.createElement("canvas");
  canvas.width = grey.naturalWidth;
  canvas.height = grey.naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(grey, 0, 0);
  shown.pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  shown.width = canvas.width;
  shown.height = canvas.height;
  shown.heat = heat;
  shown.preview = preview;
  if (state.shown === shown) recut();
}

function setThreshold(value) {
  $("threshold").value = String(value);
  $("threshold-value").textContent = Number(value).toFixed(2);
}

// The server's rule on the grey map: P > t with P = value / 255, then the minimum area.
function cutMask(shown, t) {
  const { pixels, width, height } = shown;
  const mask = new Uint8Array(width * height);
  let count = 0;
  for (let i = 0; i < mask.length; i++) {
    if (pixels[4 * i] > 255 * t) { mask[i] = 1; count++; }
  }
  if (count && count / mask.length < shown.result.min_area) { mask.fill(0); count = 0; }
  return { mask, count };
}

// The inner boundary, as agvas.infer.render.mask_contour draws it: masked pixels within `thickness`
// (city-block distance) of an unmasked pixel or the border.
function contour(mask, width, height) {
  const k = Math.max(1, Math.round(Math.min(width, height) / 256));
  const edge = new Uint8Array(mask.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!mask[y * width + x]) continue;
      search: for (let dy = -k; dy <= k; dy++) {
        for (let dx = Math.abs(dy) - k; dx <= k - Math.abs(dy); dx++) {
          const yy = y + dy, xx = x + dx;
          if (yy < 0 || xx < 0 || yy >= height || xx >= width || !mask[yy * width + xx]) {
            edge[y * width + x] = 1;
            break search;
          }
        }
      }
    }
  }
  return edge;
}

function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

function recut() {
  const shown = state.shown;
  const t = Number($("threshold").value);
  $("threshold-value").textContent = t.toFixed(2);
  if (!shown || !shown.pixels) return;
  const { result, width, height } = shown;
  if (Math.abs(t - result.threshold) < 1e-9) {  // the server's own cut: its exact full-size pictures
    showVerdict(result.anchors_found, result.anomalous, result.area_fraction);
    showNote(result, result.anomalous);
    $("overlay").src = pngUrl(result.overlay_png_base64);
    $("mask").src = pngUrl(result.mask_png_base64);
    $("download").href = shown.serverMaskUrl;
    return;
  }
  const { mask, count } = cutMask(shown, t);
  showVerdict(true, count > 0, count / mask.length);
  showNote(result, count > 0);
  const maskCanvas = canvasOf(width, height);
  const maskCtx = maskCanvas.getContext("2d");
  const maskData = maskCtx.createImageData(width, height);
  const over = canvasOf(width, height);
  const ctx = over.getContext("2d");
  ctx.drawImage(shown.preview, 0, 0, width, height);
  ctx.globalAlpha = 0.4;
  ctx.drawImage(shown.heat, 0, 0, width, height);
  ctx.globalAlpha = 1;
  const overData = ctx.getImageData(0, 0, width, height);
  const edge = contour(mask, width, height);
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 255 : 0;
    maskData.data.set([v, v, v, 255], 4 * i);
    if (edge[i]) overData.data.set([0, 255, 0, 255], 4 * i);
  }
  maskCtx.putImageData(maskData, 0, 0);
  ctx.putImageData(overData, 0, 0);
  $("mask").src = maskCanvas.toDataURL("image/png");
  $("overlay").src = over.toDataURL("image/png");
  const full = canvasOf(result.width, result.height);  // the download at the image's size
  const fullCtx = full.getContext("2d");
  fullCtx.imageSmoothingEnabled = false;
  fullCtx.drawImage(maskCanvas, 0, 0, result.width, result.height);
  full.toBlob((blob) => {
    if (state.shown !== shown || !blob) return;
    if (state.maskUrl && state.maskUrl !== shown.serverMaskUrl) URL.revokeObjectURL(state.maskUrl);
    state.maskUrl = URL.createObjectURL(blob);
    $("download").href = state.maskUrl;
  }, "image/png");
}

// The result's note, and a line when the answer and the mask (at the threshold shown) disagree.
function showNote(result, anomalous) {
  const notes = [result.note, contradiction(result.text_verdict, anomalous)].filter(Boolean);
  $("note").textContent = notes.join(" ");
  $("note").hidden = !notes.length;
}

function contradiction(textVerdict, anomalous) {
  if (!textVerdict || (textVerdict === "anomalous") === anomalous) return "";
  return `The answer reads as ${textVerdict}, but the mask ${anomalous ? "marks an anomaly" : "is empty"}: `
    + "they disagree.";
}

function showVerdict(anchorsFound, anomalous, area) {
  const decision = $("decision");
  const verdict = !anchorsFound ? "none" : anomalous ? "anomalous" : "normal";
  decision.textContent = { none: "NO MASK", anomalous: "ANOMALOUS", normal: "NORMAL" }[verdict];
  decision.className = `badge ${verdict}`;
  decision.title = verdict === "none" ? "the answer held no anchor tokens, so no mask was decoded" : "";
  $("area").textContent = `${(100 * area).toFixed(2)} %`;
}

// The Segment tab's settings and the threshold, as one request's options (batches use them too).
function segmentOptions() {
  const mode = $("mode").value;
  const options = { mode, threshold: Number($("threshold").value) };
  const instruction = $("instruction").value.trim();
  if (instruction) options.instruction = instruction;
  if (mode === "describe-plus") options.expectation = $("expectation").value.trim();
  return options;
}

async function segment(event) {
  if (event) event.preventDefault();
  if (!state.file || state.busy) return;
  const options = { ...segmentOptions(), visuals: true };
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

// ---- batch: many images, a table, one zip ------------------------------------------------------
const IMAGE_NAME = /\.(png|jpe?g|gif|webp|tiff?|bmp)$/i;

function chooseBatch(files) {
  const items = files.filter((f) => f.type.startsWith("image/") || IMAGE_NAME.test(f.name))
    .map((file) => ({ file, name: file.webkitRelativePath || file.relativePath || file.name }));
  state.batch.items = items;
  const skipped = files.length - items.length;
  $("batch-status").textContent = `${items.length} image${items.length === 1 ? "" : "s"} chosen`
    + (skipped ? ` (${skipped} other file${skipped === 1 ? "" : "s"} skipped)` : "") + ".";
  $("batch-run").disabled = state.batch.running || !items.length;
  selectTab("batch");
}

async function runBatch() {
  const batch = state.batch;
  if (batch.running || !batch.items.length) return;
  batch.urls.forEach((u) => URL.revokeObjectURL(u));
  batch.urls = [];
  batch.rows = batch.items.map((item, index) => ({ ...item, index, status: "queued" }));
  batch.running = true;
  batch.stop = false;
  const options = segmentOptions();
  $("batch-run").disabled = true;
  $("batch-stop").disabled = false;
  $("batch-zip").disabled = true;
  $("batch-results").hidden = false;
  $("batch-progress").max = batch.rows.length;
  renderBatch();
  let next = 0;
  const worker = async () => {  // requests in flight together are batched by the server's queue
    while (!batch.stop && next < batch.rows.length) {
      const row = batch.rows[next++];
      row.status = "running";
      try {
        const r = await post("/v1/segment", options, row.file, row.name);
        Object.assign(row, { status: "done", score: r.score, anomalous: r.anomalous, area: r.area_fraction,
          anchors: r.anchors_found, text: r.text, mode: r.mode, threshold: r.threshold, min_area: r.min_area,
          mask: r.mask_png_base64 });
      } catch (err) {
        Object.assign(row, { status: "failed", error: err.message });
      }
      scheduleRender();
    }
  };
  const inFlight = Math.max(1, Math.min(state.info.max_batch || 4, 8, batch.rows.length));
  await Promise.all(Array.from({ length: inFlight }, worker));
  batch.running = false;
  $("batch-run").disabled = !batch.items.length;
  $("batch-stop").disabled = true;
  $("batch-zip").disabled = !batch.rows.some((r) => r.status === "done" || r.status === "failed");
  renderBatch();
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; renderBatch(); });
}

function batchCounts() {
  const rows = state.batch.rows;
  const count = (test) => rows.filter(test).length;
  return { total: rows.length, done: count((r) => r.status === "done" || r.status === "failed"),
    failed: count((r) => r.status === "failed"), anomalous: count((r) => r.status === "done" && r.anomalous) };
}

function renderBatch() {
  const batch = state.batch;
  const c = batchCounts();
  $("batch-progress").value = c.done;
  const where = batch.running ? "running" : batch.stop ? "stopped" : "done";
  $("batch-status").textContent = `${where}: ${c.done} of ${c.total} images, ${c.anomalous} anomalous`
    + (c.failed ? `, ${c.failed} failed` : "") + ".";
  $("batch-summary").textContent = `${c.done}/${c.total}`;
  const rows = [...batch.rows];
  if (batch.sort) {
    const sign = batch.sort === "descending" ? -1 : 1;
    rows.sort((a, b) => sign * ((a.score ?? -1) - (b.score ?? -1)) || a.index - b.index);
  }
  $("score-header").setAttribute("aria-sort", batch.sort || "none");
  const body = $("batch-table").tBodies[0];
  body.replaceChildren(...rows.map(batchRow));
}

function batchRow(row) {
  const tr = document.createElement("tr");
  const cell = (content) => {
    const td = document.createElement("td");
    if (content instanceof Node) td.append(content); else td.textContent = content;
    tr.append(td);
    return td;
  };
  if (!row.thumb) {
    row.thumb = URL.createObjectURL(row.file);
    state.batch.urls.push(row.thumb);
  }
  const img = document.createElement("img");
  img.src = row.thumb;
  img.alt = "";
  img.className = "thumb";
  cell(img);
  const open = document.createElement("button");
  open.type = "button";
  open.className = "link-button";
  open.textContent = row.name;
  open.title = "open this image and segment it with its maps";
  open.addEventListener("click", () => openRow(row));
  cell(open);
  if (row.status === "done") {
    const verdict = !row.anchors ? "none" : row.anomalous ? "anomalous" : "normal";
    const badge = document.createElement("span");
    badge.className = `badge small-badge ${verdict}`;
    badge.textContent = { none: "NO MASK", anomalous: "ANOMALOUS", normal: "NORMAL" }[verdict];
    cell(badge);
    cell(row.score.toFixed(3));
    cell(`${(100 * row.area).toFixed(2)} %`);
  } else {
    const td = cell(row.status === "failed" ? `failed: ${row.error}` : row.status);
    td.colSpan = 3;
    td.className = row.status === "failed" ? "failed" : "muted";
  }
  tr.addEventListener("click", (event) => { if (event.target.tagName !== "BUTTON") openRow(row); });
  return tr;
}

function openRow(row) {
  document.querySelectorAll(".example").forEach((b) => b.classList.remove("selected"));
  setImage(row.file, row.name);
  segment();
}

function toggleSort() {
  const batch = state.batch;
  batch.sort = batch.sort === "descending" ? "ascending" : "descending";
  renderBatch();
}

// A zip of masks/<name>_mask.png and results.jsonl, stored uncompressed (PNGs are compressed already).
function buildBatchZip() {
  const encoder = new TextEncoder();
  const files = [];
  const used = new Set();
  const lines = [];
  for (const row of state.batch.rows) {
    if (row.status === "failed") { lines.push({ file: row.name, error: row.error }); continue; }
    if (row.status !== "done") continue;
    let stem = row.name.replace(/\.[^./]+$/, "").replace(/[\\/:]/g, "__");
    while (used.has(stem)) stem += "_";
    used.add(stem);
    const maskName = `masks/${stem}_mask.png`;
    files.push({ name: maskName, data: Uint8Array.from(atob(row.mask), (ch) => ch.charCodeAt(0)) });
    lines.push({ file: row.name, text: row.text, score: row.score, anomalous: row.anomalous, area_fraction: row.area,
      anchors_found: row.anchors, mode: row.mode, threshold: row.threshold, min_area: row.min_area, mask: maskName });
  }
  files.push({ name: "results.jsonl", data: encoder.encode(lines.map((l) => JSON.stringify(l)).join("\n") + "\n") });
  return zipStore(files);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data) {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// PKWARE APPNOTE: local headers + data, then the central directory and its end record (method 0, UTF-8 names).
function zipStore(files) {
  const encoder = new TextEncoder();
  const parts = [];
  const central = [];
  let offset = 0;
  for (const file of files) {
    const name = encoder.encode(file.name);
    const crc = crc32(file.data);
    const local = new DataView(new ArrayBuffer(30));
    [[0, 0x04034b50, 4], [4, 20, 2], [6, 0x0800, 2], [14, crc, 4], [18, file.data.length, 4],
      [22, file.data.length, 4], [26, name.length, 2]].forEach(([at, v, n]) => (n === 4
      ? local.setUint32(at, v, true) : local.setUint16(at, v, true)));
    local.setUint16(12, 0x21, true);  // 1980-01-01: the page has no business stamping local time
    const entry = new DataView(new ArrayBuffer(46));
    [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [8, 0x0800, 2], [16, crc, 4], [20, file.data.length, 4],
      [24, file.data.length, 4], [28, name.length, 2], [42, offset, 4]].forEach(([at, v, n]) => (n === 4
      ? entry.setUint32(at, v, true) : entry.setUint16(at, v, true)));
    entry.setUint16(14, 0x21, true);
    parts.push(new Uint8Array(local.buffer), name, file.data);
    central.push(new Uint8Array(entry.buffer), name);
    offset += 30 + name.length + file.data.length;
  }
  const size = central.reduce((n, p) => n + p.length, 0);
  const end = new DataView(new ArrayBuffer(22));
  [[0, 0x06054b50, 4], [8, files.length, 2], [10, files.length, 2], [12, size, 4], [16, offset, 4]]
    .forEach(([at, v, n]) => (n === 4 ? end.setUint32(at, v, true) : end.setUint16(at, v, true)));
  const all = [...parts, ...central, new Uint8Array(end.buffer)];
  const out = new Uint8Array(all.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of all) { out.set(p, at); at += p.length; }
  return out;
}

function downloadBatchZip() {
  const url = URL.createObjectURL(new Blob([buildBatchZip()], { type: "application/zip" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = "agvas-batch.zip";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Files of a drop, folders walked (DataTransferItem.webkitGetAsEntry); each keeps its path in the folder.
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry())
    .filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  const out = [];
  const walk = async (entry, path) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      file.relativePath = path + file.name;
      out.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {  // readEntries returns the folder in chunks until an empty one
        const chunk = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!chunk.length) break;
        for (const child of chunk) await walk(child, `${path}${entry.name}/`);
      }
    }
  };
  for (const entry of entries) await walk(entry, "");
  return out;
}

// ---- tabs, mode, health ----------------------------------------------------------------------
const TABS = { segment: "segment-form", batch: "batch-panel", chat: "chat-panel" };

function selectTab(name, focus = false) {
  for (const [tab, panel] of Object.entries(TABS)) {
    const on = tab === name;
    const button = $(`tab-${tab}`);
    button.classList.toggle("active", on);
    button.setAttribute("aria-selected", String(on));
    button.tabIndex = on ? 0 : -1;  // one tab stop for the tab list; arrows move within it
    $(panel).hidden = !on;
    if (on && focus) button.focus();
  }
}

function tabKeys(event) {
  const names = Object.keys(TABS);
  const current = names.indexOf(event.target.id.replace("tab-", ""));
  const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  if (step) selectTab(names[(current + step + names.length) % names.length], true);
  else if (event.key === "Home") selectTab(names[0], true);
  else if (event.key === "End") selectTab(names[names.length - 1], true);
  else return;
  event.preventDefault();
}

async function loadInfo() {
  try {
    const response = await fetch("/v1/info");
    if (response.ok) {
      state.info = await response.json();
      state.model = state.info.model;
      if (!state.shown) setThreshold(state.info.threshold);
    }
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
  for (const name of Object.keys(TABS)) {
    $(`tab-${name}`).addEventListener("click", () => selectTab(name));
    $(`tab-${name}`).addEventListener("keydown", tabKeys);
  }
  $("threshold").addEventListener("input", recut);
  $("batch-files").addEventListener("change", (event) => chooseBatch([...event.target.files]));
  $("batch-folder").addEventListener("change", (event) => chooseBatch([...event.target.files]));
  $("batch-run").addEventListener("click", runBatch);
  $("batch-stop").addEventListener("click", () => { state.batch.stop = true; });
  $("batch-zip").addEventListener("click", downloadBatchZip);
  $("sort-score").addEventListener("click", toggleSort);
  $("mode").addEventListener("change", () => {
    $("expectation-row").hidden = $("mode").value !== "describe-plus";
  });
  loadInfo().then(pollHealth);
  setInterval(pollHealth, 5000);
});
