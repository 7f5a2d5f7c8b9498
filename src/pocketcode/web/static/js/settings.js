// Settings (model prices, keys, transcription endpoint, defaults) and the account page
// (password, two-factor auth, API tokens, logout).
import { api } from "./api.js";
import { append, clear, field, h, timeAgo, toast } from "./dom.js";

const SETTINGS = [
  { key: "anthropic_api_key", label: "Anthropic API key", secret: true, hint: "Used by Claude Code runs when set." },
  {
    key: "transcription_url",
    label: "Transcription endpoint",
    hint: "An OpenAI-compatible base URL, e.g. https://api.openai.com/v1 (…/audio/transcriptions is added).",
  },
  { key: "transcription_api_key", label: "Transcription API key", secret: true },
  { key: "transcription_model", label: "Transcription model", hint: "e.g. whisper-1" },
  { key: "default_model", label: "Default model", hint: "For new sessions, e.g. sonnet or opus." },
  {
    key: "default_permission_mode",
    label: "Default permission mode",
    options: ["", "default", "acceptEdits", "plan", "bypassPermissions"],
  },
];

async function loadSettings() {
  try {
    const data = await api.get("/api/settings");
    return new Map(data.settings.map((s) => [s.key, s]));
  } catch {
    // A server without the list: ask key by key.
    const entries = await Promise.all(
      SETTINGS.map((s) => api.get(`/api/settings/${s.key}`).then((v) => [s.key, v]).catch(() => [s.key, null])),
    );
    return new Map(entries.filter(([, v]) => v));
  }
}

function settingRow(spec, current, reload) {
  const state = current || { isSet: false };
  let input;
  if (spec.options) {
    input = h("select", { name: spec.key });
    for (const option of spec.options) {
      input.append(h("option", { value: option, selected: option === (state.value || "") }, option || "(not set)"));
    }
  } else {
    input = h("input", {
      name: spec.key,
      type: spec.secret ? "password" : "text",
      autocomplete: "off",
      value: spec.secret ? "" : state.value || "",
      placeholder: spec.secret ? (state.isSet ? "Enter a new value to replace it" : "Not set") : "",
    });
  }
  const status = spec.secret
    ? h("p.setting-status", { "aria-label": `${spec.label} status` }, state.isSet ? `Set: ${state.masked || "••••"}` : "Not set")
    : null;
  const save = async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    try {
      if (value) await api.put(`/api/settings/${spec.key}`, { value });
      else if (state.isSet) await api.del(`/api/settings/${spec.key}`);
      toast(`${spec.label} saved.`, "ok");
      reload();
    } catch (error) {
      toast(error.message);
    }
  };
  return h(
    "form.setting",
    { onsubmit: save, "aria-label": spec.label, dataset: { key: spec.key } },
    field(spec.label, input, spec.hint),
    status,
    h(
      "div.row",
      {},
      h("button.small.primary", { type: "submit" }, "Save"),
      state.isSet
        ? h(
            "button.small",
            {
              type: "button",
              onclick: async () => {
                try {
                  await api.del(`/api/settings/${spec.key}`);
                  reload();
                } catch (error) {
                  toast(error.message);
                }
              },
            },
            "Remove",
          )
        : null,
    ),
  );
}

function pricingEditor(prices, reload) {
  const columns = [
    ["modelName", "Model", "text"],
    ["inputPricePerMillion", "Input $/M", "number"],
    ["outputPricePerMillion", "Output $/M", "number"],
    ["cacheWriteMultiplier", "Cache write ×", "number"],
    ["cacheReadMultiplier", "Cache read ×", "number"],
  ];
  const body = h("tbody");
  const addRow = (price = {}) => {
    const row = h("tr");
    for (const [key, label, type] of columns) {
      if (key === "modelName" && price.modelName) {
        row.append(
          h("th.model-name", { scope: "row" }, price.modelName, h("input", { type: "hidden", name: key, value: price.modelName })),
        );
        continue;
      }
      row.append(
        h(
          "td",
          {},
          h("input", {
            name: key,
            type,
            step: type === "number" ? "any" : null,
            min: type === "number" ? "0" : null,
            value: price[key] ?? (key === "cacheWriteMultiplier" ? 1.25 : key === "cacheReadMultiplier" ? 0.1 : ""),
            "aria-label": `${label}${price.modelName ? ` of ${price.modelName}` : ""}`,
          }),
        ),
      );
    }
    body.append(row);
  };
  prices.forEach(addRow);
  const save = async (event) => {
    event.preventDefault();
    const rows = [...body.querySelectorAll("tr")]
      .map((row) => Object.fromEntries([...row.querySelectorAll("input")].map((i) => [i.name, i.value.trim()])))
      .filter((row) => row.modelName);
    try {
      await api.put("/api/pricing", {
        prices: rows.map((row) => ({
          modelName: row.modelName,
          inputPricePerMillion: Number(row.inputPricePerMillion || 0),
          outputPricePerMillion: Number(row.outputPricePerMillion || 0),
          cacheWriteMultiplier: Number(row.cacheWriteMultiplier || 1.25),
          cacheReadMultiplier: Number(row.cacheReadMultiplier || 0.1),
        })),
      });
      toast("Prices saved.", "ok");
      reload();
    } catch (error) {
      toast(error.message);
    }
  };
  return h(
    "form.pricing",
    { onsubmit: save, "aria-label": "Model prices" },
    h(
      "div.table-scroll",
      {},
      h("table", {}, h("thead", {}, h("tr", {}, columns.map(([, label]) => h("th", { scope: "col" }, label)))), body),
    ),
    h(
      "div.row",
      {},
      h("button.small", { type: "button", onclick: () => addRow() }, "Add model"),
      h("button.small.primary", { type: "submit" }, "Save prices"),
    ),
  );
}

export async function settingsView(main) {
  const page = h("div.page", {}, h("h1", {}, "Settings"));
  clear(main).append(page);
  const reload = () => settingsView(main);
  const [settings, pricing] = await Promise.all([
    loadSettings(),
    api.get("/api/pricing").catch(() => ({ prices: [] })),
  ]);
  append(page, [
    h("h2", {}, "Keys and endpoints"),
    SETTINGS.filter((s) => !s.key.startsWith("default_")).map((s) => settingRow(s, settings.get(s.key), reload)),
    h("h2", {}, "Defaults for new sessions"),
    SETTINGS.filter((s) => s.key.startsWith("default_")).map((s) => settingRow(s, settings.get(s.key), reload)),
    h("h2", {}, "Model prices (USD per million tokens)"),
    pricingEditor(pricing.prices || [], reload),
  ]);
}

// -- account ----------------------------------------------------------------------------------
export async function accountView(main, me, logout) {
  const page = h("div.page");
  clear(main).append(page);
  const reload = () => accountView(main, me, logout);
  let user = me;
  try {
    user = (await api.get("/api/auth/me")).user;
  } catch {
    /* keep what we have */
  }
  const current = h("input", { type: "password", autocomplete: "current-password", required: true });
  const next = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: 12 });
  const passwordForm = h(
    "form.card",
    {
      "aria-label": "Change password",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const result = await api.post("/api/auth/password", {
            currentPassword: current.value,
            newPassword: next.value,
          });
          current.value = "";
          next.value = "";
          toast(`Password changed; ${result.revokedSessions} other login(s) ended.`, "ok");
        } catch (error) {
          toast(error.message);
        }
      },
    },
    h("h2", {}, "Password"),
    field("Current password", current),
    field("New password", next, "At least 12 characters."),
    h("button.primary", { type: "submit" }, "Change password"),
  );

  const totpCard = h("section.card", { "aria-label": "Two-factor authentication" }, h("h2", {}, "Two-factor authentication"));
  if (user.totpEnabled) {
    const password = h("input", { type: "password", autocomplete: "current-password", required: true });
    totpCard.append(
      h("p", {}, "On: logging in asks for a code from your authenticator app."),
      h(
        "form",
        {
          onsubmit: async (event) => {
            event.preventDefault();
            try {
              await api.post("/api/auth/totp/disable", { password: password.value });
              toast("Two-factor authentication is off.", "ok");
              reload();
            } catch (error) {
              toast(error.message);
            }
          },
        },
        field("Password", password),
        h("button.danger", { type: "submit" }, "Turn off"),
      ),
    );
  } else {
    const start = h("button.primary", { type: "button" }, "Set up two-factor authentication");
    start.addEventListener("click", async () => {
      let enrollment;
      try {
        enrollment = await api.post("/api/auth/totp/enroll");
      } catch (error) {
        toast(error.message);
        return;
      }
      const code = h("input", { inputmode: "numeric", autocomplete: "one-time-code", required: true });
      const step = h(
        "form",
        {
          onsubmit: async (event) => {
            event.preventDefault();
            try {
              const result = await api.post("/api/auth/totp/confirm", { code: code.value.replace(/\s/g, "") });
              step.replaceWith(
                h(
                  "div",
                  {},
                  h("p", {}, "Two-factor authentication is on. Keep these recovery codes somewhere safe; each works once:"),
                  h("ul.recovery-codes", { "aria-label": "Recovery codes" }, result.recoveryCodes.map((c) => h("li", {}, h("code", {}, c)))),
                  h("button", { type: "button", onclick: reload }, "Done"),
                ),
              );
            } catch (error) {
              toast(error.message);
            }
          },
        },
        h("p", {}, "Add this secret to your authenticator app (or open the link on the phone that has it):"),
        h("p", {}, h("code.secret", { "aria-label": "TOTP secret" }, enrollment.secret)),
        h("p", {}, h("a.otpauth", { href: enrollment.otpauthUri }, "Open in authenticator app")),
        h("details", {}, h("summary", {}, "Show the otpauth URI"), h("code.wrap", {}, enrollment.otpauthUri)),
        field("Code from the app", code),
        h("button.primary", { type: "submit" }, "Confirm"),
      );
      start.replaceWith(step);
      code.focus();
    });
    totpCard.append(h("p", {}, "Off."), start);
  }

  const tokensCard = h("section.card", { "aria-label": "API tokens" }, h("h2", {}, "API tokens"));
  const tokenList = h("ul.token-list");
  const newToken = h("div");
  const name = h("input", { required: true, maxlength: 128, placeholder: "e.g. laptop script" });
  tokensCard.append(
    h("p.hint", {}, "For scripts and mobile clients: send `Authorization: Bearer <token>`."),
    tokenList,
    h(
      "form.row",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            const created = await api.post("/api/auth/tokens", { name: name.value.trim() });
            name.value = "";
            newToken.replaceChildren(
              h(
                "div.notice",
                { role: "status" },
                h("p", {}, "Your new token (shown only this once):"),
                h("code.wrap", { "aria-label": "New API token" }, created.token),
              ),
            );
            loadTokens();
          } catch (error) {
            toast(error.message);
          }
        },
      },
      field("Token name", name),
      h("button.primary", { type: "submit" }, "Create token"),
    ),
    newToken,
  );
  async function loadTokens() {
    let tokens = [];
    try {
      tokens = await api.get("/api/auth/tokens");
    } catch (error) {
      tokenList.replaceChildren(h("li.form-error", {}, error.message));
      return;
    }
    tokenList.replaceChildren();
    if (!tokens.length) tokenList.append(h("li.empty", {}, "No tokens."));
    for (const token of tokens) {
      tokenList.append(
        h(
          "li",
          {},
          h("strong", {}, token.name),
          h("span.hint", {}, ` ${token.prefix}… · used ${timeAgo(token.lastUsedAt)}`),
          h(
            "button.small.danger",
            {
              type: "button",
              "aria-label": `Revoke token ${token.name}`,
              onclick: async () => {
                try {
                  await api.del(`/api/auth/tokens/${token.id}`);
                  loadTokens();
                } catch (error) {
                  toast(error.message);
                }
              },
            },
            "Revoke",
          ),
        ),
      );
    }
  }
  loadTokens();

  page.append(
    h(
      "div.page-head",
      {},
      h("h1", {}, "Account"),
      h("button", { type: "button", onclick: logout }, "Log out"),
    ),
    h("p", {}, `Logged in as `, h("strong", {}, user.username), user.isOwner ? " (owner)" : ""),
    passwordForm,
    totpCard,
    tokensCard,
  );
}
