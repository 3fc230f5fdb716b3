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
// A resolution's split (RF3): as amounts are typed, whether they add up to the refund.
(function () {
  "use strict";
  function minor(text, exponent) {
    var m = /^\s*([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.([0-9]*))?\s*$/.exec(text || "0");
    if (!m || (m[2] || "").length > exponent) { return null; }
    var part = (m[2] || "") + "000000".slice(0, exponent - (m[2] || "").length);
    return parseInt(m[1].replace(/,/g, ""), 10) * Math.pow(10, exponent) + (part ? parseInt(part, 10) : 0);
  }
  function shown(amount, exponent, currency) {
    var whole = Math.floor(amount / Math.pow(10, exponent)).toLocaleString("en-US");
    var part = exponent ? "." + String(amount % Math.pow(10, exponent)).padStart(exponent, "0") : "";
    return whole + part + " " + currency;
  }
  var forms = document.querySelectorAll("form.resolve[data-total]");
  for (var i = 0; i < forms.length; i++) {
    (function (form) {
      var total = parseInt(form.getAttribute("data-total"), 10);
      var exponent = parseInt(form.getAttribute("data-exponent"), 10);
      var currency = form.getAttribute("data-currency");
      var out = form.querySelector("output.adds-up");
      function check() {
        var a = minor(form.elements.to_client.value, exponent);
        var b = minor(form.elements.to_freelancer.value, exponent);
        if (a === null || b === null) { out.textContent = "not an amount of " + currency; return; }
        var left = total - a - b;
        out.textContent = left === 0 ? "adds up to " + shown(total, exponent, currency)
          : (left > 0 ? shown(left, exponent, currency) + " left to assign"
            : shown(-left, exponent, currency) + " too much");
      }
      form.addEventListener("input", check);
      check();
    }(forms[i]));
  }
}());
