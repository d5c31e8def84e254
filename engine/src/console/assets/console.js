// The console's only script: progressive enhancement, never required.
// Forms marked data-confirm ask before they are sent.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// A watched page (data-refresh="N") reloads every N seconds while it is
// visible and nothing on it is opened or being typed into.
const watched = document.querySelector("[data-refresh]");
if (watched) {
  const seconds = Number(watched.dataset.refresh) || 2;
  setInterval(() => {
    const busy = document.querySelector("details[open]") || document.activeElement?.matches("input, textarea, select");
    if (!document.hidden && !busy) {
      window.location.reload();
    }
  }, seconds * 1000);
}

// A file input marked data-fills="NAME" reads the chosen file into the
// form's NAME field as base64 (a PKCS#12 certificate), so the form itself
// stays a plain one.
document.addEventListener("change", (event) => {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || !input.dataset.fills || !input.files?.length) {
    return;
  }
  const target = input.form?.elements.namedItem(input.dataset.fills);
  const reader = new FileReader();
  reader.onload = () => {
    const bytes = new Uint8Array(reader.result);
    let binary = "";
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    if (target) {
      target.value = btoa(binary);
    }
  };
  reader.readAsArrayBuffer(input.files[0]);
});
