// Upload progress for htmx forms: a form holding <progress data-upload-progress> shows how much
// of its request body has been sent. The form is swapped for a fresh one when the server answers.
document.addEventListener("htmx:xhr:progress", (event) => {
  const bar = event.target.querySelector("progress[data-upload-progress]");
  if (!bar || !event.detail.lengthComputable) return;
  bar.hidden = false;
  bar.max = event.detail.total;
  bar.value = event.detail.loaded;
});
