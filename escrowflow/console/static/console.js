// The console's only script: live countdowns to deadlines, on the engine's clock.
// The server gives its time at render (body[data-now]); the countdown runs from it.
(function () {
  "use strict";
  var base = Date.parse(document.body.getAttribute("data-now"));
  var loaded = Date.now();
  function left(ms) {
    if (ms <= 0) { return "due now"; }
    var s = Math.floor(ms / 1000);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    var m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d > 0) { return "in " + d + "d " + h + "h " + m + "m"; }
    if (h > 0) { return "in " + h + "h " + m + "m " + r + "s"; }
    return "in " + m + "m " + r + "s";
  }
  function tick() {
    var now = base + (Date.now() - loaded);
    var all = document.querySelectorAll("time.countdown[data-due]");
    for (var i = 0; i < all.length; i++) {
      all[i].textContent = left(Date.parse(all[i].getAttribute("data-due")) - now);
    }
  }
  tick();
  setInterval(tick, 1000);
}());
