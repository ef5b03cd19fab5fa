// chargebox pages: the only script, and none of them needs it. A form marked data-once
// sends once: the first submit disables its buttons, so a double click cannot send it
// twice. (The server does not rely on this: the sell form also carries its own
// Idempotency-Key.) Below: the Copy button and the Show toggle, whose words the page
// wrote in its own language.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.hasAttribute("data-once")) return;
  if (form.dataset.sent === "yes") {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "yes";
  window.setTimeout(function () {
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      button.disabled = true;
    });
  }, 0);
});
// Back/forward cache: a page shown again must be usable again.
window.addEventListener("pageshow", function () {
  document.querySelectorAll("form[data-once]").forEach(function (form) {
    delete form.dataset.sent;
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      button.disabled = false;
    });
  });
});
// A "Copy" button (views/copy_button.tpl, hidden until this script shows it) copies the
// text of the element its data-copy names with the Clipboard API; where that is missing
// (a page served over plain http to another host) or refused, the text is selected for
// the visitor to copy, and the status line beside the button says which happened.
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var source = document.getElementById(button.dataset.copy);
  var status = document.getElementById(button.id + "-status");
  if (!source) return;
  button.hidden = false;
  function said(text) {
    status.textContent = text;
  }
  function select() {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    said(button.dataset.selected);
  }
  button.addEventListener("click", function () {
    var text = source.textContent.trim();
    if (!navigator.clipboard || !window.isSecureContext) {
      select();
      return;
    }
    navigator.clipboard.writeText(text).then(function () {
      said(button.dataset.copied);
    }, select);
  });
});
// A "Show" toggle (views/reveal_button.tpl) switches the password field its data-reveal
// names between hidden and visible text, and its own label between data-show and
// data-hide: the label says what a press will do.
document.querySelectorAll("button[data-reveal]").forEach(function (button) {
  var field = document.getElementById(button.dataset.reveal);
  if (!field) return;
  button.hidden = false;
  button.addEventListener("click", function () {
    var shown = field.type === "password";
    field.type = shown ? "text" : "password";
    button.textContent = shown ? button.dataset.hide : button.dataset.show;
    field.focus();
  });
});
