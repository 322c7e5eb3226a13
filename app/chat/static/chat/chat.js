/* Parley chat client: plain JavaScript, no build step, works under a strict CSP.
 *
 * Speaks protocol v1 (app/PROTOCOL.md). Reply text streams in as plain text (textContent,
 * never parsed as HTML); when a reply ends, the server's sanitized HTML rendering of the
 * Markdown replaces it. Every reply frame carries a sequence number: frames already seen are
 * ignored, a gap triggers a `resume`, and a reconnect announces what this page already has.
 * Each message is sent with a `client_id` and kept until its `ack`: if the socket goes first,
 * the same frame is sent again on the next one, and the server stores it at most once.
 */
(function () {
  "use strict";

  var PROTOCOL = 1;
  // What was typed in a chat that turned out to be gone, for the new chat that replaces it.
  var DRAFT_KEY = "parley.draft";
  var ACK_TIMEOUT_MS = 10000;  // an open socket that has not answered a send: send it again
  var root = document.getElementById("chat");
  if (!root) { return; }

  var conversationId = root.dataset.conversation;
  var list = document.getElementById("messages");
  var form = document.getElementById("composer");
  var prompt = document.getElementById("prompt");
  var modelSelect = document.getElementById("model");
  var sendButton = document.getElementById("send");
  var stopButton = document.getElementById("stop");
  var regenerateButton = document.getElementById("regenerate");
  var connection = document.getElementById("connection");
  var errorLine = document.getElementById("error-line");
  var demoBanner = document.getElementById("demo-banner");

  var socket = null;
  var stopped = false;     // the chat is gone or the session is: the page stays as it is
  var retries = 0;
  var nextId = 1;
  var replies = {};        // reply id -> {el, seq, text, done}
  var activeReply = null;  // the reply id being written, if any
  // Our message, drawn before the server accepted it: {id, clientId, text, model, el, timer}.
  // It stays here until its ack (or a refusal), across reconnects.
  var pendingSend = null;
  // The last message the server refused ({text, clientId}): sent again unchanged, it keeps its
  // client_id, in case the refusal (`unavailable`) came after all from a server that stored it.
  var refused = null;

  function setConnection(state, label) {
    connection.dataset.state = state;
    connection.textContent = label;
  }

  function showError(message, kind) {
    errorLine.textContent = message;
    errorLine.dataset.kind = kind || "";
    errorLine.hidden = false;
  }

  function clearError(kind) {
    if (kind && errorLine.dataset.kind !== kind) { return; }
    errorLine.hidden = true;
    errorLine.textContent = "";
  }

  function updateControls() {
    var busy = activeReply !== null || pendingSend !== null;
    stopButton.hidden = activeReply === null;
    sendButton.disabled = busy;
    var last = list.querySelector(".message.assistant:last-of-type");
    regenerateButton.hidden = busy || !last;
    demoBanner.hidden = !(modelSelect && modelSelect.value === "demo");
  }

  function scrollToEnd() {
    list.scrollTop = list.scrollHeight;
    window.scrollTo(0, document.body.scrollHeight);
  }

  function addUserMessage(messageId, text) {
    if (messageId && list.querySelector('[data-message-id="' + messageId + '"]')) { return null; }
    var li = document.createElement("li");
    li.className = "message user";
    if (messageId) { li.dataset.messageId = messageId; }
    var div = document.createElement("div");
    div.className = "text";
    div.textContent = text;
    li.appendChild(div);
    list.appendChild(li);
    scrollToEnd();
    return li;
  }

  function replyElement(replyId, model) {
    var el = list.querySelector('[data-reply-id="' + replyId + '"]');
    if (el) { return el; }
    el = document.createElement("li");
    el.className = "message assistant generating";
    el.dataset.replyId = replyId;
    el.dataset.status = "generating";
    var meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = model || "";
    if (model === "demo") {
      var badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "demo";
      meta.appendChild(document.createTextNode(" "));
      meta.appendChild(badge);
    }
    var text = document.createElement("div");
    text.className = "text markdown";
    var note = document.createElement("div");
    note.className = "note";
    el.appendChild(meta);
    el.appendChild(text);
    el.appendChild(note);
    list.appendChild(el);
    return el;
  }

  function track(replyId, model) {
    if (!replies[replyId]) {
      replies[replyId] = { el: replyElement(replyId, model), seq: 0, text: "", done: false };
    }
    return replies[replyId];
  }

  // A new conversation is titled after its first message, as the server titles it.
  function nameConversation(text) {
    var title = document.getElementById("conversation-title");
    if (!text || title.dataset.named === "yes" || list.querySelectorAll(".message.user").length > 1) {
      return;
    }
    var name = text.split(/\s+/).join(" ").trim().slice(0, 60);
    title.textContent = name;
    title.dataset.named = "yes";
    var link = document.getElementById("current-conversation");
    if (link) { link.textContent = name; }
    document.title = name + " · Parley";
  }

  function startReply(frame) {
    if (frame.replaces) {
      var old = list.querySelector('[data-reply-id="' + frame.replaces + '"]');
      if (old) { old.remove(); }
      delete replies[frame.replaces];
    }
    var reply = track(frame.reply_id, frame.model);
    if (reply.done) { return; }  // a repeated ack of a reply this page already finished
    if (reply.seq === 0) { reply.el.querySelector(".text").textContent = ""; }
    activeReply = frame.reply_id;
    updateControls();
    scrollToEnd();
  }

  function randomUUID() {
    if (window.crypto.randomUUID) { return window.crypto.randomUUID(); }
    // Plain-HTTP pages (not a secure context) have getRandomValues only: a version 4 UUID.
    var bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); });
    return [hex.slice(0, 4), hex.slice(4, 6), hex.slice(6, 8), hex.slice(8, 10), hex.slice(10)]
      .map(function (part) { return part.join(""); }).join("-");
  }

  // Send (again) the message waiting for its ack: always the same client_id, so however many
  // copies reach the server, it stores one and answers each with the same ack.
  function transmitPending() {
    if (!pendingSend) { return; }
    window.clearTimeout(pendingSend.timer);
    if (!socket || socket.readyState !== WebSocket.OPEN) { return; }  // on the next open
    pendingSend.id = send({
      type: "send", text: pendingSend.text, model: pendingSend.model, client_id: pendingSend.clientId
    });
    pendingSend.timer = window.setTimeout(transmitPending, ACK_TIMEOUT_MS);
  }

  function isPending(frame) {
    return pendingSend !== null && (
      (frame.client_id && frame.client_id === pendingSend.clientId) ||
      (frame.id && frame.id === pendingSend.id));
  }

  function settlePending(messageId) {
    window.clearTimeout(pendingSend.timer);
    pendingSend.el.dataset.messageId = messageId;
    pendingSend = null;
    updateControls();
  }

  function finishReply(reply, frame, status) {
    reply.done = true;
    reply.el.className = "message assistant " + status;
    reply.el.dataset.status = status;
    // The server rendered this HTML from Markdown and sanitized it with an allow-list.
    reply.el.querySelector(".text").innerHTML = frame.html || "";
    var note = reply.el.querySelector(".note");
    note.textContent = status === "cancelled" ? "Stopped." : (status === "error" ? frame.message : "");
    if (activeReply === frame.reply_id) { activeReply = null; }
    updateControls();
    scrollToEnd();
  }

  function onReplyFrame(frame) {
    var reply = track(frame.reply_id, frame.model);
    if (frame.seq <= reply.seq) { return; }            // already have it
    // A gap before a delta: ask for what is missing. The end of a reply (done or error)
    // carries its whole text, so it ends the reply even past a gap: waiting for frames that
    // were never stored would leave the reply "generating" for good.
    if (frame.seq > reply.seq + 1 && frame.type === "delta") {
      send({ type: "resume", reply_id: frame.reply_id, after_seq: reply.seq });
      return;
    }
    reply.seq = frame.seq;
    if (frame.type === "delta") {
      if (frame.reset) { reply.text = ""; }
      reply.text += frame.text;
      reply.el.querySelector(".text").textContent = reply.text;
      if (!reply.done) { activeReply = frame.reply_id; updateControls(); }
      scrollToEnd();
    } else if (frame.type === "done") {
      finishReply(reply, frame, frame.status);
    } else if (frame.type === "error") {
      finishReply(reply, frame, "error");
    }
  }

  function onFrame(frame) {
    if (frame.type === "delta" || ((frame.type === "done" || frame.type === "error") && frame.seq)) {
      onReplyFrame(frame);
    } else if (frame.type === "ack" && frame.message_id) {
      // Our own message was drawn before the server knew its id; give it the id now so the
      // `turn` frame that follows does not draw it twice.
      if (isPending(frame)) { settlePending(frame.message_id); }
      startReply(frame);
    } else if (frame.type === "turn") {
      if (isPending(frame)) {
        // Our re-sent message, stored from the first copy by a server that could not tell us.
        settlePending(frame.message_id);
      } else if (frame.text && !frame.replaces) {
        addUserMessage(frame.message_id, frame.text);
        nameConversation(frame.text);
      }
      startReply(frame);
    } else if (frame.type === "error") {
      if (pendingSend && frame.id && pendingSend.id === frame.id) {
        // Refused (busy, rate limited, ...): take the message back into the composer.
        window.clearTimeout(pendingSend.timer);
        pendingSend.el.remove();
        prompt.value = pendingSend.text;
        refused = { text: pendingSend.text, clientId: pendingSend.clientId };
        pendingSend = null;
        updateControls();
      }
      showError(frame.message);
      // Perhaps the chat was deleted under this open socket (or only a reply was missing: then
      // the page finds the chat still there and nothing changes).
      if (frame.code === "not_found") {
        conversationState().then(function (state) {
          if (state === "gone") { conversationGone(); }
        });
      }
    }
  }

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected; reconnecting…", "connection");
      return null;
    }
    frame.v = PROTOCOL;
    frame.id = "c" + (nextId++);
    socket.send(JSON.stringify(frame));
    return frame.id;
  }

  function resumeQuery() {
    var parts = [];
    Object.keys(replies).forEach(function (id) {
      if (!replies[id].done) { parts.push(id + ":" + replies[id].seq); }
    });
    return parts.length ? "?resume=" + parts.join(",") : "";
  }

  // A browser may refuse session storage (site data blocked): the draft is then not carried
  // over, and the page works on.
  function saveDraft(text) {
    try { window.sessionStorage.setItem(DRAFT_KEY, text); } catch (e) { /* not carried */ }
  }

  function takeDraft() {
    try {
      var text = window.sessionStorage.getItem(DRAFT_KEY);
      window.sessionStorage.removeItem(DRAFT_KEY);
      return text;
    } catch (e) { return null; }
  }

  // No more reconnecting, nor sending: the page has nothing left to talk to.
  function stop() {
    stopped = true;
    if (socket) { socket.close(); }
  }

  // Why a socket was refused: the browser reports every refused handshake as code 1006, so
  // ask the page's own address. 404: this chat is gone (deleted in another tab, or an empty
  // chat the nightly purge removed); a redirect: to the login page. Anything else, a network
  // error included, is an outage the reconnect loop rides out.
  function conversationState() {
    return window.fetch(window.location.pathname, {
      method: "HEAD", credentials: "same-origin", redirect: "manual", cache: "no-store"
    }).then(function (response) {
      if (response.type === "opaqueredirect") { return "signed-out"; }
      return response.status === 404 ? "gone" : "here";
    }, function () { return "here"; });
  }

  // This chat no longer exists. One nobody wrote in yet is replaced by a new one, with what
  // was typed carried over (the purge drops chats left empty for a day, possibly under a page
  // left open); one with messages stays on screen, read-only, and says why.
  function conversationGone() {
    stop();
    var draft = pendingSend ? pendingSend.text : prompt.value;
    if (!list.querySelector(".message")) {
      if (draft) { saveDraft(draft); }
      setConnection("closed", "Opening a new chat…");
      document.getElementById("new-chat").form.submit();
      return;
    }
    if (pendingSend) {
      window.clearTimeout(pendingSend.timer);
      pendingSend.el.remove();
      pendingSend = null;
    }
    prompt.value = draft;
    prompt.readOnly = true;
    sendButton.disabled = regenerateButton.disabled = true;
    setConnection("closed", "Deleted");
    showError("This chat no longer exists: it was deleted, perhaps in another tab.", "gone");
  }

  function signedOut() {
    stop();
    setConnection("closed", "Signed out");
    showError("You are signed out; sign in again to go on.", "signed-out");
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + window.location.host + "/ws/chat/" + conversationId + "/" + resumeQuery();
    var opened = false;
    setConnection("connecting", retries ? "Reconnecting…" : "Connecting…");
    socket = new WebSocket(url);
    socket.addEventListener("open", function () {
      opened = true;
      retries = 0;
      setConnection("open", "Connected");
      clearError("connection");
      // A message whose ack was lost with the last socket, or typed while disconnected.
      transmitPending();
    });
    socket.addEventListener("message", function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      onFrame(frame);
    });
    socket.addEventListener("close", function () {
      socket = null;
      if (stopped) { return; }
      // Exponential backoff with jitter; a deploy closes sockets with 1012 and we come back.
      retries += 1;
      var delay = Math.min(10000, 250 * Math.pow(2, retries)) * (0.5 + Math.random() / 2);
      setConnection("reconnecting", "Reconnecting…");
      if (opened) {
        window.setTimeout(connect, delay);
        return;
      }
      conversationState().then(function (state) {
        if (state === "gone") { conversationGone(); } else if (state === "signed-out") {
          signedOut();
        } else { window.setTimeout(connect, delay); }
      });
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = prompt.value;
    if (stopped || !text.trim() || activeReply !== null || pendingSend !== null) { return; }
    clearError();
    var clientId = refused && refused.text === text ? refused.clientId : randomUUID();
    refused = null;
    pendingSend = {
      id: null, clientId: clientId, text: text, timer: null,
      model: modelSelect ? modelSelect.value : undefined, el: addUserMessage(null, text)
    };
    prompt.value = "";
    updateControls();
    if (socket && socket.readyState === WebSocket.OPEN) {
      transmitPending();
    } else {
      showError("Not connected; the message goes out when the connection is back.", "connection");
    }
  });

  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  stopButton.addEventListener("click", function () {
    if (activeReply !== null) { send({ type: "cancel", reply_id: Number(activeReply) }); }
  });

  regenerateButton.addEventListener("click", function () {
    clearError();
    send({ type: "regenerate", model: modelSelect ? modelSelect.value : undefined });
  });

  if (modelSelect) { modelSelect.addEventListener("change", updateControls); }

  var pending = root.dataset.pendingReply ? Number(root.dataset.pendingReply) : null;
  if (pending) {
    var pendingEl = list.querySelector('[data-reply-id="' + pending + '"]');
    replies[pending] = { el: pendingEl, seq: 0, text: "", done: false };
    activeReply = pending;
  }
  var draft = takeDraft();
  if (draft !== null && !prompt.value) { prompt.value = draft; }
  updateControls();
  connect();
})();
