// gan-ga demo page: builds API URLs from the forms and shows the PNG, or the server's message.
// Every value is checked by the server (one place); the page only shows what it answers.
async function show(url, parts) {
  parts.error.textContent = "";
  parts.status.textContent = "generating...";
  parts.button.disabled = true;
  const start = performance.now();
  try {
    const response = await fetch(url);
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).detail || message; } catch (e) { /* not JSON */ }
      parts.error.textContent = message;
      parts.status.textContent = "";
      return;
    }
    const blob = await response.blob();
    if (parts.image.dataset.url) URL.revokeObjectURL(parts.image.dataset.url);
    parts.image.dataset.url = URL.createObjectURL(blob);
    parts.image.src = parts.image.dataset.url;
    parts.status.textContent = `${((performance.now() - start) / 1000).toFixed(2)} s`;
  } catch (e) {
    parts.error.textContent = "the demo server did not answer: " + e;
    parts.status.textContent = "";
  } finally {
    parts.button.disabled = false;
  }
}

const element = (id) => document.getElementById(id);
const value = (id) => element(id).value;

element("generate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams({ prompt: value("prompt"), n: value("n"), seed: value("seed") });
  if (value("truncation").trim()) query.set("truncation", value("truncation"));
  show("/api/generate?" + query,
       { image: element("result"), error: element("error"), status: element("status"), button: element("generate") });
});

element("interpolate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams({ a: value("a"), b: value("b"), steps: value("steps"), seed: value("seed") });
  show("/api/interpolate?" + query,
       { image: element("strip"), error: element("interpolate-error"), status: element("interpolate-status"),
         button: element("interpolate") });
});

fetch("/healthz").then((r) => r.json()).then((info) => {
  element("model").textContent =
    `${info.model}: ${info.image_size}x${info.image_size}, ${info.batches_trained} batches trained`;
}).catch(() => {});
