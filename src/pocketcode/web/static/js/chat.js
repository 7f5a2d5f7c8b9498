// The chat view of one session: its messages live over `/api/sessions/{id}/events`.
//
// Nothing lost, nothing doubled: the stream replays stored messages after a cursor (the seq
// of the last message this view has), and the browser's EventSource sends that cursor back
// as Last-Event-ID when it reconnects by itself. When the stream is closed for good (the
// server restarted, the phone slept) a new one opens with `?after=<last seq>`. A reload starts
// from seq 0 and rebuilds the view. Messages are keyed by seq and id, so a replayed message
// that is already shown is skipped.
import { api, withQuery } from "./api.js";
import { clear, formatCost, formatTokens, h, toast } from "./dom.js";
import { markdownBlock } from "./markdown.js";
import { toolBody, toolCard, toolTarget } from "./tools.js";
import { voiceInput } from "./voice.js";

const MODELS = [
  ["", "Default model"],
  ["sonnet", "Sonnet"],
  ["opus", "Opus"],
  ["haiku", "Haiku"],
  ["opusplan", "Opus plan, Sonnet build"],
];
const MODES = [
  ["default", "Ask first"],
  ["acceptEdits", "Accept edits"],
  ["plan", "Plan only"],
  ["bypassPermissions", "Bypass permissions"],
];

export function sessionStatus(session) {
  if (session.pendingPermissions > 0) return ["waiting", "waiting for approval"];
  if (session.isWorking) return ["working", "working"];
  if (session.processStatus === "failed" || session.lastJobStatus === "failed") {
    return ["failed", "failed"];
  }
  return ["idle", "idle"];
}

export function statusBadge(session) {
  const [kind, label] = sessionStatus(session);
  return h(`span.badge.${kind}`, { "data-status": kind }, label);
}

function selectOf(options, value, label, onchange) {
  const select = h("select", { "aria-label": label, onchange });
  const values = options.map(([v]) => v);
  if (value && !values.includes(value)) options = [...options, [value, value]];
  for (const [v, text] of options) select.append(h("option", { value: v, selected: v === (value || "") }, text));
  return select;
}

export function chatView(main, sessionId, { connection }) {
  const st = {
    session: null,
    lastSeq: 0,
    seen: new Set(),
    tools: new Map(), // tool_use id → card
    drafts: new Map(), // `${messageId}:${index}` → draft
    permissions: new Map(),
    source: null,
    retryTimer: 0,
    closed: false,
    commands: null,
    agents: null,
  };
  const base = `/api/sessions/${encodeURIComponent(sessionId)}`;

  // -- layout ---------------------------------------------------------------------------------
  const title = h("h1.chat-title", {}, "Session");
  const badgeSlot = h("span.badge-slot");
  const costLine = h("p.chat-cost", { "aria-label": "Session tokens and cost" });
  const modelSlot = h("span");
  const modeSlot = h("span");
  const header = h(
    "header.chat-head",
    {},
    h(
      "div.chat-head-row",
      {},
      h("a.back", { href: "#/", "aria-label": "Back to sessions" }, "‹"),
      title,
      badgeSlot,
    ),
    h(
      "div.chat-head-row.tools-row",
      {},
      h("a.chip", { href: `#/sessions/${sessionId}/files` }, "Files"),
      h("a.chip", { href: `#/sessions/${sessionId}/git` }, "Changes"),
      h("span.pickers", {}, modelSlot, modeSlot),
    ),
    costLine,
  );
  const log = h("div.messages", { role: "log", "aria-label": "Messages", "aria-live": "polite" });
  const permissionsEl = h("div.permissions", { "aria-label": "Permission requests" });
  const queueEl = h("div.queue", { "aria-label": "Queued prompts" });
  const input = h("textarea.prompt-input", {
    rows: 2,
    placeholder: "Message Claude… ( / for commands)",
    "aria-label": "Prompt",
  });
  const picker = h("ul.picker", { role: "listbox", "aria-label": "Suggestions", hidden: true });
  const sendButton = h("button.primary", { type: "submit", "aria-label": "Send prompt" }, "Send");
  const stopButton = h(
    "button.danger",
    { type: "button", "aria-label": "Stop the run", hidden: true, onclick: stop },
    "Stop",
  );
  const slashButton = h(
    "button.icon-button",
    { type: "button", "aria-label": "Slash commands", onclick: () => showCommands("") },
    "/",
  );
  const agentButton = h(
    "button.icon-button",
    { type: "button", "aria-label": "Agents", onclick: showAgents },
    "@",
  );
  const voiceSlot = h("span.voice-slot");
  const voiceNote = h("p.hint.voice-note", { hidden: true });
  const composer = h(
    "form.composer",
    { onsubmit: send, "aria-label": "Send a prompt" },
    picker,
    input,
    h("div.composer-row", {}, slashButton, agentButton, voiceSlot, h("span.spacer"), stopButton, sendButton),
    voiceNote,
  );
  clear(main).append(h("div.chat", {}, header, log, permissionsEl, queueEl, composer));

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      composer.requestSubmit();
    } else if (event.key === "Escape") {
      picker.hidden = true;
    }
  });
  input.addEventListener("input", () => {
    const value = input.value;
    if (value.startsWith("/") && !value.includes(" ")) showCommands(value.slice(1));
    else if (!picker.hidden && picker.dataset.kind === "commands") picker.hidden = true;
  });

  // -- session header -------------------------------------------------------------------------
  function renderSession() {
    const s = st.session;
    if (!s) return;
    title.textContent = s.name || s.projectPath;
    title.title = s.projectPath;
    badgeSlot.replaceChildren(statusBadge(s));
    const t = s.tokens || {};
    costLine.textContent =
      `${formatTokens(t.input)} in · ${formatTokens(t.output)} out · ` +
      `${formatTokens((t.cacheRead || 0) + (t.cacheCreation || 0))} cache · ` +
      `${formatCost(s.totalCostUsd)} · ${s.turnCount || 0} turns`;
    stopButton.hidden = !s.isWorking;
    if (!modelSlot.firstChild || document.activeElement?.parentElement !== modelSlot) {
      modelSlot.replaceChildren(
        selectOf(MODELS, s.model || "", "Model", (e) => patch({ model: e.target.value })),
      );
    }
    if (!modeSlot.firstChild || document.activeElement?.parentElement !== modeSlot) {
      modeSlot.replaceChildren(
        selectOf(MODES, s.permissionMode || "default", "Permission mode", (e) =>
          patch({ permissionMode: e.target.value }),
        ),
      );
    }
  }

  async function refreshSession() {
    try {
      st.session = await api.get(base);
      renderSession();
    } catch (error) {
      if (error.status === 404) {
        clear(main).append(h("p.empty", {}, "This session does not exist (any more)."));
        close();
      }
    }
  }

  async function patch(body) {
    try {
      st.session = await api.patch(base, body);
      renderSession();
      toast("Saved for this session.", "ok");
    } catch (error) {
      toast(error.message);
    }
  }

  // -- messages -------------------------------------------------------------------------------
  function atBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  function place(el, parentToolUseId) {
    const stick = atBottom();
    const card = parentToolUseId ? st.tools.get(parentToolUseId) : null;
    (card && card.children ? card.children : log).append(el);
    if (stick) el.scrollIntoView({ block: "end" });
  }

  function firstBlock(raw) {
    const content = raw && raw.message && raw.message.content;
    return Array.isArray(content) && content[0] && typeof content[0] === "object" ? content[0] : {};
  }

  function dropDraft(messageId, blockType) {
    for (const [key, draft] of st.drafts) {
      if (draft.messageId === messageId && draft.blockType === blockType) {
        draft.el.remove();
        st.drafts.delete(key);
        return;
      }
    }
  }

  function dropAllDrafts() {
    for (const draft of st.drafts.values()) draft.el.remove();
    st.drafts.clear();
  }

  function onMessage(m) {
    if (typeof m.seq !== "number" || m.seq <= st.lastSeq || st.seen.has(m.id)) return;
    st.lastSeq = m.seq;
    st.seen.add(m.id);
    const el = renderMessage(m);
    if (el) {
      el.dataset.seq = String(m.seq);
      el.dataset.messageId = m.id;
    }
  }

  function renderMessage(m) {
    const raw = m.raw && typeof m.raw === "object" ? m.raw : null;
    const rawParent = raw && typeof raw.parent_tool_use_id === "string" ? raw.parent_tool_use_id : null;
    if (m.type === "user") {
      if (m.subtype === "tool_result") {
        const block = firstBlock(raw);
        const card = st.tools.get(block.tool_use_id || m.parentToolUseId);
        if (card) {
          card.setResult(m.text, block.is_error === true);
          return card.el;
        }
        const orphan = h("section.tool.generic", {}, h("header.tool-head", {}, "Tool result"));
        orphan.append(h("pre.output", {}, h("code", {}, m.text || "")));
        place(orphan, rawParent);
        return orphan;
      }
      if (rawParent || (m.subtype && !["prompt", "text"].includes(m.subtype))) {
        // A sub-agent's prompt (shown on its card) or a line that is not the user's words.
        if (!m.text) return null;
      }
      const el = h("div.msg.user", { "aria-label": "You" }, h("p.user-text", {}, m.text || ""));
      place(el, m.parentToolUseId);
      return el;
    }
    if (m.type === "assistant") {
      if (m.providerMessageId) dropDraft(m.providerMessageId, m.subtype === "thinking" ? "thinking" : "text");
      if (m.subtype === "text") {
        const el = h("div.msg.assistant", { "aria-label": "Claude" }, markdownBlock(m.text || ""));
        place(el, m.parentToolUseId);
        return el;
      }
      if (m.subtype === "thinking") {
        const el = h(
          "details.msg.thinking",
          {},
          h("summary", {}, "Thinking"),
          h("p.thinking-text", {}, m.text || ""),
        );
        place(el, m.parentToolUseId);
        return el;
      }
      if (m.subtype === "tool_use" || m.subtype === "server_tool_use") {
        const block = firstBlock(raw);
        const card = toolCard({ name: block.name || m.text, input: block.input, id: block.id });
        if (block.id) st.tools.set(block.id, card);
        place(card.el, m.parentToolUseId);
        return card.el;
      }
      return null;
    }
    if (m.type === "result") {
      const usage = m.usage || {};
      const failed = m.subtype && m.subtype !== "success";
      const parts = [
        failed ? "Turn failed" : "Turn done",
        `${formatTokens(usage.inputTokens)} in`,
        `${formatTokens(usage.outputTokens)} out`,
      ];
      if (usage.cacheReadTokens || usage.cacheCreationTokens) {
        parts.push(`${formatTokens((usage.cacheReadTokens || 0) + (usage.cacheCreationTokens || 0))} cache`);
      }
      if (m.costUsd !== undefined) parts.push(formatCost(m.costUsd));
      const el = h(`p.turn${failed ? ".failed" : ""}`, { "aria-label": "Turn usage" }, parts.join(" · "));
      if (failed && m.text) el.append(h("span.turn-error", {}, ` — ${m.text}`));
      place(el, null);
      return el;
    }
    if (m.type === "error") {
      const el = h("div.msg.error", { role: "note" }, h("strong", {}, "Error: "), m.text || "The run failed.");
      place(el, m.parentToolUseId);
      return el;
    }
    if (m.type === "system") {
      if (!m.text || m.subtype === "init") return null;
      const el = h("p.msg.system", {}, m.text);
      place(el, m.parentToolUseId);
      return el;
    }
    return null;
  }

  // Live text while the model writes; replaced by the stored message when it arrives.
  let draftFrame = 0;
  const dirtyDrafts = new Set();
  function onDelta(d) {
    const key = `${d.messageId}:${d.index}`;
    let draft = st.drafts.get(key);
    if (!draft) {
      const thinking = d.blockType === "thinking";
      const body = h("div.md");
      const el = thinking
        ? h("details.msg.thinking.draft", {}, h("summary", {}, "Thinking…"), body)
        : h("div.msg.assistant.draft", { "aria-busy": "true" }, body);
      draft = { el, body, text: "", messageId: d.messageId, blockType: d.blockType || "text" };
      st.drafts.set(key, draft);
      place(el, d.parentToolUseId);
    }
    draft.text += d.text || "";
    dirtyDrafts.add(draft);
    if (!draftFrame) {
      draftFrame = requestAnimationFrame(() => {
        draftFrame = 0;
        const stick = atBottom();
        for (const dirty of dirtyDrafts) {
          if (dirty.blockType === "thinking") dirty.body.textContent = dirty.text;
          else dirty.body.replaceChildren(markdownBlock(dirty.text, "md-inner"));
        }
        dirtyDrafts.clear();
        if (stick) log.lastElementChild?.scrollIntoView({ block: "end" });
      });
    }
  }

  // -- permissions ----------------------------------------------------------------------------
  function onPermission(p) {
    const existing = st.permissions.get(p.id);
    if (p.status !== "pending") {
      if (existing) existing.remove();
      st.permissions.delete(p.id);
      if (st.session) {
        st.session.pendingPermissions = Math.max(0, st.permissions.size);
        renderSession();
      }
      return;
    }
    if (existing) return;
    const answer = async (decision, button) => {
      for (const b of el.querySelectorAll("button")) b.disabled = true;
      button.setAttribute("aria-busy", "true");
      try {
        await api.post(`/api/permissions/${encodeURIComponent(p.id)}`, { decision });
        el.remove();
        st.permissions.delete(p.id);
      } catch (error) {
        toast(error.message);
        for (const b of el.querySelectorAll("button")) b.disabled = false;
      }
    };
    const target = toolTarget(p.toolName, p.toolInput);
    const el = h(
      "section.permission",
      { role: "alertdialog", "aria-label": `Permission request: ${p.toolName}`, dataset: { permissionId: p.id } },
      h("h2", {}, `Allow ${p.toolName}?`),
      target ? h("p.tool-target", {}, target) : null,
      toolBody(p.toolName, p.toolInput) || null,
      h(
        "div.permission-actions",
        {},
        h("button.primary", { type: "button", onclick: (e) => answer("allow", e.currentTarget) }, "Allow"),
        h("button", { type: "button", onclick: (e) => answer("always", e.currentTarget) }, "Always allow"),
        h("button.danger", { type: "button", onclick: (e) => answer("deny", e.currentTarget) }, "Deny"),
      ),
    );
    st.permissions.set(p.id, el);
    permissionsEl.append(el);
    if (st.session) {
      st.session.pendingPermissions = st.permissions.size;
      renderSession();
    }
    el.scrollIntoView({ block: "end" });
  }

  // -- queue ----------------------------------------------------------------------------------
  function renderQueue(pending) {
    queueEl.replaceChildren();
    if (!pending.length) return;
    queueEl.append(h("h2.queue-title", {}, `Waiting to run (${pending.length})`));
    const list = h("ol.queue-list");
    for (const job of pending) {
      list.append(
        h(
          "li",
          { dataset: { jobId: job.id } },
          h("span.queue-prompt", {}, job.prompt),
          h(
            "button.small",
            {
              type: "button",
              "aria-label": "Cancel queued prompt",
              onclick: async () => {
                try {
                  await api.del(`${base}/queue/${encodeURIComponent(job.id)}`);
                  await loadQueue();
                } catch (error) {
                  toast(error.message);
                }
              },
            },
            "Cancel",
          ),
        ),
      );
    }
    queueEl.append(list);
  }

  async function loadQueue() {
    try {
      const data = await api.get(`${base}/queue`);
      renderQueue((data.jobs || []).filter((job) => job.status === "pending"));
    } catch {
      /* shown again by the next queue event */
    }
  }

  // -- the stream -----------------------------------------------------------------------------
  function connect() {
    if (st.closed) return;
    const source = new EventSource(withQuery(`${base}/events`, { after: st.lastSeq }));
    st.source = source;
    lastHeard = Date.now();
    const on = (type, fn) =>
      source.addEventListener(type, (event) => {
        if (source !== st.source) return; // a stream this view replaced
        lastHeard = Date.now();
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        fn(data);
      });
    source.addEventListener("open", () => {
      lastHeard = Date.now();
      connection.set("live");
    });
    source.addEventListener("error", () => {
      if (st.closed || source !== st.source) return;
      connection.set("reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error answer): open a new stream from our cursor.
        clearTimeout(st.retryTimer);
        st.retryTimer = setTimeout(reconnectNow, 2000);
      }
    });
    on("message", onMessage);
    on("delta", onDelta);
    on("state", (s) => {
      if (!st.session) return;
      Object.assign(st.session, s);
      renderSession();
    });
    on("permission", onPermission);
    on("queue", (q) => renderQueue(q.pending || []));
    on("done", () => {
      dropAllDrafts();
      for (const card of st.tools.values()) {
        const status = card.el.querySelector(".tool-status");
        if (status && status.textContent === "…") status.textContent = "";
      }
      refreshSession();
    });
    on("resync", () => {
      dropAllDrafts();
      refreshSession();
      loadQueue();
    });
    on("heartbeat", () => connection.set("live"));
  }

  // A phone that sleeps or loses the network may keep a dead connection open without an
  // error: the server sends a heartbeat every 15 s, so a stream silent for longer than
  // STALE_MS is replaced, and so is one the browser reports offline.
  const STALE_MS = 40_000;
  let lastHeard = Date.now();
  function reconnectNow() {
    if (st.closed) return;
    clearTimeout(st.retryTimer);
    if (st.source) st.source.close();
    // Deltas sent while away are lost: the stored messages replace the partial text.
    dropAllDrafts();
    connection.set("reconnecting");
    refreshSession();
    connect();
  }
  const onOffline = () => {
    if (st.source) st.source.close();
    connection.set("reconnecting");
  };
  const onOnline = () => reconnectNow();
  const onVisible = () => {
    if (document.visibilityState === "visible" && Date.now() - lastHeard > STALE_MS) reconnectNow();
  };
  window.addEventListener("offline", onOffline);
  window.addEventListener("online", onOnline);
  document.addEventListener("visibilitychange", onVisible);
  const watchdog = setInterval(() => {
    if (navigator.onLine && Date.now() - lastHeard > STALE_MS) reconnectNow();
  }, 5000);

  function close() {
    st.closed = true;
    clearTimeout(st.retryTimer);
    clearInterval(watchdog);
    window.removeEventListener("offline", onOffline);
    window.removeEventListener("online", onOnline);
    document.removeEventListener("visibilitychange", onVisible);
    if (st.source) st.source.close();
    connection.set("off");
  }

  // -- composer -------------------------------------------------------------------------------
  async function send(event) {
    event.preventDefault();
    const content = input.value.trim();
    if (!content) return;
    sendButton.disabled = true;
    try {
      await api.post(`${base}/messages`, { content });
      input.value = "";
      picker.hidden = true;
      if (st.session) {
        st.session.isWorking = true;
        renderSession();
      }
    } catch (error) {
      toast(error.message);
    } finally {
      sendButton.disabled = false;
      input.focus();
    }
  }

  async function stop() {
    stopButton.disabled = true;
    try {
      await api.post(`${base}/cancel`);
      toast("Stopping the run…", "ok");
    } catch (error) {
      toast(error.message);
    } finally {
      stopButton.disabled = false;
    }
  }

  function showPicker(kind, items, onpick) {
    picker.replaceChildren();
    picker.dataset.kind = kind;
    if (!items.length) {
      picker.append(h("li.empty", {}, kind === "commands" ? "No slash commands" : "No agents"));
    }
    for (const item of items.slice(0, 30)) {
      picker.append(
        h(
          "li",
          { role: "option" },
          h(
            "button",
            { type: "button", onclick: () => onpick(item) },
            h("strong", {}, item.label),
            item.detail ? h("span.hint", {}, ` ${item.detail}`) : null,
          ),
        ),
      );
    }
    picker.hidden = false;
  }

  async function showCommands(filter) {
    if (!st.commands) {
      try {
        st.commands = (await api.get(`${base}/commands`)).commands || [];
      } catch (error) {
        toast(error.message);
        return;
      }
    }
    const items = st.commands
      .filter((c) => c.name.toLowerCase().includes(filter.toLowerCase()))
      .map((c) => ({ label: `/${c.name}`, detail: c.type, name: c.name }));
    showPicker("commands", items, (item) => {
      input.value = `/${item.name} `;
      picker.hidden = true;
      input.focus();
    });
  }

  async function showAgents() {
    if (!picker.hidden && picker.dataset.kind === "agents") {
      picker.hidden = true;
      return;
    }
    if (!st.agents) {
      try {
        st.agents = (await api.get(`${base}/agents`)).agents || [];
      } catch (error) {
        toast(error.message);
        return;
      }
    }
    const items = st.agents.map((a) => ({ label: a.name, detail: a.description, name: a.name }));
    showPicker("agents", items, (item) => {
      input.value = `@agent-${item.name} ${input.value}`;
      picker.hidden = true;
      input.focus();
    });
  }

  voiceInput(voiceSlot, voiceNote, (text) => {
    input.value = input.value ? `${input.value} ${text}` : text;
    input.focus();
  });

  // -- start ----------------------------------------------------------------------------------
  (async () => {
    await refreshSession();
    if (st.closed) return;
    connect();
    loadQueue();
  })();

  return close;
}
