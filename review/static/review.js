// The review page: one queue item at a time; keyboard and mouse; every submit becomes correction records.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { items: [], classes: [], at: 0, tags: [], newClasses: new Set(), suggestions: [] };

  function api(path, options) {
    return fetch(path, Object.assign({ credentials: "same-origin" }, options)).then((r) =>
      r.json().then((body) => { if (!r.ok) throw new Error(body.error || r.statusText); return body; }));
  }

  function message(text, kind) { const m = $("message"); m.textContent = text; m.className = kind || ""; }

  function reasonText(r) {
    if (!r) return "";
    if (r.strategy === "uncertainty") {
      return `uncertainty (${r.phase}): ${r.class} p=${r.probability} vs threshold ${r.threshold}`;
    }
    if (r.strategy === "disagreement") {
      const a = (r.only_this_version || []).join(", ") || "-", b = (r.only_other_version || []).join(", ") || "-";
      return `disagreement with ${r.other_version}: only this version ${a}; only ${r.other_version} ${b}`;
    }
    if (r.strategy === "label-issues") {
      const c = Object.entries(r.contradicted || {}).map(([k, v]) => `${k} (p=${v})`).join(", ");
      return `label issue (quality ${r.label_quality}): training labels contradicted on ${c || "-"}`;
    }
    return `${r.strategy}` + (r.seed !== undefined ? ` (seed ${r.seed})` : "");
  }

  function show(index) {
    if (!state.items.length) { message("This queue is empty.", "ok"); return; }
    state.at = (index + state.items.length) % state.items.length;
    const item = state.items[state.at];
    state.tags = item.tags.slice();
    state.newClasses = new Set();
    const photo = $("photo");
    $("image-error").hidden = true;
    photo.hidden = false;
    photo.src = `/image/${item.index}`;
    $("uri").textContent = item.image_uri;
    $("reason").textContent = "Chosen by " + reasonText(item.reason);
    const ranked = Object.entries(item.probabilities).sort((a, b) => b[1] - a[1]);
    const seen = new Set(ranked.slice(0, 9).map((e) => e[0]));
    state.suggestions = ranked.slice(0, 9).concat(item.tags.filter((t) => !seen.has(t)).map((t) => [t, item.probabilities[t]]));
    const done = state.items.filter((i) => i.reviewed).length;
    $("progress").textContent = `item ${state.at + 1} of ${state.items.length} · ${done} reviewed` +
      (item.reviewed ? " · this one is already reviewed" : "");
    message("");
    render();
  }

  function render() {
    const item = state.items[state.at];
    const chips = $("chips");
    chips.replaceChildren();
    for (const tag of state.tags) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip" + (item.tags.includes(tag) ? "" : " added") + (state.newClasses.has(tag) ? " newclass" : "");
      chip.textContent = tag;
      chip.dataset.tag = tag;
      chip.title = "remove " + tag;
      chip.addEventListener("click", () => toggle(tag));
      chips.appendChild(chip);
    }
    for (const tag of item.tags.filter((t) => !state.tags.includes(t))) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip removed";
      chip.textContent = tag;
      chip.title = "removed: click to put " + tag + " back";
      chip.addEventListener("click", () => toggle(tag));
      chips.appendChild(chip);
    }
    const list = $("suggestions");
    list.replaceChildren();
    state.suggestions.forEach(([tag, p], k) => {
      const li = document.createElement("li");
      li.dataset.tag = tag;
      li.className = state.tags.includes(tag) ? "on" : "";
      const key = document.createElement("span"); key.className = "key"; key.textContent = k < 9 ? String(k + 1) : "";
      const box = document.createElement("input"); box.type = "checkbox"; box.checked = state.tags.includes(tag); box.tabIndex = -1;
      const name = document.createElement("span"); name.className = "name"; name.textContent = tag;
      const bar = document.createElement("span"); bar.className = "bar";
      const fill = document.createElement("span"); fill.className = "fill"; fill.style.width = `${Math.round((p || 0) * 100)}%`;
      const tick = document.createElement("span"); tick.className = "tick";
      tick.style.left = `${Math.round((state.thresholds[tag] ?? 0.5) * 100)}%`;
      bar.append(fill, tick);
      const prob = document.createElement("span"); prob.className = "p"; prob.textContent = p === undefined ? "" : p.toFixed(2);
      li.append(key, box, name, bar, prob);
      li.addEventListener("click", () => toggle(tag));
      list.appendChild(li);
    });
  }

  function toggle(tag) {
    const i = state.tags.indexOf(tag);
    if (i >= 0) { state.tags.splice(i, 1); state.newClasses.delete(tag); } else { state.tags.push(tag); }
    render();
  }

  function addTag(event) {
    event.preventDefault();
    const input = $("add-tag"), tag = input.value.trim();
    if (!tag) return;
    const known = state.classes.includes(tag);
    if (!known && !$("new-class").checked) {
      message(`"${tag}" is not a class of the model: tick "new class" to add it as a new class`, "error");
      return;
    }
    if (!state.tags.includes(tag)) state.tags.push(tag);
    if (!known) state.newClasses.add(tag);
    input.value = ""; $("new-class").checked = false; input.blur();
    message("");
    render();
  }

  function submit() {
    const item = state.items[state.at];
    const annotator = $("annotator").value.trim();
    if (!annotator) { message("Enter your name as reviewer first.", "error"); $("annotator").focus(); return; }
    localStorage.setItem("tagger-review-annotator", annotator);
    message("saving…");
    api("/api/submit", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ index: item.index, tags: state.tags, new_classes: [...state.newClasses], annotator }),
    }).then((r) => {
      item.reviewed = true;
      const next = state.items.findIndex((it, k) => k > state.at && !it.reviewed);
      if (next >= 0) show(next); else show(state.at);
      message(`Saved ${r.written} correction records (${r.where}).`, "ok");
    }).catch((e) => message("Not saved: " + e.message, "error"));
  }

  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLInputElement && e.target.type !== "checkbox";
    if (typing) { if (e.key === "Escape") e.target.blur(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[1-9]$/.test(e.key)) { const s = state.suggestions[Number(e.key) - 1]; if (s) toggle(s[0]); e.preventDefault(); }
    else if (e.key === "Enter") { submit(); e.preventDefault(); }
    else if (e.key === "ArrowRight") { show(state.at + 1); e.preventDefault(); }
    else if (e.key === "ArrowLeft") { show(state.at - 1); e.preventDefault(); }
    else if (e.key === "a" || e.key === "/") { $("add-tag").focus(); e.preventDefault(); }
  });

  window.addEventListener("DOMContentLoaded", () => {
    $("add-form").addEventListener("submit", addTag);
    $("submit").addEventListener("click", submit);
    $("skip").addEventListener("click", () => show(state.at + 1));
    $("prev").addEventListener("click", () => show(state.at - 1));
    $("photo").addEventListener("error", () => {
      $("photo").hidden = true; $("image-error").hidden = false;
      $("image-error").textContent = "This image cannot be displayed; you can still review or skip it.";
    });
    api("/api/queue").then((q) => {
      state.items = q.items; state.classes = q.classes; state.thresholds = q.thresholds;
      $("queue-info").textContent = `${q.strategy} queue · ${q.model}`;
      $("annotator").value = localStorage.getItem("tagger-review-annotator") || q.annotator || "";
      const list = $("class-list");
      for (const c of q.classes) { const o = document.createElement("option"); o.value = c; list.appendChild(o); }
      const first = state.items.findIndex((it) => !it.reviewed);
      show(first >= 0 ? first : 0);
    }).catch((e) => message("Cannot load the queue: " + e.message, "error"));
  });
})();
