// The landing page's form: posts the email to the signup API and says what
// happened in plain words. Works without a mouse; the result is announced
// by screen readers (role=status, aria-live=polite).
"use strict";
(function () {
  const form = document.getElementById("signup");
  if (!form) return;
  const input = document.getElementById("email");
  const button = form.querySelector("button");
  const result = document.getElementById("result");
  const code = form.dataset.code;

  function say(text, kind) {
    result.textContent = text;
    result.className = "result " + kind;
  }

  function message(status, problem, retryAfter) {
    const type = (problem && problem.type) || "";
    const is = (slug) => type.endsWith("/" + slug);
    switch (status) {
      case 201: return ["You're in! Check your inbox: we sent you an email with further instructions.", "ok"];
      case 200: return ["You were already registered with this invitation. Check your inbox for our email.", "ok"];
      case 409: return ["This email address has already used another invitation.", "bad"];
      case 410:
        if (is("invitation-disabled")) return ["This invitation is no longer accepted.", "bad"];
        if (is("invitation-expired")) return ["This invitation has expired.", "bad"];
        return ["Sorry, this invitation is full.", "bad"];
      case 404: return ["This invitation does not exist. Check the link you followed.", "bad"];
      case 400:
        if (is("email-domain-not-accepted")) return ["Please use a permanent email address, not a disposable one.", "bad"];
        return ["Please enter a valid email address, such as name@example.com.", "bad"];
      case 429: {
        const n = Math.max(1, parseInt(retryAfter, 10) || 1);
        return ["Too many attempts. Try again in " + n + (n === 1 ? " second." : " seconds."), "bad"];
      }
    }
    return ["Something went wrong on our side. Please try again in a moment.", "bad"];
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const email = input.value.trim();
    if (!email || !input.checkValidity()) {
      say("Please enter a valid email address, such as name@example.com.", "bad");
      input.focus();
      return;
    }
    // Disabling the button takes the focus away from it; a keyboard or
    // screen-reader user who pressed it gets the focus back afterwards.
    const hadFocus = document.activeElement === button;
    button.disabled = true;
    say("Sending…", "");
    try {
      const response = await fetch("/invitations/" + encodeURIComponent(code), {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify({ email: email }),
      });
      let problem = null;
      try { problem = await response.json(); } catch (e) { /* not JSON */ }
      const [text, kind] = message(response.status, problem, response.headers.get("Retry-After"));
      say(text, kind);
    } catch (e) {
      say("Something went wrong: check your connection and try again.", "bad");
    } finally {
      button.disabled = false;
      if (hadFocus) button.focus();
    }
  });
})();
