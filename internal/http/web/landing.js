// The landing page's form: posts the email to the signup API and says what
// happened in plain words. Works without a mouse; the result is announced
// by screen readers (role=status, aria-live=polite).
"use strict";
(function () {
  const form = document.getElementById("signup");
  if (!form) return;
  const input = document.getElementById("email");
  const button = form.querySelector("button");
  const resend = document.getElementById("resend");
  const result = document.getElementById("result");
  const code = form.dataset.code;
  // The email whose seat is held until it is confirmed (a 202), its
  // deadline, and when the page last saw the email go out: the server
  // sends it again at most once a minute, so the page does not claim it
  // did sooner.
  let held = null;
  const resendEvery = 60 * 1000;

  function say(text, kind) {
    result.textContent = text;
    result.className = "result " + kind;
  }

  function seconds(n) {
    return n + (n === 1 ? " second" : " seconds");
  }

  const pad = (n) => String(n).padStart(2, "0");

  // "before 14:30" in the visitor's time zone, with the date when it is
  // not today; "" for a missing or unreadable time. The minutes are cut,
  // not rounded, so the time said is never after the deadline.
  function before(iso) {
    const d = new Date(iso || "");
    if (isNaN(d.getTime())) return "";
    let text = "before " + pad(d.getHours()) + ":" + pad(d.getMinutes());
    const now = new Date();
    if (d.toDateString() !== now.toDateString()) {
      const opts = { weekday: "long", month: "long", day: "numeric" };
      if (d.getFullYear() !== now.getFullYear()) opts.year = "numeric";
      text += " on " + d.toLocaleDateString("en", opts);
    }
    return text;
  }

  function checkInbox(expiresAt) {
    const when = before(expiresAt);
    return when
      ? "Check your inbox and click the link " + when + " to keep your seat."
      : "Check your inbox and click the link in our email to keep your seat.";
  }

  function message(status, body, retryAfter) {
    const type = (body && body.type) || "";
    const is = (slug) => type.endsWith("/" + slug);
    switch (status) {
      case 201: return ["You're in! Check your inbox: we sent you an email with further instructions.", "ok"];
      case 202: return [checkInbox(body && body.expires_at), "ok"];
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
        return ["Too many attempts. Try again in " + seconds(n) + ".", "bad"];
      }
    }
    return ["Something went wrong on our side. Please try again in a moment.", "bad"];
  }

  async function signUp(email) {
    const response = await fetch("/invitations/" + encodeURIComponent(code), {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify({ email: email }),
    });
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    return { status: response.status, body: body, retryAfter: response.headers.get("Retry-After") };
  }

  // hold remembers a 202 and shows the resend button; anything but a
  // 202 or an error worth retrying ends the hold on this page.
  function hold(email, answer) {
    if (answer.status === 202) {
      held = { email: email, expiresAt: answer.body && answer.body.expires_at, sentAt: Date.now() };
      resend.hidden = false;
    } else if (answer.status !== 429 && answer.status < 500) {
      held = null;
      resend.hidden = true;
    }
  }

  // send runs one request with both buttons disabled. Disabling a button
  // takes the focus away from it; a keyboard or screen-reader user who
  // pressed it gets the focus back afterwards (on the form's button when
  // the resend button went away).
  async function send(pressed, pending, work) {
    const hadFocus = document.activeElement === pressed;
    button.disabled = resend.disabled = true;
    say(pending, "");
    try {
      await work();
    } catch (e) {
      say("Something went wrong: check your connection and try again.", "bad");
    } finally {
      button.disabled = resend.disabled = false;
      if (hadFocus) (resend.hidden ? button : pressed).focus();
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const email = input.value.trim();
    if (!email || !input.checkValidity()) {
      say("Please enter a valid email address, such as name@example.com.", "bad");
      input.focus();
      return;
    }
    send(button, "Sending…", async function () {
      const answer = await signUp(email);
      hold(email, answer);
      const [text, kind] = message(answer.status, answer.body, answer.retryAfter);
      say(text, kind);
    });
  });

  // The resend button posts the held email again: a repeat, which the
  // server answers 202 with the same deadline and by sending the email
  // again.
  resend.addEventListener("click", function () {
    if (!held) return;
    const wait = Math.ceil((held.sentAt + resendEvery - Date.now()) / 1000);
    if (wait > 0) {
      say(checkInbox(held.expiresAt) + " We sent the email less than a minute ago; you can ask for it again in " + seconds(wait) + ".", "ok");
      return;
    }
    const email = held.email;
    send(resend, "Sending the email again…", async function () {
      const answer = await signUp(email);
      hold(email, answer);
      if (answer.status === 202) {
        say("We sent the email again. " + checkInbox(held.expiresAt), "ok");
        return;
      }
      const [text, kind] = message(answer.status, answer.body, answer.retryAfter);
      say(text, kind);
    });
  });
})();
