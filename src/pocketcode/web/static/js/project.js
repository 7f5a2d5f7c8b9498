// A session's project: its files (browse, preview text) and its git changes (per-file diffs).
import { api, withQuery } from "./api.js";
import { clear, h } from "./dom.js";
import { unifiedDiff } from "./diff.js";

function pageHead(sessionId, title) {
  return h(
    "div.page-head",
    {},
    h("a.back", { href: `#/sessions/${sessionId}`, "aria-label": "Back to the chat" }, "‹"),
    h("h1", {}, title),
  );
}

function formatSize(bytes) {
  if (bytes === undefined || bytes === null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export async function filesView(main, sessionId, params) {
  const path = params.get("path") || "";
  const file = params.get("file");
  const base = `/api/sessions/${encodeURIComponent(sessionId)}`;
  const listEl = h("ul.file-list", { "aria-label": "Files" });
  const previewEl = h("div.file-preview");
  const crumbs = h("p.current-path");
  clear(main).append(h("div.page", {}, pageHead(sessionId, "Files"), crumbs, file ? previewEl : listEl));
  const link = (p, extra = {}) => `#/sessions/${sessionId}/files?${new URLSearchParams({ path: p, ...extra })}`;

  if (file) {
    crumbs.append(h("a", { href: link(path) }, `‹ ${path || "project"}`), " / ", file.split("/").pop());
    try {
      const data = await api.get(withQuery(`${base}/files/content`, { path: file }));
      previewEl.append(
        h("p.hint", {}, `${data.path} · ${data.size} bytes`),
        h("pre.code.file-content", { "aria-label": `Content of ${data.path}` }, h("code", {}, data.content)),
      );
    } catch (error) {
      previewEl.append(h("p.form-error", {}, error.message));
    }
    return;
  }
  let data;
  try {
    data = await api.get(withQuery(`${base}/files`, { path }));
  } catch (error) {
    listEl.append(h("li.form-error", {}, error.message));
    return;
  }
  crumbs.textContent = data.path ? `${data.projectPath}/${data.path}` : data.projectPath;
  if (data.parentPath !== null && data.parentPath !== undefined) {
    listEl.append(h("li", {}, h("a.file", { href: link(data.parentPath) }, "‹ Up")));
  }
  const items = [...data.items].sort(
    (a, b) => Number(b.type === "directory") - Number(a.type === "directory") || a.name.localeCompare(b.name),
  );
  for (const item of items) {
    const relative = data.path ? `${data.path}/${item.name}` : item.name;
    const dir = item.type === "directory";
    listEl.append(
      h(
        "li",
        {},
        h(
          "a.file",
          { href: dir ? link(relative) : link(data.path, { file: relative }) },
          h("span.folder-icon", { "aria-hidden": "true" }, dir ? "▸" : "≡"),
          h("span", {}, item.name),
          dir ? null : h("span.hint", {}, formatSize(item.size)),
        ),
      ),
    );
  }
  if (!items.length) listEl.append(h("li.empty", {}, "This folder is empty."));
}

const CHANGE_LABELS = {
  added: "A",
  deleted: "D",
  modified: "M",
  renamed: "R",
  copied: "C",
  typechange: "T",
  conflicted: "U",
  untracked: "?",
};

export async function gitView(main, sessionId, params) {
  const selected = params.get("path");
  const base = `/api/sessions/${encodeURIComponent(sessionId)}`;
  const listEl = h("ul.change-list", { "aria-label": "Changed files" });
  const diffEl = h("div.diff-view");
  const summary = h("p.current-path");
  clear(main).append(h("div.page", {}, pageHead(sessionId, "Changes"), summary, listEl, diffEl));
  let status;
  try {
    status = await api.get(withQuery(`${base}/git/status`, { scope: "all", includeUntracked: "true" }));
  } catch (error) {
    summary.textContent = error.message;
    return;
  }
  summary.textContent = `${status.repoRoot}${status.branch ? ` · ${status.branch}` : ""} · ${status.entries.length} changed`;
  if (!status.entries.length) listEl.append(h("li.empty", {}, "No changes."));
  for (const entry of status.entries) {
    const stats = entry.stats ? ` +${entry.stats.additions} −${entry.stats.deletions}` : "";
    listEl.append(
      h(
        "li",
        {},
        h(
          "a.change",
          {
            href: `#/sessions/${sessionId}/git?${new URLSearchParams({ path: entry.path })}`,
            "aria-current": entry.path === selected ? "true" : null,
          },
          h(`span.change-kind.${entry.change}`, { title: entry.change }, CHANGE_LABELS[entry.change] || "M"),
          h("span", {}, entry.path),
          h("span.hint", {}, stats),
        ),
      ),
    );
  }
  if (!selected) return;
  const entry = status.entries.find((e) => e.path === selected);
  diffEl.append(h("h2", {}, selected));
  try {
    if (entry && entry.untracked) {
      const file = await api.get(withQuery(`${base}/git/file`, { path: selected, ref: "WORKING" }));
      const text = file.isBinary ? "" : file.content;
      diffEl.append(
        file.isBinary
          ? h("p.hint", {}, "Binary file.")
          : unifiedDiff(text.split("\n").map((line) => `+${line}`).join("\n"), `New file ${selected}`),
      );
      return;
    }
    const scope = entry && entry.staged && entry.worktree === "." ? "staged" : "unstaged";
    const diff = await api.get(withQuery(`${base}/git/diff`, { path: selected, scope, context: 3 }));
    diffEl.append(
      diff.isBinary ? h("p.hint", {}, "Binary file.") : unifiedDiff(diff.unified, `Diff of ${selected}`),
    );
  } catch (error) {
    diffEl.append(h("p.form-error", {}, error.message));
  }
}
