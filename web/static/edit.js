// `Edit` (the web's Vary (Region)): paint the area to redraw over a picture, then send the
// painting as a black and white mask (white = redraw) with the prompt. Pointer events, so a
// mouse, a pen and a finger all paint.
"use strict";

(() => {
  const stage = document.querySelector("[data-stage]");
  if (!stage) return;
  const picture = stage.querySelector("img");
  // The picture's own size, from the page (not its size on screen, nor its file not yet loaded).
  const width = Number(picture.getAttribute("width"));
  const height = Number(picture.getAttribute("height"));

  // ---- the picture fills the space it has, keeping its shape -------------------------------
  function fit() {
    const room = stage.parentElement.clientWidth;
    // As tall as the window leaves below the toolbar, with room for the hint under it.
    const top = stage.getBoundingClientRect().top + window.scrollY;
    const tall = Math.max(240, window.innerHeight - top - 72);
    const scale = Math.min(room / width, tall / height);
    stage.style.width = `${Math.floor(width * scale)}px`;
    stage.style.height = `${Math.floor(height * scale)}px`;
  }
  fit();
  window.addEventListener("resize", fit);

  const form = document.querySelector("[data-edit-form]");
  const canvas = document.querySelector("[data-mask]");
  if (!form || !canvas) return; // this picture cannot be edited now: the page says why

  const brush = document.querySelector("[data-brush]");
  const size = document.querySelector("[data-size]");
  const undoButton = document.querySelector("[data-undo]");
  const clearButton = document.querySelector("[data-clear]");
  const submit = form.querySelector("[data-submit]");
  const error = form.querySelector("[data-error]");
  const tools = [...document.querySelectorAll("[data-tool]")];

  const paint = canvas.getContext("2d", { willReadFrequently: true });
  const PAINT = "#ff3d7f"; // shown half transparent (CSS); only where it is counts
  const UNDO_MAX = 30;
  const history = [];
  let erasing = false;
  let drawing = null; // the pointer painting now
  let last = null;

  // ---- brush ----------------------------------------------------------------------------------
  function diameter() {
    // In the picture's pixels: a share of its longer side, so a size looks alike on any picture.
    return Math.max(1, (Number(size.value) / 100) * Math.max(width, height));
  }

  function at(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * width) / box.width,
      y: ((event.clientY - box.top) * height) / box.height,
    };
  }

  function style() {
    paint.globalCompositeOperation = erasing ? "destination-out" : "source-over";
    paint.strokeStyle = PAINT;
    paint.fillStyle = PAINT;
    paint.lineWidth = diameter();
    paint.lineCap = "round";
    paint.lineJoin = "round";
  }

  function dab(point) {
    style();
    paint.beginPath();
    paint.arc(point.x, point.y, diameter() / 2, 0, Math.PI * 2);
    paint.fill();
  }

  function stroke(from, to) {
    style();
    paint.beginPath();
    paint.moveTo(from.x, from.y);
    paint.lineTo(to.x, to.y);
    paint.stroke();
  }

  function showBrush(event) {
    if (event.pointerType === "touch") return;
    const box = canvas.getBoundingClientRect();
    const shown = (diameter() * box.width) / width;
    brush.style.width = brush.style.height = `${shown}px`;
    brush.style.left = `${event.clientX - box.left}px`;
    brush.style.top = `${event.clientY - box.top}px`;
    brush.classList.add("on");
    brush.classList.toggle("erase", erasing);
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    if (drawing !== null) return; // a second finger does not paint
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    remember();
    drawing = event.pointerId;
    last = at(event);
    dab(last);
    hideError();
  });

  canvas.addEventListener("pointermove", (event) => {
    showBrush(event);
    if (event.pointerId !== drawing) return;
    const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const move of moves.length ? moves : [event]) {
      const point = at(move);
      stroke(last, point);
      last = point;
    }
  });

  function stop(event) {
    if (event.pointerId !== drawing) return;
    drawing = null;
    last = null;
    changed();
  }
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  canvas.addEventListener("pointerleave", () => brush.classList.remove("on"));

  // ---- tools ----------------------------------------------------------------------------------
  function choose(tool) {
    erasing = tool === "erase";
    for (const button of tools) {
      const on = button.dataset.tool === tool;
      button.classList.toggle("on", on);
      button.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }
  for (const button of tools) button.addEventListener("click", () => choose(button.dataset.tool));

  function remember() {
    history.push(paint.getImageData(0, 0, width, height));
    if (history.length > UNDO_MAX) history.shift();
  }

  function undo() {
    const before = history.pop();
    if (before) paint.putImageData(before, 0, 0);
    changed();
  }
  undoButton.addEventListener("click", undo);

  clearButton.addEventListener("click", () => {
    remember();
    paint.clearRect(0, 0, width, height);
    changed();
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("textarea, input")) return;
    if ((event.ctrlKey || event.metaKey) && event.key === "z") {
      event.preventDefault();
      undo();
    } else if (event.key === "[" || event.key === "]") {
      size.value = Number(size.value) + (event.key === "]" ? 1 : -1);
    } else if (event.key === "e") {
      choose(erasing ? "paint" : "erase");
    }
  });

  // Whether anything is painted, and the mask the server stores: white where painted.
  function mask() {
    const painted = paint.getImageData(0, 0, width, height).data;
    const out = new ImageData(width, height);
    let any = false;
    for (let i = 3; i < painted.length; i += 4) {
      const on = painted[i] >= 128 ? 255 : 0;
      any = any || on > 0;
      out.data[i - 3] = out.data[i - 2] = out.data[i - 1] = on;
      out.data[i] = 255;
    }
    return any ? out : null;
  }

  function changed() {
    undoButton.disabled = history.length === 0;
    clearButton.disabled = mask() === null;
  }

  // ---- submitting -----------------------------------------------------------------------------
  function showError(text) {
    // Errors name values in `backticks`, as in Discord: shown as code.
    error.replaceChildren(...text.split("`").map((part, i) => {
      if (i % 2 === 0) return document.createTextNode(part);
      const code = document.createElement("code");
      code.textContent = part;
      return code;
    }));
    error.hidden = false;
  }

  function hideError() {
    error.hidden = true;
  }

  async function problem(response) {
    if (response.type === "opaqueredirect") {
      return "You are signed out: reload the page to sign in again (your painting is lost).";
    }
    if ((response.headers.get("Content-Type") || "").startsWith("application/json")) {
      const body = await response.json();
      if (body.error) return body.error;
    }
    if (response.status === 404) return "This picture is no longer there for you.";
    if (response.status === 413) return "The painted mask is too large to send.";
    return "Something went wrong on our side; please try again.";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError();
    const painted = mask();
    if (painted === null) {
      showError("Paint the area to redraw over the picture first.");
      return;
    }
    const sheet = document.createElement("canvas");
    sheet.width = width;
    sheet.height = height;
    sheet.getContext("2d").putImageData(painted, 0, 0);
    const png = await new Promise((done) => sheet.toBlob(done, "image/png"));
    const data = new FormData(form);
    data.append("mask", png, "mask.png");
    submit.disabled = true;
    submit.textContent = "Submitting…";
    try {
      const response = await fetch(form.action, {
        method: "POST", body: data, redirect: "manual", credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.status === 201) {
        const made = await response.json();
        window.location.assign(made.url);
        return;
      }
      showError(await problem(response));
    } catch (failure) {
      showError("Atelier did not answer; check your connection and try again.");
    }
    submit.disabled = false;
    submit.textContent = "Submit";
  });

  picture.addEventListener("dragstart", (event) => event.preventDefault());
  changed();
})();
