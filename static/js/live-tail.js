// The event log's live tail polls only while its checkbox is ticked:
// <input type="checkbox" data-poll-while-checked hx-trigger="every 2s" ...>. An htmx trigger
// filter ([this.checked]) would do the same through eval, which the Content-Security-Policy forbids.
document.addEventListener("htmx:confirm", (event) => {
  const element = event.detail.elt;
  if (element.matches("input[data-poll-while-checked]") && !element.checked) event.preventDefault();
});
