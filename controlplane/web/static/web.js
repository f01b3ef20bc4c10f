// mirrorplane's page: fetch the #live fragment again every few seconds and swap it in place.
// The browser holds one fragment at a time; opened pairs stay open across updates.
"use strict";
(() => {
  const live = document.getElementById("live");
  if (!live) return;
  const body = document.body;
  const every = Number(body.dataset.every) || 2000;
  let url = body.dataset.live;
  let generation = body.dataset.generation;
  let busy = false;

  function say(text, bad) {
    const state = document.getElementById("state");
    state.classList.toggle("stale", Boolean(bad));
    if (bad) state.textContent = text;
    else state.innerHTML = "live · updated <time id=\"updated\"></time> UTC";
    const t = document.getElementById("updated");
    if (t) t.textContent = new Date().toISOString().slice(11, 19);
  }

  async function poll(force) {
    if (busy || (document.hidden && !force)) return;
    busy = true;
    try {
      const u = new URL(url, location.href);
      u.searchParams.set("fragment", "1");
      u.searchParams.set("since", force ? "" : generation);
      const r = await fetch(u, { cache: "no-store", credentials: "same-origin" });
      if (r.status === 200) {
        const open = new Set([...live.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key));
        live.innerHTML = await r.text();
        for (const d of live.querySelectorAll("details[data-key]")) if (open.has(d.dataset.key)) d.open = true;
        generation = r.headers.get("X-Generation") || "";
        body.dataset.generation = generation;
        say();
      } else if (r.status === 204) {
        say();
      } else {
        say("update failed: HTTP " + r.status + " (retrying)", true);
      }
    } catch (e) {
      say("control plane unreachable (retrying)", true);
    } finally {
      busy = false;
    }
  }

  setInterval(poll, every);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(true); });

  const q = document.querySelector("form.filter input[name=q]");
  if (q) {
    let timer;
    q.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const u = new URL(location.href);
        if (q.value) u.searchParams.set("q", q.value); else u.searchParams.delete("q");
        for (const k of ["gpage", "epage", "rpage"]) u.searchParams.delete(k);
        history.replaceState(null, "", u);
        url = u.pathname + u.search;
        poll(true);
      }, 250);
    });
  }
})();
