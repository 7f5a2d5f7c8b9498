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
      // nodeName, lower-cased: an SVG <a> reports "a", not "A" (SVG and <area> are also
      // forbidden below; this check is the second line).
      const name = node.nodeName.toLowerCase();
      if (name === "a" || name === "area") {
        for (const attribute of ["href", "xlink:href"]) {
          const href = node.getAttribute(attribute);
          if (href !== null && !SAFE_LINK.test(href.trim())) node.removeAttribute(attribute);
        }
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
    FORBID_TAGS: [
      "style", "form", "input", "button", "textarea", "select", "iframe",
      "svg", "math", "area", "map",
    ],
    // No id, name or class from the model: an id would shadow the app's own elements
    // (getElementById("toast")), a class would borrow its styles (a fixed overlay).
    FORBID_ATTR: ["style", "id", "name", "class"],
  });
}

/** An element with the rendered markdown. */
export function markdownBlock(text, className = "md") {
  const el = document.createElement("div");
  el.className = className;
  el.append(renderMarkdown(text));
  return el;
}
