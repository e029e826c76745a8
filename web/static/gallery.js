// The gallery's few behaviours; every page works without them.
"use strict";

document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const source = document.querySelector(copy.dataset.copy);
    if (source) copyText(source.textContent.trim(), copy);
    return;
  }
  const reveal = event.target.closest("[data-reveal]");
  if (reveal) {
    const picture = reveal.parentElement.querySelector("img.veiled");
    if (picture) picture.classList.remove("veiled");
    reveal.remove();
  }
});

document.addEventListener("change", (event) => {
  if (event.target.matches("[data-autosubmit]")) event.target.form.requestSubmit();
});

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    // Without the clipboard API (a plain-http address other than localhost): select and copy.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied";
  button.disabled = true;
  setTimeout(() => { button.textContent = label; button.disabled = false; }, 1500);
}

// A job still queued or running: follow it, and show its pictures once it has them.
const FOLLOW_EVERY = 1500; // ms
const FOLLOW_FAILURES = 5;

async function followJob(panel) {
  const state = panel.querySelector("[data-state]");
  let failures = 0;
  for (;;) {
    await new Promise((done) => setTimeout(done, FOLLOW_EVERY));
    try {
      const response = await fetch(panel.dataset.follow, {
        headers: { Accept: "application/json" }, redirect: "manual", cache: "no-store",
      });
      if (!response.ok) throw new Error(`status ${response.status}`);
      const job = await response.json();
      failures = 0;
      if (job.status !== "queued" && job.status !== "running") {
        window.location.reload();
        return;
      }
      state.textContent = job.status === "running" ? "Drawing…"
        : job.position ? `Queued — position ${job.position}` : "Queued";
    } catch (error) {
      failures += 1;
      if (failures >= FOLLOW_FAILURES) {
        state.textContent = "Lost touch with Atelier: reload the page to see how the job is doing.";
        return;
      }
    }
  }
}

const following = document.querySelector("[data-follow]");
if (following) followJob(following);
