// zscir web page: pick a reference (upload or gallery click), type a modification, see ranked results.
// Either may be left out: a text alone searches by the text, a picture alone finds more like it.
// Plain JS against the JSON API of zscir.serve.app; no build step, no external resources.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { itemId: null, file: null, offset: 0, total: 0, pageSize: 60, defaultMethod: null };

function figure(src, caption, title) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src; img.alt = title || caption; img.loading = "lazy";
  const cap = document.createElement("figcaption");
  cap.textContent = caption; cap.title = title || caption;
  fig.append(img, cap);
  return fig;
}

// the file name of a path (what a tile shows; the full path is its hover title)
function fileName(path, fallback) {
  if (!path) return fallback;
  const parts = String(path).split(/[\\/]/);
  return parts[parts.length - 1] || fallback;
}

function galleryTile(fig, id, thumbnail) {
  fig.dataset.id = id;
  fig.className = "thumb";
  fig.addEventListener("click", () => setReferenceItem(id, thumbnail, fig));
}

function showError(msg) { $("error").textContent = msg || ""; }

async function api(path, options) {
  const resp = await fetch(path, options);
  let body = null;
  try { body = await resp.json(); } catch (e) { /* non-JSON */ }
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : `HTTP ${resp.status}`;
    throw new Error(msg);
  }
  return body;
}

function setReferenceItem(id, src, fig) {
  state.itemId = id; state.file = null; $("file").value = "";
  document.querySelectorAll("#gallery figure.selected").forEach((f) => f.classList.remove("selected"));
  if (fig) fig.classList.add("selected");
  $("reference-preview").src = src; $("reference-preview").hidden = false;
  $("reference-label").textContent = `indexed item: ${id}`;
  $("clear-reference").hidden = false;
}

// back to no reference: the next search is by the text alone
function clearReference() {
  state.itemId = null; state.file = null; $("file").value = "";
  document.querySelectorAll("#gallery figure.selected").forEach((f) => f.classList.remove("selected"));
  $("reference-preview").hidden = true; $("reference-preview").removeAttribute("src");
  $("reference-label").textContent =
    "No reference: the text alone is searched. Upload an image, or click any gallery image below.";
  $("clear-reference").hidden = true;
}

async function loadGallery() {
  const page = await api(`/items?offset=${state.offset}&limit=${state.pageSize}`);
  state.total = page.total;
  for (const it of page.items) {
    const fig = figure(it.thumbnail, fileName(it.path, it.id), it.path || it.id);
    galleryTile(fig, it.id, it.thumbnail);
    $("gallery").append(fig);
  }
  state.offset += page.items.length;
  $("gallery-count").textContent = `(${state.offset} of ${state.total})`;
  $("more").hidden = state.offset >= state.total;
}

async function loadMethods() {
  const data = await api("/methods");
  state.defaultMethod = data.default;
  const sel = $("method");
  for (const m of data.methods) {
    const opt = document.createElement("option");
    opt.value = m.name;
    const label = m.name === data.default ? `${m.name} (default)` : m.name;
    opt.textContent = m.available ? label : `${m.name} (unavailable)`;
    opt.title = m.available ? m.description : (m.reason || "");
    opt.disabled = !m.available;
    opt.selected = m.name === data.default;
    sel.append(opt);
  }
}

async function search(ev) {
  ev.preventDefault();
  showError("");
  const hasText = $("text").value.trim() !== "";
  if (!state.itemId && !state.file && !hasText) {
    showError("Choose a reference image, type a text, or both."); return;
  }
  const form = new FormData();
  form.append("text", $("text").value);
  form.append("k", $("k").value);
  // the default method is left to the server, which answers a text or a picture alone with the method that
  // reads it (and says so); a method picked explicitly is sent, and refused when it needs the missing side
  const method = $("method").value;
  if (method && method !== state.defaultMethod) form.append("method", method);
  if (state.file) form.append("image", state.file); else if (state.itemId) form.append("item_id", state.itemId);
  $("status").textContent = "searching…";
  $("search").disabled = true;
  try {
    const res = await api("/search", { method: "POST", body: form });
    const grid = $("results");
    grid.replaceChildren();
    for (const r of res.results) {
      const fig = figure(r.thumbnail, `#${r.rank} ${r.score.toFixed(3)} ${fileName(r.path, r.id)}`, r.path || r.id);
      fig.className = "result";
      fig.dataset.id = r.id;
      grid.append(fig);
    }
    const notes = [res.note, res.reference && res.reference.note].filter(Boolean);
    const note = notes.map((n) => ` · ${n}`).join("");
    $("status").textContent = `${res.results.length} results with ${res.method} in ${res.took_ms} ms${note}`;
  } catch (e) {
    $("status").textContent = "";
    showError(e.message);
  } finally {
    $("search").disabled = false;
  }
}

$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (!f) return;
  state.file = f; state.itemId = null;
  document.querySelectorAll("#gallery figure.selected").forEach((x) => x.classList.remove("selected"));
  $("reference-preview").src = URL.createObjectURL(f); $("reference-preview").hidden = false;
  $("reference-label").textContent = `upload: ${f.name}`;
  $("clear-reference").hidden = false;
});
$("clear-reference").addEventListener("click", clearReference);
$("search-form").addEventListener("submit", search);
$("more").addEventListener("click", () => loadGallery().catch((e) => showError(e.message)));

// The server renders the summary and the first gallery page into the HTML (zscir.serve.page): adopt those
// tiles and continue after them; without them (an older server) load the first page here.
function adoptRenderedGallery() {
  const g = $("gallery");
  const n = Number(g.dataset.rendered || 0);
  g.querySelectorAll("figure.thumb").forEach((fig) => {
    galleryTile(fig, fig.dataset.id, fig.querySelector("img").getAttribute("src"));
  });
  state.offset = n; state.total = Number(g.dataset.total || 0);
  $("more").hidden = state.offset >= state.total;
  return n > 0 || g.dataset.rendered !== undefined;
}

(async () => {
  try {
    const rendered = adoptRenderedGallery();
    const h = await api("/health");
    $("summary").textContent = `${h.items} images · model ${h.model} · default method ${h.method}`;
    const mi = h.model_info || {};
    if (mi.purpose) {  // what the model is for; a model that does not know real photos says how to pick one
      const hint = mi.hint ? ` ${mi.hint[0].toUpperCase()}${mi.hint.slice(1)}.` : "";
      $("model-note").textContent = `Model ${mi.name}: ${mi.purpose}.${hint}`;
      $("model-note").className = mi.real_images ? "" : "caveat";
    }
    await Promise.all([loadMethods(), rendered ? Promise.resolve() : loadGallery()]);
  } catch (e) { showError(e.message); }
})();
