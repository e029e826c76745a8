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
