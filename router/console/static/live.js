// Live counters: every few seconds, fetch this page again and put the new content of each
// element marked data-live (by id) in place of the old, so counters move without a reload
// and without a second way of rendering them. Stops, and says why, when the session has
// ended or the console does not answer; pauses while the tab is hidden.
"use strict";
(function () {
  const state = document.getElementById("live-state");
  if (!state) return;
  const every = 1000 * Number(state.dataset.refresh || 5);
  let timer = null;
  let stopped = false;

  function say(text, bad) {
    state.textContent = text;
    state.className = bad ? "bad" : "";
  }

  async function refresh() {
    timer = null;
    if (document.hidden || stopped) return;
    try {
      const response = await fetch(location.href, {
        credentials: "same-origin", cache: "no-store", headers: {"Accept": "text/html"},
      });
      if (response.redirected || response.status === 401) {
        stopped = true;
        say("Live updates stopped: the session has ended, reload to log in again.", true);
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const old of document.querySelectorAll("[data-live][id]")) {
        const next = fresh.getElementById(old.id);
        if (next) old.innerHTML = next.innerHTML;
      }
      say("· live", false);
    } catch (error) {
      say("· not updating: " + error.message + " (trying again)", true);
    }
    schedule();
  }

  function schedule() {
    if (timer === null && !stopped) timer = setTimeout(refresh, every);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { if (timer !== null) clearTimeout(timer); timer = null; refresh(); }
  });
  say("· live", false);
  schedule();
})();
