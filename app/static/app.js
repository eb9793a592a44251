"use strict";
// FaceSearch demo page: plain JS, no build step, no external resources.

const $ = (sel) => document.querySelector(sel);
const KEY = "facesearch-api-key";
const COLLECTION = "facesearch-collection";
const SERVICE_WIDE = ["/v1/info", "/v1/collections"]; // the same in every collection

const MESSAGES = {
  no_face: "No face was found in this photo. Try a sharper, front-facing photo where the face is not too small.",
  multiple_faces: "This photo shows more than one face. Enroll a photo of one person only.",
  too_large: "The file is too big. Try a smaller photo.",
  invalid_image: "This file could not be read as an image. It may be damaged or not a photo.",
  unsupported_media_type: "This kind of file is not supported. Use a JPEG, PNG, WebP, BMP, GIF or TIFF photo.",
  unauthorized: "The API key was refused. Enter a valid key.",
  not_found: "That item no longer exists. It may have been deleted.",
  conflict: "That name is already taken.",
  invalid_identity: "Names must be 1 to 128 printable characters, without '/'.",
  validation_error: "The request was not valid.",
  not_ready: "The service is still starting. Try again in a moment.",
};

class ApiError extends Error {
  constructor(code, detail, status) {
    super(MESSAGES[code] || (typeof detail === "string" ? detail : "Something went wrong."));
    this.code = code; this.detail = detail; this.status = status;
  }
}

function showError(err) {
  const box = $("#error");
  box.textContent = err ? (err.message || String(err)) : "";
  box.hidden = !err;
}

// the page works in one collection: /v1/x is /v1/collections/{c}/x there (default: /v1/x itself)
function collection() { return sessionStorage.getItem(COLLECTION) || "default"; }
function inCollection(path) {
  const c = collection();
  if (c === "default" || !path.startsWith("/v1/") || SERVICE_WIDE.some((p) => path.startsWith(p))) return path;
  return `/v1/collections/${encodeURIComponent(c)}/${path.slice(4)}`;
}

async function api(path, options = {}, retried = false) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("X-API-Key", key);
  let res;
  try {
    res = await fetch(inCollection(path), { ...options, headers });
  } catch (e) {
    throw new ApiError("network", "The service could not be reached. Is it running?", 0);
  }
  if (res.status === 401 && !retried) {
    const entered = window.prompt("This FaceSearch needs an API key:");
    if (entered) {
      sessionStorage.setItem(KEY, entered.trim());
      return api(path, options, true);
    }
  }
  const type = res.headers.get("content-type") || "";
  if (!res.ok) {
    const body = type.includes("json") ? await res.json() : {};
    throw new ApiError(body.code || "error", body.detail, res.status);
  }
  return type.includes("json") ? res.json() : res.blob();
}

const thumbCache = new Map();
async function thumbnail(faceId) {
  if (!thumbCache.has(faceId)) {
    thumbCache.set(faceId, api(`/v1/faces/${faceId}/thumbnail`).then((b) => URL.createObjectURL(b)).catch(() => ""));
  }
  return thumbCache.get(faceId);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function form(fields) {
  const data = new FormData();
  for (const [k, v] of Object.entries(fields)) {
    if (Array.isArray(v)) v.forEach((x) => data.append(k, x)); else if (v !== undefined) data.append(k, v);
  }
  return data;
}

// ---- tabs -------------------------------------------------------------------------------------------
const tabs = ["search", "verify", "gallery", "photos"];
function select(name) {
  for (const t of tabs) {
    $(`#tab-${t}`).setAttribute("aria-selected", String(t === name));
    $(`#view-${t}`).hidden = t !== name;
  }
  showError(null);
  if (name === "gallery") loadGallery();
  if (name === "photos") loadPeople();
}
tabs.forEach((t, i) => {
  const tab = $(`#tab-${t}`);
  tab.addEventListener("click", () => select(t));
  tab.addEventListener("keydown", (e) => {
    const d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
    if (d) { const n = tabs[(i + d + tabs.length) % tabs.length]; select(n); $(`#tab-${n}`).focus(); }
  });
});
$("#key-button").addEventListener("click", () => {
  const entered = window.prompt("API key (kept for this browser tab only):", sessionStorage.getItem(KEY) || "");
  if (entered !== null) { sessionStorage.setItem(KEY, entered.trim()); loadCollections(); }
});

// ---- collections: a picker of those the key may use (default first), and the key's role ---------------
async function loadCollections() {
  try {
    const [list, info] = await Promise.all([api("/v1/collections"), api("/v1/info")]);
    const names = list.items.map((c) => c.name);
    if (!names.includes(collection())) sessionStorage.setItem(COLLECTION, names[0] || "default");
    $("#collection").replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    $("#collection").value = collection();
    const who = info.caller;
    $("#role").textContent = who ? `${who.key_id === "open" ? "open service" : `${who.role} key`}` +
      (who.collections.length ? ` for ${who.collections.join(", ")}` : "") : "";
  } catch (e) { showError(e); }
}
$("#collection").addEventListener("change", () => {
  sessionStorage.setItem(COLLECTION, $("#collection").value);
  thumbCache.clear(); // face ids are per collection
  select(tabs.find((t) => $(`#tab-${t}`).getAttribute("aria-selected") === "true") || "search");
});
loadCollections();

// ---- photo with boxes -------------------------------------------------------------------------------
function drawPhoto(container, file, faces, size, onPick) {
  container.replaceChildren();
  const img = el("img", { src: URL.createObjectURL(file), alt: "uploaded photo" });
  container.append(img);
  const buttons = faces.map((f, i) => {
    const [x1, y1, x2, y2] = f.box;
    const label = f.identity ? f.identity : (f.decision === "unknown" ? "unknown" : `face ${i + 1}`);
    const b = el("button", {
      class: `box ${f.decision || ""}`, type: "button", "aria-label": `Face ${i + 1}: ${label}`,
      style: `left:${(100 * x1) / size.width}%;top:${(100 * y1) / size.height}%;` +
             `width:${(100 * (x2 - x1)) / size.width}%;height:${(100 * (y2 - y1)) / size.height}%`,
    }, el("span", {}, label));
    if (onPick) b.addEventListener("click", () => { buttons.forEach((o) => o.classList.remove("selected")); b.classList.add("selected"); onPick(i); });
    container.append(b);
    return b;
  });
  return buttons;
}

// ---- search -----------------------------------------------------------------------------------------
async function search(file) {
  showError(null);
  $("#search-status").textContent = "Searching…";
  $("#search-matches").replaceChildren();
  try {
    const res = await api("/v1/search", { method: "POST", body: form({ image: file, k: 5 }) });
    const n = res.faces.length;
    $("#search-status").textContent = n
      ? `${n} face${n > 1 ? "s" : ""} found in ${res.took_ms.toFixed(0)} ms. Threshold: distance ${res.threshold.distance.toFixed(3)}` +
        (res.threshold.target_fpir ? ` (a stranger is matched with probability ≈ ${(100 * res.threshold.target_fpir).toFixed(1)}%).` : ".")
      : "No face was found in this photo.";
    const buttons = drawPhoto($("#search-photo"), file, res.faces, res.image, (i) => showMatches(res.faces[i], i));
    if (buttons.length) buttons[0].click();
  } catch (e) {
    $("#search-status").textContent = "";
    showError(e);
  }
}

async function showMatches(face, i) {
  const box = $("#search-matches");
  const title = el("h2", {}, `Face ${i + 1}: `, el("span", { class: `decision ${face.decision}` },
    face.decision === "match" ? face.identity : "unknown"));
  const list = el("ul", { class: "cards" });
  box.replaceChildren(title, list);
  if (!face.candidates.length) list.append(el("li", {}, "The gallery is empty."));
  for (const c of face.candidates) {
    const img = el("img", { alt: `enrolled face of ${c.identity}` });
    thumbnail(c.face_id).then((u) => { if (u) img.src = u; });
    const pct = Math.max(0, Math.min(100, 100 * c.similarity));
    const matched = face.decision === "match" && face.identity === c.identity;
    list.append(el("li", { class: "card" }, img, el("div", {},
      el("strong", {}, c.identity), el("div", { class: "bar", role: "img", "aria-label": `similarity ${pct.toFixed(0)}%` },
        el("div", { style: `width:${pct}%` })),
      el("small", {}, `similarity ${c.similarity.toFixed(3)} · distance ${c.distance.toFixed(3)} · `),
      el("small", { class: `decision ${matched ? "match" : "unknown"}` }, matched ? "match" : "not a match"))));
  }
}

const drop = $("#search-drop");
$("#search-file").addEventListener("change", (e) => e.target.files[0] && search(e.target.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) search(e.dataTransfer.files[0]); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#search-file").click(); } });

// a camera panel: open shows the live video, shoot hands a JPEG to onPhoto and closes it
function camera(ids, name, onPhoto) {
  let stream = null;
  const close = () => { if (stream) stream.getTracks().forEach((t) => t.stop()); stream = null; $(ids.panel).hidden = true; };
  $(ids.open).addEventListener("click", async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true });
      $(ids.video).srcObject = stream;
      $(ids.panel).hidden = false;
    } catch (e) {
      showError(new Error("The camera is not available (no camera, or permission was refused)."));
    }
  });
  $(ids.close).addEventListener("click", close);
  $(ids.shoot).addEventListener("click", () => {
    const v = $(ids.video);
    const c = el("canvas"); c.width = v.videoWidth; c.height = v.videoHeight;
    c.getContext("2d").drawImage(v, 0, 0);
    c.toBlob((b) => { close(); onPhoto(new File([b], name, { type: "image/jpeg" })); }, "image/jpeg", 0.92);
  });
}
camera({ open: "#camera-button", panel: "#camera", video: "#camera-video", shoot: "#camera-shoot", close: "#camera-close" },
  "camera.jpg", search);

// ---- verify -----------------------------------------------------------------------------------------
const pair = [null, null];
for (const i of [1, 2]) {
  $(`#verify-file${i}`).addEventListener("change", (e) => {
    pair[i - 1] = e.target.files[0] || null;
    if (pair[i - 1]) drawPhoto($(`#verify-photo${i}`), pair[i - 1], [], { width: 1, height: 1 });
    $("#verify-run").disabled = !(pair[0] && pair[1]);
  });
}
$("#verify-run").addEventListener("click", async () => {
  showError(null);
  $("#verify-result").textContent = "Comparing…";
  try {
    const res = await api("/v1/verify", { method: "POST", body: form({ image1: pair[0], image2: pair[1] }) });
    for (const i of [0, 1]) {
      const f = res.faces[i];
      const img = await createImageBitmap(pair[i]);
      drawPhoto($(`#verify-photo${i + 1}`), pair[i], [{ box: f.box, decision: res.same_person ? "match" : "unknown", identity: f.note || "face used" }],
        { width: img.width, height: img.height });
    }
    const pos = (d) => `${Math.min(100, (100 * d) / 2)}%`;
    $("#verify-result").replaceChildren(
      el("p", { class: `decision ${res.same_person ? "match" : "unknown"}` },
        res.same_person ? "Same person" : "Different people"),
      el("div", { class: "scale", role: "img", "aria-label": `distance ${res.distance.toFixed(3)}, threshold ${res.threshold.distance.toFixed(3)}` },
        el("div", { class: "threshold", style: `left:${pos(res.threshold.distance)}` }),
        el("div", { class: "marker", style: `left:${pos(res.distance)}` }),
        el("span", { class: "label", style: `left:${pos(res.distance)}` }, `distance ${res.distance.toFixed(3)}`),
        el("span", { class: "label", style: `left:${pos(res.threshold.distance)};top:-1.4rem` }, `threshold ${res.threshold.distance.toFixed(3)}`)),
      el("p", {}, `Similarity ${res.similarity.toFixed(3)} · ${res.took_ms.toFixed(0)} ms · model ${res.model}`));
  } catch (e) {
    $("#verify-result").textContent = "";
    showError(e);
  }
});

// ---- gallery ----------------------------------------------------------------------------------------
const PAGE = 12;
let offset = 0;
async function loadGallery() {
  try {
    const prefix = $("#gallery-prefix").value;
    const res = await api(`/v1/identities?limit=${PAGE}&offset=${offset}&prefix=${encodeURIComponent(prefix)}`);
    $("#gallery-total").textContent = `${res.total} identit${res.total === 1 ? "y" : "ies"}`;
    $("#gallery-prev").disabled = offset === 0;
    $("#gallery-next").disabled = offset + PAGE >= res.total;
    const list = $("#gallery-list");
    list.replaceChildren(...res.items.map(identityItem));
    showGalleryModel((await api("/v1/info")).gallery);
  } catch (e) { showError(e); }
}

// the model the gallery's embeddings come from and, while `facesearch gallery reembed` runs, its progress
let modelTimer = null;
function showGalleryModel(g) {
  clearTimeout(modelTimer);
  if (!g) return;
  let text = `Embeddings: model ${g.model_version} (generation ${g.generation})`;
  if (g.reembed) {
    text += ` · re-embedding for ${g.reembed.target_model}: ${g.reembed.done} of ${g.reembed.total} faces`;
    modelTimer = setTimeout(() => api("/v1/info").then((i) => showGalleryModel(i.gallery)).catch(() => {}), 3000);
  }
  $("#gallery-model").textContent = text;
}

function identityItem(item) {
  const faces = el("div", { class: "faces" });
  const li = el("li", { class: "identity" },
    el("header", { class: "row" }, el("strong", {}, item.identity), el("span", {}, `${item.faces} face${item.faces === 1 ? "" : "s"}`),
      el("button", { type: "button", class: "secondary", onclick: () => rename(item.identity) }, "Rename"),
      el("button", { type: "button", class: "secondary", onclick: () => exportIdentity(item.identity) }, "Export"),
      el("button", { type: "button", class: "secondary", onclick: () => removeIdentity(item.identity) }, "Delete")),
    faces);
  api(`/v1/identities/${encodeURIComponent(item.identity)}?limit=20`).then((d) => {
    for (const f of d.face_list.items) {
      const img = el("img", { class: "thumb", alt: `face ${f.face_id} of ${item.identity}` });
      thumbnail(f.face_id).then((u) => { if (u) img.src = u; });
      faces.append(el("div", { class: "face" }, img,
        el("button", { type: "button", "aria-label": `Delete face ${f.face_id}`, onclick: () => removeFace(f.face_id) }, "×")));
    }
  }).catch(showError);
  return li;
}

async function rename(identity) {
  const name = window.prompt(`New name for ${identity}:`, identity);
  if (!name || name === identity) return;
  try { await api(`/v1/identities/${encodeURIComponent(identity)}`, { method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ identity: name }) }); loadGallery(); }
  catch (e) { showError(e); }
}
// subject access: everything stored about the identity, as the zip the API streams
async function exportIdentity(identity) {
  try {
    const blob = await api(`/v1/identities/${encodeURIComponent(identity)}/export`);
    const a = el("a", { href: URL.createObjectURL(blob), download: `${identity}.zip` });
    document.body.append(a); a.click(); a.remove();
  } catch (e) { showError(e); }
}
async function removeIdentity(identity) {
  if (!window.confirm(`Delete ${identity} and all their faces?`)) return;
  try { await api(`/v1/identities/${encodeURIComponent(identity)}`, { method: "DELETE" }); loadGallery(); } catch (e) { showError(e); }
}
async function removeFace(faceId) {
  if (!window.confirm("Delete this face?")) return;
  try { await api(`/v1/faces/${faceId}`, { method: "DELETE" }); loadGallery(); } catch (e) { showError(e); }
}

$("#enroll-files").addEventListener("change", (e) => { $("#enroll-count").textContent = `${e.target.files.length} photo(s) chosen`; });
$("#enroll-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError(null);
  const name = $("#enroll-name").value.trim();
  const files = [...$("#enroll-files").files];
  if (!files.length) { showError(new Error("Choose at least one photo to enroll.")); return; }
  const out = $("#enroll-results");
  out.replaceChildren();
  for (const file of files) {
    const li = el("li", {}, `${file.name}: enrolling…`);
    out.append(li);
    try {
      const res = await api(`/v1/identities/${encodeURIComponent(name)}/faces`, { method: "POST", body: form({ image: file }) });
      const f = res.faces[0];
      li.replaceChildren(`${file.name}: enrolled as face ${f.face_id}`,
        ...f.warnings.map((w) => el("div", { class: "warn" }, `⚠ ${w}`)));
    } catch (err) {
      li.replaceChildren(el("span", { class: "decision unknown" }, `${file.name}: ${err.message}`));
    }
  }
  loadGallery();
});
$("#gallery-filter").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; loadGallery(); });
$("#gallery-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadGallery(); });
$("#gallery-next").addEventListener("click", () => { offset += PAGE; loadGallery(); });

// ---- photos: upload many, find my photos, people from unnamed faces ---------------------------------
$("#photos-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError(null);
  const files = [...$("#photos-files").files];
  if (!files.length) { showError(new Error("Choose one or more photos to upload.")); return; }
  const bar = $("#photos-progress");
  bar.hidden = false; bar.max = files.length; bar.value = 0;
  let faces = 0, failed = 0;
  for (const file of files) {
    try {
      const res = await api("/v1/photos", { method: "POST", body: form({ image: file, album: $("#photos-album").value }) });
      faces += res.faces.length;
    } catch (err) {
      failed += 1;
      showError(new Error(`${file.name}: ${err.message}`));
    }
    bar.value += 1;
    $("#photos-status").textContent = `${bar.value} of ${files.length} photos uploaded, ${faces} faces found` +
      (failed ? `, ${failed} failed` : "");
  }
  loadPeople();
});

async function findPhotos(file) {
  showError(null);
  $("#find-status").textContent = "Looking for this person…";
  const list = $("#find-results");
  list.replaceChildren();
  try {
    const album = $("#photos-album").value.trim();
    const res = await api("/v1/photos/search", { method: "POST", body: form({ image: file, album: album || undefined }) });
    $("#find-status").textContent = res.photos.length
      ? `Found in ${res.photos.length} photo${res.photos.length > 1 ? "s" : ""}.`
      : "This person is in none of the photos.";
    for (const p of res.photos) {
      const img = el("img", { alt: `the matching face in photo ${p.photo_id}` });
      thumbnail(p.face_id).then((u) => { if (u) img.src = u; });
      list.append(el("li", { class: "card" }, img, el("div", {}, el("strong", {}, p.photo_id), el("br"),
        el("small", {}, `${p.album ? `album ${p.album} · ` : ""}similarity ${p.similarity.toFixed(3)}`))));
    }
  } catch (e) { $("#find-status").textContent = ""; showError(e); }
}
$("#find-file").addEventListener("change", (e) => e.target.files[0] && findPhotos(e.target.files[0]));
camera({ open: "#find-camera", panel: "#find-cam", video: "#find-video", shoot: "#find-shoot", close: "#find-close" },
  "selfie.jpg", findPhotos);

let mergeFrom = null;
async function loadPeople() {
  try {
    const res = await api("/v1/clusters?limit=50");
    $("#people-list").replaceChildren(...(res.items.length ? res.items.map(personItem)
      : [el("li", {}, "No unnamed faces: upload photos above.")]));
  } catch (e) { showError(e); }
}
function personItem(c) {
  const faces = el("div", { class: "faces" });
  for (const id of c.face_ids) {
    const img = el("img", { class: "thumb", alt: `face ${id}` });
    thumbnail(id).then((u) => { if (u) img.src = u; });
    faces.append(el("div", { class: "face" }, img));
  }
  const merge = mergeFrom === null
    ? el("button", { type: "button", class: "secondary", onclick: () => { mergeFrom = c.cluster_id; loadPeople(); } }, "Merge…")
    : mergeFrom === c.cluster_id
      ? el("button", { type: "button", class: "secondary", onclick: () => { mergeFrom = null; loadPeople(); } }, "Cancel merge")
      : el("button", { type: "button", class: "secondary", onclick: () => mergeInto(c.cluster_id) }, "Merge here");
  return el("li", { class: "identity person", "data-cluster": String(c.cluster_id) },
    el("header", { class: "row" }, el("strong", {}, `Person ${c.cluster_id}`),
      el("span", {}, `${c.faces} face${c.faces === 1 ? "" : "s"} in ${c.photos.length} photo${c.photos.length === 1 ? "" : "s"}`),
      el("button", { type: "button", onclick: () => namePerson(c.cluster_id) }, "Name"), merge,
      el("button", { type: "button", class: "secondary", onclick: () => erasePerson(c.cluster_id) }, "Delete")),
    faces);
}
async function namePerson(id) {
  const name = window.prompt("Who is this?");
  if (!name || !name.trim()) return;
  try {
    await api(`/v1/clusters/${id}/name`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ identity: name.trim() }) });
    $("#photos-status").textContent = `Named ${name.trim()}: now an identity in the gallery.`;
    loadPeople();
  } catch (e) { showError(e); }
}
async function mergeInto(id) {
  const from = mergeFrom;
  mergeFrom = null;
  try {
    await api(`/v1/clusters/${id}/merge`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ cluster_id: from }) });
    loadPeople();
  } catch (e) { showError(e); }
}
async function erasePerson(id) {
  if (!window.confirm("Erase these faces from every photo?")) return;
  try { await api(`/v1/clusters/${id}`, { method: "DELETE" }); loadPeople(); } catch (e) { showError(e); }
}
// regrouping runs in the background on the server: follow its stage until it is done
$("#people-rebuild").addEventListener("click", async () => {
  showError(null);
  try {
    let job = await api("/v1/clusters/rebuild", { method: "POST" });
    while (job.state === "running") {
      $("#photos-status").textContent = `Regrouping: ${job.stage}${job.faces ? ` (${job.faces} faces)` : ""}…`;
      await new Promise((r) => setTimeout(r, 500));
      job = await api("/v1/clusters/rebuild");
    }
    if (job.state === "failed") throw new Error(`Regrouping failed: ${job.error}`);
    $("#photos-status").textContent = `${job.faces} faces regrouped into ${job.clusters} people.`;
    loadPeople();
  } catch (e) { showError(e); }
});
