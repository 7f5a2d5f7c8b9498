// Tool calls as cards: Edit/MultiEdit as diffs, Write as a preview, Bash with its command and
// output, Read/Grep/Glob/LS with their target, TodoWrite as a checklist, Task/Agent as a group
// holding the sub-agent's messages, and any other tool as a generic card. The tool's result
// is attached to its card when it arrives.
import { h } from "./dom.js";
import { editDiff } from "./diff.js";
import { markdownBlock } from "./markdown.js";

const MAX_OUTPUT_CHARS = 20_000;
const MAX_PREVIEW_LINES = 80;

function str(value) {
  return typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
}

function clip(text, max = MAX_OUTPUT_CHARS) {
  const value = str(text);
  return value.length > max ? `${value.slice(0, max)}\n… (${value.length - max} more characters)` : value;
}

function preview(text) {
  const lines = str(text).split("\n");
  if (lines.length <= MAX_PREVIEW_LINES) return lines.join("\n");
  return `${lines.slice(0, MAX_PREVIEW_LINES).join("\n")}\n… (${lines.length - MAX_PREVIEW_LINES} more lines)`;
}

function code(text, className = "code") {
  return h(`pre.${className}`, {}, h("code", {}, text));
}

const ICONS = {
  Edit: "✎",
  MultiEdit: "✎",
  Write: "✚",
  Bash: "$",
  Read: "≡",
  Grep: "⌕",
  Glob: "⌕",
  LS: "▤",
  TodoWrite: "☑",
  TaskCreate: "☑",
  TaskUpdate: "☑",
  Task: "⑂",
  Agent: "⑂",
};

/** What the header says after the tool's name: its target. */
export function toolTarget(name, input) {
  const args = input || {};
  switch (name) {
    case "Edit":
    case "MultiEdit":
    case "Write":
    case "NotebookEdit":
      return str(args.file_path || args.notebook_path);
    case "Read": {
      const range =
        args.offset || args.limit
          ? ` (lines ${args.offset || 1}–${args.limit ? Number(args.offset || 1) + Number(args.limit) - 1 : "end"})`
          : "";
      return str(args.file_path) + range;
    }
    case "Bash":
      return str(args.description);
    case "Grep":
      return `${str(args.pattern)} in ${str(args.path) || "."}${args.glob ? ` (${args.glob})` : ""}`;
    case "Glob":
      return `${str(args.pattern)}${args.path ? ` in ${args.path}` : ""}`;
    case "LS":
      return str(args.path);
    case "Task":
    case "Agent":
      return `${str(args.subagent_type) || "agent"}: ${str(args.description)}`;
    case "TaskCreate":
      return str(args.subject || args.description);
    case "TaskUpdate":
      return `${str(args.taskId)}${args.status ? ` → ${args.status}` : ""}`;
    case "WebFetch":
      return str(args.url);
    case "WebSearch":
      return str(args.query);
    default:
      return "";
  }
}

function todoList(todos) {
  const labels = { completed: "done", in_progress: "in progress", pending: "to do" };
  const marks = { completed: "✓", in_progress: "◐", pending: "○" };
  return h(
    "ul.todos",
    { "aria-label": "Todo list" },
    (Array.isArray(todos) ? todos : []).map((todo) =>
      h(
        "li",
        { dataset: { status: str(todo.status) } },
        h("span.todo-mark", { "aria-label": labels[todo.status] || str(todo.status) }, marks[todo.status] || "•"),
        h("span", {}, str(todo.content)),
      ),
    ),
  );
}

/** The body that shows what the tool will do (also used by permission prompts). */
export function toolBody(name, input) {
  const args = input || {};
  switch (name) {
    case "Edit":
      return h(
        "div",
        {},
        editDiff(args.old_string, args.new_string, `Changes to ${str(args.file_path)}`),
        args.replace_all ? h("p.hint", {}, "Every occurrence is replaced.") : null,
      );
    case "MultiEdit":
      return h(
        "div",
        {},
        (Array.isArray(args.edits) ? args.edits : []).map((edit, i) =>
          editDiff(edit.old_string, edit.new_string, `Edit ${i + 1} of ${str(args.file_path)}`),
        ),
      );
    case "Write":
      return h("div.write-preview", { "aria-label": "New file content" }, code(preview(args.content)));
    case "Bash":
      return code(`$ ${str(args.command)}`, "cmd");
    case "TodoWrite":
      return todoList(args.todos);
    case "Task":
    case "Agent":
      return h("details.prompt", {}, h("summary", {}, "Prompt"), markdownBlock(str(args.prompt)));
    case "TaskCreate":
      return todoList([{ content: str(args.subject || args.description), status: "pending" }]);
    case "Read":
    case "Grep":
    case "Glob":
    case "LS":
    case "TaskUpdate":
      return null;
    default:
      return code(JSON.stringify(args, null, 2), "json");
  }
}

/** A tool card: `{el, children, setResult(text, isError)}`. `children` holds a sub-agent's
 * messages (Task/Agent only). */
export function toolCard(block) {
  const name = str(block.name) || "tool";
  const input = block.input && typeof block.input === "object" ? block.input : {};
  const target = toolTarget(name, input);
  const known = name in ICONS;
  const card = h(
    `section.tool${known ? "" : ".generic"}`,
    { dataset: { tool: name, toolUseId: str(block.id) }, "aria-label": `Tool call ${name}` },
    h(
      "header.tool-head",
      {},
      h("span.tool-icon", { "aria-hidden": "true" }, ICONS[name] || "⚙"),
      h("strong.tool-name", {}, name),
      target ? h("span.tool-target", { title: target }, target) : null,
      h("span.tool-status", { "aria-label": "running" }, "…"),
    ),
  );
  const body = toolBody(name, input);
  if (body) card.append(body);
  let children = null;
  if (name === "Task" || name === "Agent") {
    children = h("div.subagent", { "aria-label": "Sub-agent messages" });
    card.append(children);
  }
  const resultSlot = h("div.tool-result");
  card.append(resultSlot);

  function setResult(text, isError) {
    const status = card.querySelector(".tool-status");
    status.textContent = isError ? "✗" : "✓";
    status.setAttribute("aria-label", isError ? "failed" : "done");
    card.classList.toggle("failed", Boolean(isError));
    resultSlot.replaceChildren();
    const value = str(text);
    if (!value && !isError) return;
    let content;
    if ((name === "Task" || name === "Agent") && !isError) {
      content = markdownBlock(clip(value));
    } else {
      content = code(clip(value), "output");
    }
    // Output that tells the story stays open; the rest (file contents, "file updated") folds.
    const open = isError || name === "Bash" || name === "Task" || name === "Agent" || !known;
    resultSlot.append(
      h(
        "details.result",
        { open },
        h("summary", {}, isError ? "Error" : name === "Task" || name === "Agent" ? "Report" : "Output"),
        content,
      ),
    );
  }

  return { el: card, children, setResult };
}
