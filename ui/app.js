// The Conclave dashboard: read-only, served by every node at /ui. It reads the
// cluster through the HTTP API of the node that served it (docs/api.md) with the
// token the user gives (kept in this tab's sessionStorage, or from #token=...), and
// stays current from that node's watch stream (GET /v1/watch, read with fetch so it
// can carry the token): each event refreshes the panel it concerns, and the stream's
// node-local `cluster` frames update leader, term and roles. No polling.
"use strict";

const FEED_MAX = 100;
const LIST_LIMIT = 200;
const $ = (id) => document.getElementById(id);

let token = tokenFromHash() || sessionStorage.getItem("conclave-token") || "";
let lastId = null;
const pending = new Set();
let refreshTimer = null;

function tokenFromHash() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  const value = decodeURIComponent(match[1]);
  sessionStorage.setItem("conclave-token", value);
  history.replaceState(null, "", location.pathname);
  return value;
}

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  if (response.status === 401) {
    showLogin();
    throw new Error("unauthenticated");
  }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function showLogin() {
  $("login").hidden = false;
  $("panels").hidden = true;
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("conclave-token", token);
  $("login").hidden = true;
  $("panels").hidden = false;
  start();
});

function text(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

// Fills table `id` with `rows` (objects) under `columns` ([header, row => value]).
function table(id, columns, rows, rowClass) {
  const element = $(id);
  element.replaceChildren();
  const head = element.insertRow();
  for (const [name] of columns) {
    const th = document.createElement("th");
    th.textContent = name;
    head.appendChild(th);
  }
  if (rows.length === 0) {
    const cell = element.insertRow().insertCell();
    cell.colSpan = columns.length;
    cell.className = "empty";
    cell.textContent = "none";
    return;
  }
  for (const row of rows) {
    const tr = element.insertRow();
    if (rowClass) tr.className = rowClass(row) || "";
    for (const [, value] of columns) tr.insertCell().textContent = text(value(row));
  }
}

let view = { leader_id: null };

function showFacts(facts) {
  if (facts.node_id !== undefined) $("node").textContent = facts.node_id;
  if (facts.state !== undefined || facts.role !== undefined) {
    $("role").textContent = facts.state || facts.role;
  }
  $("leader").textContent = facts.leader_id === null ? "none" : facts.leader_id;
  $("term").textContent = facts.term;
  if (facts.commit_index !== undefined) $("commit").textContent = facts.commit_index;
  if (facts.last_applied_index !== undefined) $("applied").textContent = facts.last_applied_index;
  view.leader_id = facts.leader_id;
}

const panels = {
  async members() {
    const cluster = await api("/v1/cluster");
    showFacts(cluster);
    table("members", [
      ["id", (m) => m.id],
      ["addr", (m) => m.addr],
      ["role", (m) => (m.id === cluster.leader_id ? "leader" : m.role)],
      ["matched", (m) => m.matched_index],
      ["lag", (m) => m.lag],
    ], cluster.members, (m) => (m.id === cluster.leader_id ? "leader" : ""));
  },
  async sessions() {
    const page = await api("/v1/sessions?limit=" + LIST_LIMIT);
    table("sessions", [
      ["id", (s) => s.session_id],
      ["name", (s) => s.name],
      ["capabilities", (s) => (s.capabilities || []).join(", ")],
      ["load", (s) => s.load + " / " + s.capacity],
      ["expires", (s) => new Date(s.expires_at_ms).toLocaleTimeString()],
    ], page.items);
  },
  async tasks() {
    const page = await api("/v1/tasks?limit=1000");
    const counts = {};
    for (const task of page.items) counts[task.state] = (counts[task.state] || 0) + 1;
    const box = $("task-counts");
    box.replaceChildren();
    for (const [state, n] of Object.entries(counts)) {
      const span = document.createElement("span");
      span.textContent = state + ": " + n;
      box.appendChild(span);
    }
    const latest = page.items.slice(-20).reverse();
    table("tasks", [
      ["id", (t) => t.task_id],
      ["kind", (t) => t.kind],
      ["state", (t) => t.state],
      ["session", (t) => t.session_id],
      ["attempts", (t) => t.attempts],
    ], latest);
  },
  async locks() {
    const page = await api("/v1/locks?limit=" + LIST_LIMIT);
    table("locks", [
      ["name", (l) => l.name],
      ["holders", (l) => l.holders.map((h) => h.session_id + " (" + h.mode + ", token " + h.fencing_token + ")").join("; ")],
      ["waiters", (l) => l.waiters.length],
    ], page.items);
  },
  async semaphores() {
    const page = await api("/v1/semaphores?limit=" + LIST_LIMIT);
    table("semaphores", [
      ["name", (s) => s.name],
      ["limit", (s) => s.limit],
      ["holders", (s) => (s.holders || []).map((h) => h.session_id + "×" + h.permits).join(", ")],
      ["waiters", (s) => (s.waiters || []).length],
    ], page.items);
  },
  async barriers() {
    const page = await api("/v1/barriers?limit=" + LIST_LIMIT);
    table("barriers", [
      ["name", (b) => b.name],
      ["generation", (b) => b.generation],
      ["arrived", (b) => b.arrived.length + " / " + b.parties],
    ], page.items);
  },
  async elections() {
    const page = await api("/v1/elections?limit=" + LIST_LIMIT);
    table("elections", [
      ["name", (e) => e.name],
      ["leader", (e) => e.leader_session_id],
      ["term", (e) => e.term],
      ["candidates", (e) => e.candidates.length],
    ], page.items);
  },
  async proposals() {
    const page = await api("/v1/proposals?state=open&limit=" + LIST_LIMIT);
    table("proposals", [
      ["id", (p) => p.proposal_id],
      ["title", (p) => p.title],
      ["rule", (p) => p.rule],
      ["tally", (p) => p.tally],
    ], page.items);
  },
  async twophase() {
    const page = await api("/v1/2pc?state=preparing&limit=" + LIST_LIMIT);
    table("twophase", [
      ["id", (t) => t.id],
      ["participants", (t) => t.participants],
      ["votes", (t) => t.votes],
    ], page.items);
  },
};

// Which panels an event type concerns.
function panelsOf(type) {
  const family = type.split(".")[0];
  return {
    kv: [], session: ["sessions", "tasks", "locks", "semaphores", "barriers", "elections"],
    task: ["tasks", "sessions"], lock: ["locks"], semaphore: ["semaphores"],
    barrier: ["barriers"], election: ["elections"], proposal: ["proposals"],
    "2pc": ["twophase"], membership: ["members"],
  }[family] || [];
}

function refresh(names) {
  for (const name of names) pending.add(name);
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    const names = [...pending];
    pending.clear();
    await Promise.all(names.map((name) => panels[name]().catch((e) => status(e.message, true))));
  }, 150);
}

function status(message, down) {
  $("status").textContent = message;
  $("status").className = down ? "down" : "";
}

function feed(id, type, data) {
  const item = document.createElement("li");
  const fields = Object.entries(data)
    .filter(([k]) => k !== "type")
    .map(([k, v]) => k + "=" + text(v))
    .join(" ");
  item.textContent = id + " " + type + " " + fields;
  const list = $("feed");
  list.prepend(item);
  while (list.children.length > FEED_MAX) list.lastChild.remove();
}

function handle(frame) {
  if (!frame.event && !frame.data) return;
  const data = frame.data ? JSON.parse(frame.data) : {};
  if (frame.event === "cluster") {
    const before = view.leader_id;
    showFacts({ ...data, state: data.role });
    if (before !== data.leader_id) refresh(["members"]);
    return;
  }
  if (frame.event === "lagged") return;
  if (frame.id) lastId = frame.id;
  feed(frame.id || "", frame.event || data.type, data);
  refresh(panelsOf(frame.event || data.type || ""));
}

// Reads the watch stream until it ends; frames per the SSE format.
async function watch() {
  const query = lastId ? "?after=" + encodeURIComponent(lastId) : "";
  const response = await fetch("/v1/watch" + query, { headers: headers() });
  if (response.status === 410) {
    // The node no longer holds the history after our last event (it restarted, or
    // we fell behind): start from now, every panel read afresh.
    lastId = null;
    throw new Error("history compacted");
  }
  if (!response.ok) throw new Error("watch: HTTP " + response.status);
  status("live");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let frame = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        handle(frame);
        frame = {};
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") frame.data = (frame.data ? frame.data + "\n" : "") + value;
        else if (field === "event" || field === "id") frame[field] = value;
      }
    }
  }
}

async function follow() {
  for (;;) {
    try {
      await watch();
      status("reconnecting…", true);
    } catch (error) {
      if (error.message === "unauthenticated") return;
      status("disconnected: " + error.message, true);
    }
    // The served node may be restarting: try again, resuming after the last event.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    refresh(Object.keys(panels));
  }
}

async function start() {
  try {
    await panels.members();
  } catch (error) {
    if (error.message === "unauthenticated") return;
    status(error.message, true);
  }
  refresh(Object.keys(panels));
  follow();
}

start();
