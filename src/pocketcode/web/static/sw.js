// pocketcode's service worker: makes the app installable and lets its shell open when the
// server cannot be reached. Network first, always: the server is the source of truth, and the
// cache is only a fallback. Only the shell is cached (the page and its assets): never the API,
// whose answers are private (a navigation to an /api/ URL was cached by v1, which activating
// this version deletes), and never the event streams.
const CACHE = "pocketcode-shell-v2";

self.addEventListener("install", (event) => {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function isShell(url, request) {
  if (url.origin !== self.location.origin || request.method !== "GET") return false;
  return url.pathname === "/" || url.pathname === "/index.html" || url.pathname.startsWith("/assets/");
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (!isShell(url, event.request)) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(event.request).then((hit) => hit || Response.error())),
  );
});
