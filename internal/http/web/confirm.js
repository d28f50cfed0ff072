// The confirm page's button: posts the token from the link to the confirm
// API and says what happened in plain words. Opening the page changes
// nothing (mail scanners open links); only the button does. The result is
// announced by screen readers (role=status, aria-live=polite).
"use strict";
(function () {
  const form = document.getElementById("confirm");
  if (!form) return;
  const button = form.querySelector("button");
  const result = document.getElementById("result");
  const code = form.dataset.code;
  const token = form.elements.token.value; // the link's, as the server read it

  function say(text, kind) {
    result.textContent = text;
    result.className = "result " + kind;
  }

  function seconds(n) {
    return n + (n === 1 ? " second" : " seconds");
  }

  function expired() {
    const link = document.createElement("a");
    link.href = "/invitations/" + encodeURIComponent(code);
    link.textContent = "the invitation page";
    say("This link has expired. Sign up again on ", "bad");
    result.append(link, ".");
  }

  function answer(status, problem, retryAfter) {
    switch (status) {
      case 201: return say("You are registered.", "ok");
      case 200: return say("You were already registered.", "ok");
      case 410: return expired();
      case 404: return say("This link is not valid.", "bad");
      case 429: {
        const n = Math.max(1, parseInt(retryAfter, 10) || 1);
        return say("Too many attempts. Try again in " + seconds(n) + ".", "bad");
      }
    }
    const detail = problem && typeof problem.detail === "string" && problem.detail
      ? problem.detail : "Something went wrong on our side.";
    const n = parseInt(retryAfter, 10);
    say(detail + " You can press the button again" + (n > 0 ? " in " + seconds(n) + "." : "."), "bad");
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    // Disabling the button takes the focus away from it; a keyboard or
    // screen-reader user who pressed it gets the focus back afterwards.
    const hadFocus = document.activeElement === button;
    button.disabled = true;
    say("Confirming…", "");
    try {
      const response = await fetch("/invitations/" + encodeURIComponent(code) + "/confirm", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify({ token: token }),
      });
      let problem = null;
      try { problem = await response.json(); } catch (e) { /* not JSON */ }
      answer(response.status, problem, response.headers.get("Retry-After"));
    } catch (e) {
      say("Something went wrong: check your connection and try again.", "bad");
    } finally {
      button.disabled = false;
      if (hadFocus) button.focus();
    }
  });
})();
