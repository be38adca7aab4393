// The upload page: POST the chosen file to /predict as the multipart field "image" and show the answer.
"use strict";

const $ = (id) => document.getElementById(id);

function showError(message) {
  $("result").hidden = true;
  $("error").textContent = message;
  $("error").hidden = false;
}

function showAnswer(answer, file) {
  $("error").hidden = true;
  $("label").textContent = answer.label;
  const body = $("probabilities").querySelector("tbody");
  body.replaceChildren();
  for (const [name, probability] of Object.entries(answer.probabilities)) {
    const row = body.insertRow();
    row.className = "class-row";
    row.dataset.class = name;
    row.insertCell().textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(probability * 100)}%`;
    track.append(bar);
    row.insertCell().append(track);
    row.insertCell().textContent = `${(probability * 100).toFixed(1)}%`;
  }
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("result").hidden = false;
}

async function classify(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return showError("Choose an image first.");
  const form = new FormData();
  form.append("image", file);
  $("submit").disabled = true;
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    const answer = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (!response.ok) return showError(answer.error || `the server answered ${response.status}`);
    showAnswer(answer, file);
  } catch (error) {
    showError(`Could not reach the server: ${error}`);
  } finally {
    $("submit").disabled = false;
  }
}

async function showModel() {
  try {
    const meta = await (await fetch("/metadata")).json();
    $("model").textContent =
      `Model ${meta.model.name} (version ${meta.model.version}), classes: ${meta.classes.join(", ")}, ` +
      `${meta.image_size}x${meta.image_size} pixels.`;
  } catch (error) {
    $("model").textContent = "";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("upload").addEventListener("submit", classify);
  showModel();
});
