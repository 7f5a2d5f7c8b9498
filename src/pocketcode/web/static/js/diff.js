// Diffs as elements: an edit's old → new text (a line diff computed here) and git's unified
// diffs (rendered line by line). All text goes in as text nodes.
import { h } from "./dom.js";

const MAX_CELLS = 4_000_000; // beyond this, show old and new whole rather than diff them

/** [{kind: " "|"-"|"+", text}] for two texts, by longest common subsequence of lines. */
export function lineDiff(oldText, newText) {
  const a = String(oldText ?? "").split("\n");
  const b = String(newText ?? "").split("\n");
  if (oldText === "") a.length = 0;
  if (newText === "") b.length = 0;
  if (a.length * b.length > MAX_CELLS) {
    return [...a.map((text) => ({ kind: "-", text })), ...b.map((text) => ({ kind: "+", text }))];
  }
  const rows = a.length + 1;
  const cols = b.length + 1;
  const table = new Uint32Array(rows * cols);
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      table[i * cols + j] =
        a[i] === b[j]
          ? table[(i + 1) * cols + j + 1] + 1
          : Math.max(table[(i + 1) * cols + j], table[i * cols + j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      out.push({ kind: " ", text: a[i] });
      i++;
      j++;
    } else if (table[(i + 1) * cols + j] >= table[i * cols + j + 1]) {
      out.push({ kind: "-", text: a[i++] });
    } else {
      out.push({ kind: "+", text: b[j++] });
    }
  }
  while (i < a.length) out.push({ kind: "-", text: a[i++] });
  while (j < b.length) out.push({ kind: "+", text: b[j++] });
  return out;
}

function lineClass(kind) {
  return kind === "+" ? "add" : kind === "-" ? "del" : kind === "@" ? "hunk" : "ctx";
}

function diffTable(lines, label) {
  const body = h("div.diff", { role: "table", "aria-label": label });
  for (const { kind, text } of lines) {
    body.append(
      h(
        `div.diff-line.${lineClass(kind)}`,
        { role: "row" },
        h("span.diff-sign", { "aria-hidden": "true" }, kind === "@" ? "" : kind),
        h("span.diff-text", { role: "cell" }, text),
      ),
    );
  }
  return body;
}

/** An edit (old_string → new_string) as a diff. */
export function editDiff(oldText, newText, label = "Changes") {
  return diffTable(lineDiff(oldText, newText), label);
}

/** Git's unified diff text as a diff. */
export function unifiedDiff(text, label = "Diff") {
  const lines = [];
  for (const line of String(text || "").split("\n")) {
    if (line.startsWith("diff --git") || line.startsWith("index ")) continue;
    if (line.startsWith("+++") || line.startsWith("---")) continue;
    if (line.startsWith("@@")) lines.push({ kind: "@", text: line });
    else if (line.startsWith("+")) lines.push({ kind: "+", text: line.slice(1) });
    else if (line.startsWith("-")) lines.push({ kind: "-", text: line.slice(1) });
    else if (line.startsWith("\\")) lines.push({ kind: "@", text: line });
    else lines.push({ kind: " ", text: line.slice(1) });
  }
  while (lines.length && lines[lines.length - 1].kind === " " && !lines[lines.length - 1].text) {
    lines.pop();
  }
  return diffTable(lines, label);
}
