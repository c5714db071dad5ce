// bcsync console: progressive enhancement only; every page and form works without it.
"use strict";
document.addEventListener("submit", (event) => {
  // A form with data-confirm asks first (retry all, decouple, dismiss...).
  const text = event.target.getAttribute && event.target.getAttribute("data-confirm");
  if (text && !window.confirm(text)) event.preventDefault();
});
// Elements with data-refresh="<url>" are replaced by the same element of <url>'s HTML every few seconds
// (live progress) while the element carries data-live="true".
function refreshLive() {
  document.querySelectorAll("[data-refresh][data-live='true']").forEach(async (element) => {
    try {
      const response = await fetch(element.dataset.refresh, { credentials: "same-origin" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById(element.id);
      if (fresh) element.replaceWith(fresh);
    } catch (error) { /* the next round tries again */ }
  });
}
setInterval(refreshLive, 2000);
