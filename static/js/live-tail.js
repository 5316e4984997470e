// The event log's live tail polls only while its checkbox is ticked:
// <input type="checkbox" data-poll-while-checked hx-trigger="every 2s" ...>, and so does an
// element that names that checkbox: <div data-poll-while="live-tail" hx-trigger="every 30s" ...>.
// An htmx trigger filter ([this.checked]) would do the same through eval, which the
// Content-Security-Policy forbids.
document.addEventListener("htmx:confirm", (event) => {
  const element = event.detail.elt;
  const box = element.matches("input[data-poll-while-checked]")
    ? element
    : element.dataset.pollWhile && document.getElementById(element.dataset.pollWhile);
  if (box && !box.checked) event.preventDefault();
});
