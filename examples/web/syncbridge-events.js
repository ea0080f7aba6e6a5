/*
 * A small page snippet for syncbridge's event intake (Segment's HTTP tracking API shape).
 *
 *   <script src="/syncbridge-events.js"
 *           data-endpoint="https://sync.example.com" data-write-key="YOUR_WRITE_KEY"></script>
 *
 * It sends a page view when the page loads, and a "Product Added" when an element with
 * data-add-to-cart is clicked (its data-sku, data-name, data-category and data-price go
 * along). syncbridge.identify(email, traits) after a login or a newsletter form names the
 * visitor: their earlier page views and cart events then join their profile. No cookies
 * beyond one first-party id in localStorage; no third party. Sites already on Segment's
 * analytics.js can instead point it at the intake (`apiHost`).
 *
 * Requests go as text/plain with the write key in the body (as analytics.js does), so the
 * browser sends them without a CORS preflight; sendBeacon when the page is being left.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var endpoint = (script && script.dataset.endpoint || "").replace(/\/$/, "");
  var writeKey = script && script.dataset.writeKey;
  if (!endpoint || !writeKey) {
    return;
  }

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) {
      return window.crypto.randomUUID();
    }
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
    });
  }

  var anonymousId;
  try {
    anonymousId = localStorage.getItem("syncbridge.anonymousId");
    if (!anonymousId) {
      anonymousId = uuid();
      localStorage.setItem("syncbridge.anonymousId", anonymousId);
    }
  } catch (e) {
    anonymousId = uuid(); // storage blocked: one id for this page
  }

  function context() {
    return {
      page: {
        url: location.href, path: location.pathname, title: document.title,
        referrer: document.referrer, search: location.search
      },
      userAgent: navigator.userAgent,
      library: { name: "syncbridge-events.js", version: "1" }
    };
  }

  function send(path, message) {
    message.messageId = uuid();
    message.anonymousId = anonymousId;
    message.timestamp = new Date().toISOString();
    message.sentAt = message.timestamp;
    message.context = context();
    message.writeKey = writeKey;
    var body = JSON.stringify(message);
    var url = endpoint + path;
    if (document.visibilityState === "hidden" && navigator.sendBeacon) {
      navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }));
      return Promise.resolve();
    }
    return fetch(url, {
      method: "POST", body: body, keepalive: true, headers: { "Content-Type": "text/plain" }
    });
  }

  var syncbridge = {
    page: function (properties) {
      return send("/v1/p", { type: "page", name: document.title, properties: properties || {} });
    },
    track: function (event, properties) {
      return send("/v1/t", { type: "track", event: event, properties: properties || {} });
    },
    identify: function (email, traits) {
      var all = Object.assign({}, traits || {}, { email: email });
      return send("/v1/i", { type: "identify", traits: all });
    }
  };
  window.syncbridge = syncbridge;

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-add-to-cart]");
    if (!button) {
      return;
    }
    var d = button.dataset;
    syncbridge.track("Product Added", {
      sku: d.sku, name: d.name, category: d.category,
      price: d.price ? Number(d.price) : undefined, quantity: 1
    });
  });

  syncbridge.page();
})();
