// Markdown from the model → a sanitized DocumentFragment. Every piece of HTML goes through
// DOMPurify (vendor/purify.min.js); links are forced to http(s)/mailto and open in a new tab.
import { marked } from "../vendor/marked.esm.js";

const SAFE_LINK = /^(https?:|mailto:|#|\/(?!\/))/i;

let configured = false;
function purifier() {
  const purify = window.DOMPurify;
  if (!purify) throw new Error("DOMPurify did not load");
  if (!configured) {
    purify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        const href = node.getAttribute("href") || "";
        if (!SAFE_LINK.test(href.trim())) node.removeAttribute("href");
        node.setAttribute("rel", "noopener noreferrer nofollow");
        node.setAttribute("target", "_blank");
      }
    });
    configured = true;
  }
  return purify;
}

marked.setOptions({ gfm: true, breaks: true });

export function renderMarkdown(text) {
  const html = marked.parse(String(text ?? ""), { async: false });
  return purifier().sanitize(html, {
    RETURN_DOM_FRAGMENT: true,
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe"],
    FORBID_ATTR: ["style"],
  });
}

/** An element with the rendered markdown. */
export function markdownBlock(text, className = "md") {
  const el = document.createElement("div");
  el.className = className;
  el.append(renderMarkdown(text));
  return el;
}
