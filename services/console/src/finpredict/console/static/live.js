// Live rollout and experiment pages: swap the server-rendered fragment in as the gateway reports changes
// (server-sent events from /rollouts/<id>/events or /experiments/<id>/events; the stream ends when the rollout does).
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.events) {
    return;
  }
  const source = new EventSource(live.dataset.events);
  source.addEventListener("open", function () {
    live.dataset.liveStatus = "open";
  });
  function swap(event) {
    const update = JSON.parse(event.data);
    live.innerHTML = update.html; // rendered and escaped by the server's templates
    live.dataset.updates = String(Number(live.dataset.updates || "0") + 1);
  }
  source.addEventListener("rollout", swap);
  source.addEventListener("experiment", swap);
  source.addEventListener("problem", function (event) {
    live.dataset.problem = JSON.parse(event.data).message;
  });
  source.addEventListener("end", function () {
    live.dataset.liveStatus = "final";
    source.close();
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
