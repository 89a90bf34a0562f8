// qwq-edge web chat: streams from /v1/chat/completions; no build step, no external code.
"use strict";

const CHAT_KEY = "qwq-edge.chat";
const SETTINGS_KEY = "qwq-edge.settings";
const API_KEY = "qwq-edge.api-key"; // in sessionStorage: kept for this tab's session only
const $ = (id) => document.getElementById(id);

let history = load(CHAT_KEY, []);
let running = null; // the AbortController of the reply being written
let runningId = null; // its id (the chunks' id), for "Answer now"
let answerAsked = false; // "Answer now" was pressed for it
let serverDefaults = {}; // the thinking budget and effort a request that gives none gets (from /health)

function load(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

function save() {
  localStorage.setItem(CHAT_KEY, JSON.stringify(history));
}

// -- settings -------------------------------------------------------------------

const SETTINGS = ["budget", "effort", "language", "model"];

function restoreSettings() {
  const saved = load(SETTINGS_KEY, {});
  for (const id of SETTINGS) {
    $(id).value = saved[id] ?? "";
    $(id).addEventListener("change", storeSettings);
  }
  if ("api-key" in saved) storeSettings(); // an older page kept the key here: drop it
  $("api-key").value = sessionStorage.getItem(API_KEY) ?? "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem(API_KEY, $("api-key").value);
    showModel(); // a key may open the model list
  });
}

function storeSettings() {
  const values = Object.fromEntries(SETTINGS.map((id) => [id, $(id).value]));
  if (!$("model").options.length) values.model = load(SETTINGS_KEY, {}).model ?? ""; // not listed yet: keep it
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(values));
}

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

function controls() {
  const body = {};
  const budget = $("budget").value.trim();
  if (budget !== "") body.max_thinking_tokens = Number(budget);
  if ($("effort").value) body.reasoning_effort = $("effort").value;
  if ($("language").value) body.language = $("language").value;
  if (!$("model").hidden && $("model").value) body.model = $("model").value;
  return body;
}

// -- rendering -----------------------------------------------------------------

function userTurn(text) {
  const turn = document.createElement("article");
  turn.className = "turn user";
  turn.textContent = text;
  $("conversation").append(turn);
  return turn;
}

function assistantTurn(message) {
  const turn = $("assistant-turn").content.firstElementChild.cloneNode(true);
  $("conversation").append(turn);
  const view = {
    turn,
    panel: turn.querySelector(".thinking"),
    thinking: turn.querySelector(".thinking-text"),
    count: turn.querySelector(".thinking-count"),
    answer: turn.querySelector(".answer"),
  };
  if (message) {
    showSavedThinking(view, message);
    view.answer.textContent = message.content;
    finishThinking(view);
    if (message.stopped) turn.classList.add("stopped");
  }
  return view;
}

// What each kind of text the runtime writes into the thinking is, for its tooltip.
const FORCED = {
  wait: "written by qwq-edge: the thinking was below its minimum",
  "loop-nudge": "written by qwq-edge: the thinking was repeating itself",
  "answer-now": "written by qwq-edge: the answer was asked for now",
};

// Thinking text; `forced` names the runtime's own words (shown apart from the model's).
function showThinking(view, text, tokens, forced = "") {
  if (!text) return;
  view.panel.classList.add("used");
  if (forced) {
    const mark = document.createElement("span");
    mark.className = "forced";
    mark.dataset.kind = forced;
    mark.title = FORCED[forced] ?? "written by qwq-edge: the thinking was closed";
    mark.textContent = text;
    view.thinking.append(mark);
  } else {
    view.thinking.append(text);
  }
  view.count.textContent = String(tokens);
}

// A saved reply's thinking, with the runtime's words where the server said they are.
function showSavedThinking(view, message) {
  const text = message.thinking || "";
  const tokens = message.thinking_tokens || 0;
  let at = 0;
  for (const span of message.forced_spans || []) {
    showThinking(view, text.slice(at, span.start), tokens);
    showThinking(view, text.slice(span.start, span.end), tokens, span.kind);
    at = span.end;
  }
  showThinking(view, text.slice(at), tokens);
}

function finishThinking(view) {
  view.panel.open = false;
  view.panel.querySelector("summary").firstChild.textContent = "Thought for ";
}

function renderHistory() {
  $("conversation").replaceChildren();
  for (const message of history) {
    if (message.role === "user") userTurn(message.content);
    else assistantTurn(message);
  }
}

function setRunning(controller) {
  running = controller;
  runningId = null;
  answerAsked = false;
  $("send").disabled = controller !== null;
  $("stop").disabled = controller === null;
  $("answer-now").disabled = true;
}

// Ask the server to close the running reply's thinking at its next sentence end.
async function answerNow() {
  if (!runningId) return;
  answerAsked = true;
  $("answer-now").disabled = true;
  const response = await fetch(`/v1/requests/${encodeURIComponent(runningId)}/answer`, {
    method: "POST",
    headers: headers(),
  });
  const body = await response.json().catch(() => ({}));
  $("status").textContent = response.ok ? `answer now: ${body.message}` : `error: ${body.error?.message ?? response.status}`;
}

// -- streaming -----------------------------------------------------------------

async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function apply(chunk, view, reply) {
  if (chunk.error) throw new Error(chunk.error.message);
  const choice = chunk.choices && chunk.choices[0];
  if (!choice) return;
  const delta = choice.delta || {};
  const extra = choice.qwq_edge || {};
  if (!runningId && chunk.id) runningId = chunk.id; // what "Answer now" names
  if (delta.reasoning_content) {
    $("answer-now").disabled = answerAsked || reply.content !== "";
    reply.thinking += delta.reasoning_content;
    reply.thinking_tokens = extra.thinking_tokens ?? reply.thinking_tokens;
    showThinking(view, delta.reasoning_content, reply.thinking_tokens, extra.forced);
  }
  if (delta.content) {
    $("answer-now").disabled = true;
    if (!reply.content) finishThinking(view);
    reply.content += delta.content;
    view.answer.textContent = reply.content;
  }
  if (choice.finish_reason) {
    reply.thinking_tokens = extra.thinking_tokens ?? reply.thinking_tokens;
    reply.forced_spans = extra.forced_spans ?? [];
    view.count.textContent = String(reply.thinking_tokens);
    $("status").textContent = outcome(extra, reply.thinking_tokens, view.budget);
  }
}

// The budget a request runs with, when the page knows it (an effort preset's is the server's to say).
function budgetInForce() {
  const asked = controls();
  if (asked.max_thinking_tokens !== undefined) return asked.max_thinking_tokens;
  if (asked.reasoning_effort) return null; // the request's effort replaces the server's budget
  return serverDefaults.max_thinking_tokens ?? null;
}

// How a reply ended, in words (the server's qwq_edge extension says what the runtime did).
function outcome(extra, thought, budget) {
  if (extra.finish_reason === "length") {
    return "Stopped: the reply reached its length limit (max tokens or a full context).";
  }
  if (extra.finish_reason === "cancelled") return "stopped";
  const closed = {
    budget: budget === null
      ? `Thinking stopped at its budget, after ${thought} tokens; answered.`
      : `Thinking stopped at its budget of ${budget} tokens; answered.`,
    "eos-close": "The model stopped while thinking; its thinking was closed so that it answered.",
    "context-close": "The context was nearly full, so the thinking was closed; answered.",
    "max-tokens": "The thinking was closed to leave room for the answer (max tokens); answered.",
    "loop-close": "The thinking went round in circles, so it was closed; answered.",
    "answer-now": `Answered on request, after thinking for ${thought} tokens.`,
    skipped: "Answered without thinking.",
  }[extra.thinking_closed_by];
  return closed || (thought ? `Answered after thinking for ${thought} tokens.` : "Answered.");
}

async function ask(text) {
  history.push({ role: "user", content: text });
  save();
  userTurn(text);
  const view = assistantTurn(null);
  view.budget = budgetInForce();
  const reply = { role: "assistant", content: "", thinking: "", thinking_tokens: 0 };
  const controller = new AbortController();
  setRunning(controller);
  $("status").textContent = "writing…";
  const messages = history.map(({ role, content }) => ({ role, content }));
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ messages, stream: true, ...controls() }),
      signal: controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    for await (const chunk of serverEvents(response)) apply(chunk, view, reply);
  } catch (error) {
    if (error.name === "AbortError") {
      reply.stopped = true;
      view.turn.classList.add("stopped");
      $("status").textContent = "stopped";
    } else {
      view.answer.classList.add("error");
      $("status").textContent = `error: ${error.message}`;
    }
  } finally {
    finishThinking(view);
    history.push(reply);
    save();
    setRunning(null);
  }
}

// -- wiring --------------------------------------------------------------------

function submit(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || running) return;
  $("prompt").value = "";
  ask(text);
}

let modelAsk = 0; // the latest showModel(): an older one's answer is dropped

async function showModel() {
  const asked = ++modelAsk;
  try {
    const health = await (await fetch("/health")).json();
    const listed = await fetch("/v1/models", { headers: headers() });
    const names = listed.ok ? (await listed.json()).data.map((card) => card.id) : null;
    if (asked !== modelAsk) return;
    serverDefaults = health.defaults || {};
    showDefaults();
    offerModels(health, names, listed.status);
  } catch {
    if (asked === modelAsk) $("model-name").textContent = "(server unreachable)";
  }
}

// A server that serves several models (started without --model, or with --models DIR):
// a picker, its choice kept with the settings; the server's own model first when it has one.
function offerModels(health, names, status) {
  const picker = $("model");
  picker.hidden = true;
  picker.replaceChildren();
  $("model-name").textContent = health.model ?? "";
  if (names === null) {
    const locked = status === 401 || status === 403;
    if (!health.model) $("model-name").textContent = locked ? "(give the API key to list the models)" : `(models: HTTP ${status})`;
    return;
  }
  if (!names.length && !health.model) $("model-name").textContent = "(no models: pull one, or serve a folder with --models)";
  if (names.length < 2 && health.model) return;
  const kept = load(SETTINGS_KEY, {}).model;
  picker.replaceChildren(...names.map((name) => new Option(name, name)));
  picker.value = names.includes(kept) ? kept : health.model ?? health.loaded?.[0] ?? names[0];
  picker.hidden = !names.length;
  if (names.length) $("model-name").textContent = "";
}

// An empty budget field uses the server's default: say what it is.
function showDefaults() {
  const { max_thinking_tokens: budget, effort } = serverDefaults;
  let shown = "none";
  if (budget !== null && budget !== undefined) shown = String(budget);
  else if (effort) shown = `effort ${effort}`;
  $("budget").placeholder = `${shown} (server default)`;
}

$("composer").addEventListener("submit", submit);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) submit(event);
});
$("stop").addEventListener("click", () => running && running.abort());
$("answer-now").addEventListener("click", answerNow);
$("new-chat").addEventListener("click", () => {
  if (running) running.abort();
  history = [];
  save();
  renderHistory();
  $("status").textContent = "";
});

restoreSettings();
renderHistory();
showModel();
