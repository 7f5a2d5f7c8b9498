// pocketcode's web app: hash routes, the login flow and the screens around the chat view.
import { api, onUnauthenticated, withQuery } from "./api.js";
import { chatView, statusBadge } from "./chat.js";
import { clear, field, formatCost, formatTokens, h, timeAgo, toast } from "./dom.js";
import { filesView, gitView } from "./project.js";
import { accountView, settingsView } from "./settings.js";

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
let cleanup = null;
let me = null;

// -- theme ------------------------------------------------------------------------------------
const THEME_KEY = "pocketcode.theme";
function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}
applyTheme(localStorage.getItem(THEME_KEY));
document.getElementById("theme-toggle").addEventListener("click", () => {
  const current =
    document.documentElement.dataset.theme ||
    (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark");
  const next = current === "dark" ? "light" : "dark";
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
});

// -- connection indicator ---------------------------------------------------------------------
const connectionEl = document.getElementById("connection");
const connection = {
  set(state) {
    connectionEl.dataset.state = state;
    if (state === "reconnecting") {
      connectionEl.textContent = "Reconnecting…";
      connectionEl.hidden = false;
    } else {
      connectionEl.textContent = state === "live" ? "Live" : "";
      connectionEl.hidden = true;
    }
  },
};

// -- routing ----------------------------------------------------------------------------------
function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

function setNav(name) {
  for (const link of topbar.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const { parts, params } = parseRoute();
  if (parts[0] === "token" || location.hash.startsWith("#token=")) {
    // `serve` prints `/#token=<setup token>` when there is no account yet.
    return showAuth(location.hash.slice("#token=".length));
  }
  if (!me) {
    const status = await api.get("/api/auth/status").catch(() => null);
    if (!status) {
      clear(main).append(h("p.empty", {}, "The server cannot be reached. Retrying…"));
      setTimeout(route, 3000);
      return;
    }
    if (!status.authenticated) return showAuth(null, status.setupRequired);
    me = status.user;
  }
  topbar.hidden = false;
  document.body.classList.remove("auth-page");
  if (parts[0] === "sessions" && parts[1] === "new") {
    setNav("sessions");
    return newSessionView(params);
  }
  if (parts[0] === "sessions" && parts[1]) {
    setNav("sessions");
    if (parts[2] === "files") return filesView(main, parts[1], params);
    if (parts[2] === "git") return gitView(main, parts[1], params);
    cleanup = chatView(main, parts[1], { connection });
    return;
  }
  if (parts[0] === "settings") {
    setNav("settings");
    return settingsView(main);
  }
  if (parts[0] === "account") {
    setNav("account");
    return accountView(main, me, logout);
  }
  setNav("sessions");
  cleanup = sessionsView(params);
}

window.addEventListener("hashchange", () => {
  route();
  main.focus({ preventScroll: true });
});
onUnauthenticated(() => {
  if (me) {
    me = null;
    toast("Your login expired: log in again.");
    route();
  }
});

async function logout() {
  try {
    await api.post("/api/auth/logout");
  } catch {
    /* the cookie is gone anyway */
  }
  me = null;
  location.hash = "#/";
  route();
}

// -- setup and login --------------------------------------------------------------------------
function showAuth(setupToken, setupRequired = false) {
  topbar.hidden = true;
  document.body.classList.add("auth-page");
  const setup = Boolean(setupToken) || setupRequired;
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: setup ? "new-password" : "current-password",
    required: true,
    minlength: setup ? 12 : null,
  });
  const totp = h("input", {
    name: "totp",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    pattern: "[0-9 ]*",
  });
  const recovery = h("input", { name: "recovery", autocomplete: "off" });
  const totpStep = h(
    "div.totp-step",
    { hidden: true },
    field("Authentication code", totp, "The 6-digit code of your authenticator app."),
    h(
      "details",
      {},
      h("summary", {}, "Use a recovery code instead"),
      field("Recovery code", recovery),
    ),
  );
  const error = h("p.form-error", { role: "alert" });
  const submit = h("button.primary", { type: "submit" }, setup ? "Create account" : "Log in");
  const tokenInput = h("input", { name: "setupToken", autocomplete: "off", value: setupToken || "" });
  const form = h(
    "form.auth-form",
    { "aria-label": setup ? "Create the owner account" : "Log in" },
    h("h1", {}, setup ? "Welcome to pocketcode" : "Log in to pocketcode"),
    setup
      ? h(
          "p.hint",
          {},
          "Create the owner account. The setup link `pocketcode serve` printed carries a one-time token.",
        )
      : null,
    setup && !setupToken ? field("Setup token", tokenInput) : null,
    field("Username", username),
    field("Password", password, setup ? "At least 12 characters." : null),
    totpStep,
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      if (setup) {
        const result = await api.post("/api/auth/setup", {
          token: setupToken || tokenInput.value.trim(),
          username: username.value.trim(),
          password: password.value,
        });
        me = result.user;
      } else {
        const body = { username: username.value.trim(), password: password.value };
        if (!totpStep.hidden && totp.value.trim()) body.totpCode = totp.value.replace(/\s/g, "");
        if (!totpStep.hidden && recovery.value.trim()) body.recoveryCode = recovery.value.trim();
        const result = await api.post("/api/auth/login", body);
        me = result.user;
      }
      history.replaceState(null, "", "/#/");
      route();
    } catch (err) {
      if (err.code === "TOTP_REQUIRED") {
        totpStep.hidden = false;
        totp.focus();
        error.textContent = totpStep.dataset.asked ? err.message : "";
        totpStep.dataset.asked = "1";
      } else {
        error.textContent = err.message;
      }
    } finally {
      submit.disabled = false;
    }
  });
  clear(main).append(h("div.auth", {}, h("div.brand-big", { "aria-hidden": "true" }, "pocketcode"), form));
  username.focus();
}

// -- session list -----------------------------------------------------------------------------
function sessionsView(params) {
  const filter = params.get("state") === "archived" ? "archived" : "active";
  const search = h("input", {
    type: "search",
    placeholder: "Search title or folder",
    "aria-label": "Search sessions",
    value: params.get("q") || "",
  });
  const list = h("ul.session-list", { "aria-label": "Sessions" });
  const tabs = h(
    "div.tabs",
    { role: "tablist", "aria-label": "Which sessions" },
    ["active", "archived"].map((name) =>
      h(
        "a.tab",
        {
          role: "tab",
          href: `#/?state=${name}`,
          "aria-selected": String(name === filter),
        },
        name === "active" ? "Active" : "Archived",
      ),
    ),
  );
  clear(main).append(
    h(
      "div.page",
      {},
      h(
        "div.page-head",
        {},
        h("h1", {}, "Sessions"),
        h("a.button.primary", { href: "#/sessions/new" }, "New session"),
      ),
      tabs,
      search,
      list,
    ),
  );

  let timer = 0;
  let closed = false;
  async function load() {
    const data = await api
      .get(withQuery("/api/sessions", { state: filter, q: search.value.trim(), limit: 100 }))
      .catch((error) => {
        toast(error.message);
        return null;
      });
    if (!data || closed) return;
    let sessions = data.sessions;
    const q = search.value.trim().toLowerCase();
    if (q) {
      // Also filtered here, so the search works against a server without `q`.
      sessions = sessions.filter((s) => `${s.name} ${s.projectPath}`.toLowerCase().includes(q));
    }
    list.replaceChildren();
    if (!sessions.length) {
      list.append(h("li.empty", {}, q ? "No session matches." : "No sessions yet: start one."));
    }
    for (const s of sessions) list.append(sessionItem(s, load));
  }
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(load, 250);
  });
  load();

  // Statuses change while the list is open: follow every session's events.
  const source = new EventSource("/api/events");
  let refresh = 0;
  const later = () => {
    clearTimeout(refresh);
    refresh = setTimeout(load, 400);
  };
  for (const type of ["state", "done", "permission"]) source.addEventListener(type, later);
  return () => {
    closed = true;
    source.close();
    clearTimeout(refresh);
  };
}

function sessionItem(s, reload) {
  const archived = s.status === "archived";
  const act = async (fn) => {
    try {
      await fn();
      reload();
    } catch (error) {
      toast(error.message);
    }
  };
  const menu = h(
    "div.session-actions",
    {},
    h(
      "button.small",
      {
        type: "button",
        "aria-label": `Rename ${s.name}`,
        onclick: () => {
          const input = h("input", { value: s.name, "aria-label": "New name", maxlength: 200 });
          const form = h(
            "form.rename",
            {
              onsubmit: (e) => {
                e.preventDefault();
                if (input.value.trim()) act(() => api.patch(`/api/sessions/${s.id}`, { title: input.value.trim() }));
              },
            },
            input,
            h("button.small.primary", { type: "submit" }, "Save"),
            h("button.small", { type: "button", onclick: reload }, "Cancel"),
          );
          menu.replaceWith(form);
          input.focus();
          input.select();
        },
      },
      "Rename",
    ),
    h(
      "button.small",
      {
        type: "button",
        "aria-label": `${archived ? "Unarchive" : "Archive"} ${s.name}`,
        onclick: () => act(() => api.patch(`/api/sessions/${s.id}`, { status: archived ? "active" : "archived" })),
      },
      archived ? "Unarchive" : "Archive",
    ),
    h(
      "button.small.danger",
      {
        type: "button",
        "aria-label": `Delete ${s.name}`,
        onclick: (e) => {
          const button = e.currentTarget;
          if (button.dataset.armed) {
            act(() => api.del(`/api/sessions/${s.id}`));
          } else {
            button.dataset.armed = "1";
            button.textContent = "Really delete?";
          }
        },
      },
      "Delete",
    ),
  );
  const tokens = s.tokens ? (s.tokens.input || 0) + (s.tokens.output || 0) : s.tokenCount;
  return h(
    "li.session-item",
    { dataset: { sessionId: s.id } },
    h(
      "a.session-link",
      { href: `#/sessions/${s.id}` },
      h("span.session-name", {}, s.name),
      statusBadge(s),
      h("span.session-path", {}, s.projectPath),
      h(
        "span.session-meta",
        {},
        `${timeAgo(s.lastActivityAt || s.lastMessageSentAt || s.updatedAt)} · ${formatTokens(tokens)} tokens · ${formatCost(s.totalCostUsd)}`,
      ),
    ),
    menu,
  );
}

// -- new session ------------------------------------------------------------------------------
async function newSessionView(params) {
  const pathInput = h("input", { name: "projectPath", required: true, placeholder: "/path/to/project" });
  const titleInput = h("input", { name: "title", maxlength: 200, placeholder: "optional" });
  const error = h("p.form-error", { role: "alert" });
  const repos = h("ul.folder-list", { "aria-label": "Projects" });
  const recent = h("ul.folder-list", { "aria-label": "Recent projects" });
  const browser = h("div.browser");
  const choose = (path) => {
    pathInput.value = path;
    pathInput.focus();
  };
  const folderButton = (label, path, git) =>
    h(
      "li",
      {},
      h(
        "button.folder",
        { type: "button", onclick: () => choose(path), title: path },
        h("span.folder-icon", { "aria-hidden": "true" }, git ? "⎇" : "▸"),
        h("span", {}, label),
        git ? h("span.badge.git", {}, "git") : null,
      ),
    );
  const form = h(
    "form.new-session",
    {
      "aria-label": "New session",
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        try {
          const body = { projectPath: pathInput.value.trim(), provider: "claude-code" };
          if (titleInput.value.trim()) body.title = titleInput.value.trim();
          const defaults = await defaultRunSettings();
          if (defaults.model) body.model = defaults.model;
          if (defaults.mode) body.permissionMode = defaults.mode;
          const session = await api.post("/api/sessions", body);
          location.hash = `#/sessions/${session.id}`;
        } catch (err) {
          error.textContent = err.message;
        }
      },
    },
    field("Project folder", pathInput, "A folder inside the allowed roots."),
    field("Title", titleInput),
    error,
    h("button.primary", { type: "submit" }, "Start session"),
  );
  clear(main).append(
    h(
      "div.page",
      {},
      h("div.page-head", {}, h("a.back", { href: "#/", "aria-label": "Back to sessions" }, "‹"), h("h1", {}, "New session")),
      form,
      h("h2", {}, "Recent projects"),
      recent,
      h("h2", {}, "Projects"),
      repos,
      h("h2", {}, "Browse"),
      browser,
    ),
  );

  api
    .get(withQuery("/api/sessions", { limit: 100 }))
    .then((data) => {
      const seen = new Set();
      for (const s of data.sessions) {
        if (seen.has(s.projectPath)) continue;
        seen.add(s.projectPath);
        recent.append(folderButton(s.projectPath.split("/").pop() || s.projectPath, s.projectPath, false));
      }
      if (!seen.size) recent.append(h("li.empty", {}, "None yet."));
    })
    .catch(() => recent.append(h("li.empty", {}, "None yet.")));
  api
    .get("/api/repositories")
    .then((data) => {
      const sorted = [...data.repositories].sort(
        (a, b) => Number(b.isGitRepository) - Number(a.isGitRepository) || a.folderName.localeCompare(b.folderName),
      );
      for (const r of sorted) repos.append(folderButton(r.folderName, r.path, r.isGitRepository));
      if (!sorted.length) repos.append(h("li.empty", {}, "No folders in the projects directory."));
    })
    .catch((err) => repos.append(h("li.empty", {}, err.message)));

  async function browse(path) {
    let data;
    try {
      data = await api.get(withQuery("/api/directories/browse", { path }));
    } catch (err) {
      browser.replaceChildren(h("p.form-error", {}, err.message));
      return;
    }
    const items = data.items
      .filter((item) => item.type === "directory" && !item.name.startsWith("."))
      .sort((a, b) => Number(b.isGitRepository) - Number(a.isGitRepository) || a.name.localeCompare(b.name));
    const list = h("ul.folder-list", { "aria-label": `Folders in ${data.currentPath}` });
    if (data.parentPath) {
      list.append(h("li", {}, h("button.folder", { type: "button", onclick: () => browse(data.parentPath) }, "‹ Up")));
    }
    for (const item of items) {
      list.append(
        h(
          "li.folder-row",
          {},
          h(
            "button.folder",
            { type: "button", onclick: () => browse(item.path), "aria-label": `Open folder ${item.name}` },
            h("span.folder-icon", { "aria-hidden": "true" }, item.isGitRepository ? "⎇" : "▸"),
            h("span", {}, item.name),
            item.isGitRepository ? h("span.badge.git", {}, "git") : null,
          ),
          h("button.small", { type: "button", onclick: () => choose(item.path), "aria-label": `Choose ${item.name}` }, "Choose"),
        ),
      );
    }
    browser.replaceChildren(
      h("p.current-path", {}, data.currentPath, " ", h("button.small", { type: "button", onclick: () => choose(data.currentPath) }, "Choose this folder")),
      list,
    );
  }
  browse(params.get("path") || undefined);
}

async function defaultRunSettings() {
  const read = async (key) => {
    try {
      const setting = await api.get(`/api/settings/${key}`);
      return setting.value || null;
    } catch {
      return null;
    }
  };
  const [model, mode] = await Promise.all([read("default_model"), read("default_permission_mode")]);
  return { model, mode };
}

// -- service worker ---------------------------------------------------------------------------
if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js").catch(() => {});
}

route();
