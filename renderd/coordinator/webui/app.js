// renderd dashboard: renders the farm snapshots the daemon streams at /api/events (Server-Sent
// Events). Rows are updated in place, so a button stays the same element while it is clicked.
"use strict";

const TOKEN_KEY = "renderd-token";
let actionsOn = false;

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtNum(v, digits) { return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "–"; }

function fmtDuration(s) {
  if (typeof s !== "number" || !isFinite(s) || s < 0) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

function fmtCounts(obj) {
  const parts = Object.entries(obj || {}).sort().map(([k, n]) => `${n} ${k}`);
  return parts.length ? parts.join(" · ") : "–";
}

function say(text, ok) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = ok ? "ok" : "";
}

async function act(path, label) {
  if (!token()) { say("Enter the action token first."); return; }
  try {
    const r = await fetch(path, { method: "POST", headers: { Authorization: `Bearer ${token()}` } });
    const body = await r.json().catch(() => ({}));
    if (r.ok && body.ok) say(`${label}: done`, true);
    else say(`${label}: ${(body.error && body.error.message) || r.statusText}`);
  } catch (e) {
    say(`${label}: ${e}`);
  }
}

function setImg(img, url) {
  if (!url) { img.hidden = true; img.removeAttribute("src"); return; }
  if (img.getAttribute("src") !== url) { img.hidden = false; img.src = url; }
}

function cells(row, n) {
  while (row.cells.length < n) row.insertCell();
  return Array.from(row.cells);
}

function button(op, label, onClick) {
  const b = el("button", "", label);
  b.dataset.op = op;
  b.addEventListener("click", onClick);
  return b;
}

function jobRow(tbody, job) {
  let row = tbody.querySelector(`tr[data-job="${CSS.escape(job.id)}"]`);
  if (!row) {
    row = tbody.insertRow();
    row.dataset.job = job.id;
    const c = cells(row, 10);
    c[0].append(el("div", "id", job.id), el("div", "small name"));
    c[2].append(el("span", "bar"), el("span", "small frames"));
    c[2].firstChild.append(el("span"));
    const poster = el("img", "thumb poster"); poster.alt = "poster"; poster.hidden = true;
    const latest = el("img", "thumb latest"); latest.alt = "latest verified chunk"; latest.hidden = true;
    for (const img of [poster, latest]) img.addEventListener("error", () => { img.hidden = true; });
    c[7].append(poster);
    c[8].append(latest);
    c[9].append(
      button("cancel", "Cancel", () => act(`/api/jobs/${encodeURIComponent(job.id)}/cancel`, `cancel ${job.id}`)),
      button("retry", "Retry", () => act(`/api/jobs/${encodeURIComponent(job.id)}/retry`, `retry ${job.id}`)),
    );
    for (const i of [3, 4]) c[i].className = "num";
  }
  const c = cells(row, 10);
  const label = job.label || (job.composition || "").split("/").filter(Boolean).pop() || "";
  c[0].querySelector(".name").textContent = label;
  c[1].textContent = job.state;
  c[1].className = `state state-${job.state}`;
  const frames = job.frames || 0, done = job.frames_done || 0;
  const pct = frames ? (100 * done) / frames : 0;
  c[2].querySelector(".bar > span").style.width = `${pct.toFixed(1)}%`;
  const fr = c[2].querySelector(".frames");
  fr.textContent = ` ${done}/${frames}`;
  row.dataset.framesDone = String(done);
  row.dataset.state = job.state;
  c[3].textContent = fmtNum(job.fps, 1);
  c[4].textContent = job.state === "running" ? fmtDuration(job.eta_s) : fmtDuration(job.elapsed_s);
  c[4].title = job.state === "running" ? "estimated time left" : "elapsed";
  c[5].textContent = fmtCounts(job.chunks_by_state);
  c[6].textContent = fmtCounts(job.chunks_by_host);
  const base = `/api/jobs/${encodeURIComponent(job.id)}`;
  setImg(c[7].querySelector("img"), job.poster ? `${base}/poster?c=${job.poster.slice(0, 16)}` : null);
  setImg(c[8].querySelector("img"), job.thumb ? `${base}/thumb?c=${job.thumb.slice(0, 16)}` : null);
  const finished = ["done", "failed", "cancelled"].includes(job.state);
  c[9].querySelector('[data-op="cancel"]').disabled = !actionsOn || finished;
  c[9].querySelector('[data-op="retry"]').disabled = !actionsOn || !["failed", "cancelled"].includes(job.state);
  return row;
}

function hostRow(tbody, host) {
  let row = tbody.querySelector(`tr[data-host="${CSS.escape(host.name)}"]`);
  if (!row) {
    row = tbody.insertRow();
    row.dataset.host = host.name;
    const c = cells(row, 8);
    const path = (op) => `/api/hosts/${encodeURIComponent(host.name)}/${op}`;
    c[7].append(
      button("drain", "Drain", () => act(path("drain"), `drain ${host.name}`)),
      button("undrain", "Undrain", () => act(path("undrain"), `undrain ${host.name}`)),
    );
    for (const i of [2, 3, 4]) c[i].className = "num";
  }
  const c = cells(row, 8);
  c[0].textContent = host.name;
  c[0].title = host.address || "";
  c[1].textContent = host.enabled === false ? `${host.state} (disabled)` : host.state;
  c[1].className = `state state-${host.state}`;
  c[2].textContent = `${host.slots_in_use || 0}/${host.slots || 0}`;
  c[3].textContent = fmtNum(host.speed_fps, 1);
  c[4].textContent = String(host.consecutive_failures || 0);
  const until = host.quarantined_until;
  c[5].textContent = until && until * 1000 > Date.now() ? `in ${fmtDuration(until - Date.now() / 1000)}` : "–";
  c[6].textContent = host.last_error || "";
  c[6].className = "small";
  c[7].querySelector('[data-op="drain"]').disabled = !actionsOn || host.state === "drained";
  c[7].querySelector('[data-op="undrain"]').disabled = !actionsOn || host.state !== "drained";
  return row;
}

function sync(tbody, items, make) {
  const keep = new Set(items.map((it) => make(tbody, it)));
  for (const row of Array.from(tbody.rows)) if (!keep.has(row)) row.remove();
  // Keep the daemon's order (newest job first).
  for (const row of keep) tbody.appendChild(row);
}

function render(farm) {
  actionsOn = !!farm.actions;
  document.getElementById("token-state").textContent = !actionsOn
    ? "actions are off (no web.token_file)"
    : token() ? "token set" : "";
  sync(document.querySelector("#jobs tbody"), farm.jobs || [], jobRow);
  sync(document.querySelector("#hosts tbody"), farm.hosts || [], hostRow);
  document.getElementById("no-jobs").hidden = (farm.jobs || []).length > 0;
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.onopen = () => { live.textContent = "live"; live.className = "live"; };
  source.onmessage = (e) => render(JSON.parse(e.data));
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("token");
  if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  say("");
  document.getElementById("token-state").textContent = token() ? "token set" : "";
});

connect();
