/* Trialpath in-app guide: the user's onboarding checklist and in-app messages, no framework.
 *
 *   <script src="https://onboarding.example.com/widget.js" defer></script>
 *   <trialpath-guide api="https://onboarding.example.com" token="…" token-url="/trialpath/token">
 *   </trialpath-guide>
 *
 * `token`: a widget token the product's backend minted (POST /v1/users/{id}/widget-token with
 * its API key, which never reaches the browser). `token-url` (optional): a URL of the product,
 * called with POST (same-origin cookies) when the token is missing or has expired; it answers
 * `{"token": "…"}`. Methods: `reload()`. Events: `trialpath-read` ({id, message}).
 * Style hooks: the `--trialpath-accent` colour and the `part`s named below.
 */
(() => {
  "use strict";

  const STYLE = `
    :host { display: block; font: 14px/1.4 system-ui, sans-serif; color: #1f2937;
            --accent: var(--trialpath-accent, #4f46e5); }
    section { border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 16px; }
    h2 { font-size: 15px; margin: 12px 0 8px; }
    h3 { font-size: 14px; margin: 0 0 4px; }
    ol, ul { list-style: none; margin: 0; padding: 0; }
    .step { display: flex; gap: 8px; align-items: baseline; padding: 4px 0; }
    .step .mark { width: 1.2em; text-align: center; color: #9ca3af; }
    .step[data-done="true"] .mark { color: #059669; }
    .step[data-done="true"] a { text-decoration: line-through; color: #6b7280; }
    .count { color: #6b7280; font-size: 12px; }
    progress { width: 100%; accent-color: var(--accent); }
    .card { border-top: 1px solid #f3f4f6; padding: 8px 0; }
    .card[data-unread="true"] h3::before { content: "● "; color: var(--accent); }
    .card p { margin: 0 0 8px; white-space: pre-line; }
    .actions { display: flex; gap: 8px; align-items: center; }
    .cta { background: var(--accent); color: #fff; border-radius: 6px; padding: 6px 12px;
           text-decoration: none; }
    button { font: inherit; background: none; border: 1px solid #d1d5db; border-radius: 6px;
             padding: 5px 10px; cursor: pointer; }
    a:focus-visible, button:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  `;

  /** An element with attributes (`on*` functions become listeners) and children. */
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (typeof value === "function") element.addEventListener(name.slice(2), value);
      else if (value !== null && value !== undefined && value !== false)
        element.setAttribute(name, value === true ? "" : String(value));
    }
    // Text is always set as text, never parsed as HTML: messages cannot inject markup.
    element.append(...children.filter((c) => c !== null && c !== undefined));
    return element;
  }

  class TrialpathGuide extends HTMLElement {
    static get observedAttributes() {
      return ["api", "token"];
    }

    constructor() {
      super();
      this.attachShadow({ mode: "open" });
      this.token = null;
      this.announcement = ""; // the status line's last news, kept across renders
    }

    connectedCallback() {
      this.token = this.token || this.getAttribute("token");
      this.reload();
    }

    attributeChangedCallback(name, previous, value) {
      if (name === "token") this.token = value;
      if (name === "api" && previous !== null && this.isConnected) this.reload();
    }

    get api() {
      return (this.getAttribute("api") || "").replace(/\/+$/, "");
    }

    /** Fetches the checklist and the inbox again and shows them. */
    async reload() {
      try {
        const [checklist, inbox] = await Promise.all([
          this.call("/v1/widget/checklist"),
          this.call("/v1/widget/inbox"),
        ]);
        this.render(checklist, inbox);
      } catch (error) {
        this.render(null, null, "Your onboarding guide could not be loaded.");
        console.warn("trialpath-guide:", error.message);
      }
    }

    /** A new token from token-url; calls made at the same time share one request. */
    renewToken() {
      this.renewing = this.renewing || this.fetchToken().finally(() => (this.renewing = null));
      return this.renewing;
    }

    async fetchToken() {
      const url = this.getAttribute("token-url");
      if (!url) throw new Error("the widget token is missing or expired, and no token-url is set");
      const response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`token-url answered ${response.status}`);
      this.token = (await response.json()).token;
    }

    /** A widget route of the API; renews the token once (token-url) when it is refused. */
    async call(path, options = {}, renewed = false) {
      if (!this.token) {
        await this.renewToken();
        renewed = true;
      }
      const response = await fetch(this.api + path, {
        ...options,
        headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json" },
      });
      if (response.status === 401 && !renewed && this.getAttribute("token-url")) {
        await this.renewToken();
        return this.call(path, options, true);
      }
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.detail || `${path} answered ${response.status}`);
      return body;
    }

    announce(text) {
      this.announcement = text;
      const status = this.shadowRoot.querySelector("[role=status]");
      if (status) status.textContent = text;
    }

    async markRead(item) {
      const read = await this.call(`/v1/widget/inbox/${encodeURIComponent(item.id)}/read`, {
        method: "POST",
      });
      this.dispatchEvent(
        new CustomEvent("trialpath-read", {
          detail: { id: read.id, message: read.message },
          bubbles: true,
          composed: true,
        }),
      );
      return read;
    }

    render(checklist, inbox, problem = "") {
      const root = this.shadowRoot;
      root.replaceChildren(h("style", {}, STYLE));
      const section = h("section", { part: "guide", "aria-label": "Getting started" });
      root.append(section);
      const status = h(
        "p",
        { role: "status", class: problem ? "" : "sr", "data-testid": "status" },
        problem || this.announcement,
      );
      if (checklist) section.append(...this.checklistPart(checklist));
      if (inbox) section.append(...this.inboxPart(inbox));
      section.append(status);
    }

    checklistPart(checklist) {
      const done = checklist.steps.filter((step) => step.done).length;
      const summary = `${done} of ${checklist.steps.length} steps done`;
      return [
        h("h2", { id: "checklist-title" }, "Getting started"),
        h("progress", {
          part: "progress",
          max: 100,
          value: checklist.progress,
          "aria-labelledby": "checklist-title",
          "aria-valuetext": `${checklist.progress}%, ${summary}`,
          "data-testid": "progress",
        }),
        h("p", { class: "count", "data-testid": "progress-text" }, summary),
        h(
          "ol",
          { part: "checklist", "aria-labelledby": "checklist-title" },
          ...checklist.steps.map((step) =>
            h(
              "li",
              { class: "step", "data-done": String(step.done), "data-event": step.event, "data-testid": "step" },
              h("span", { class: "mark", "aria-hidden": "true" }, step.done ? "✓" : "○"),
              h("a", { href: step.link }, step.label),
              h("span", { class: "sr" }, step.done ? " (done)" : " (to do)"),
              step.required > 1
                ? h("span", { class: "count" }, `${Math.min(step.done_count, step.required)}/${step.required}`)
                : null,
            ),
          ),
        ),
      ];
    }

    inboxPart(inbox) {
      const title = inbox.unread ? `Messages (${inbox.unread} unread)` : "Messages";
      const cards = inbox.items.map((item) => this.card(item));
      return [
        h("h2", { id: "inbox-title", "data-testid": "inbox-title" }, title),
        cards.length
          ? h("ul", { part: "inbox", "aria-labelledby": "inbox-title" }, ...cards)
          : h("p", { class: "count" }, "No messages yet."),
      ];
    }

    card(item) {
      const heading = `card-${item.id}`;
      const read = async (reload) => {
        await this.markRead(item);
        this.announce(`“${item.title}” marked as read.`);
        if (reload) await this.reload();
      };
      const cta = item.cta_label && item.cta_url
        ? h("a", {
            class: "cta",
            part: "cta",
            href: item.cta_url,
            onclick: async (event) => {
              if (!item.unread) return;
              if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) {
                read(true).catch(() => {}); // opens in another tab: this page stays
                return;
              }
              event.preventDefault();
              await read(false).catch(() => {}); // read first, then follow the button
              window.location.assign(item.cta_url);
            },
          }, item.cta_label)
        : null;
      const mark = item.unread
        ? h("button", {
            type: "button",
            "aria-describedby": heading,
            onclick: () => read(true).catch((error) => {
              this.announce("Could not mark the message as read.");
              console.warn("trialpath-guide:", error.message);
            }),
          }, "Mark as read")
        : null;
      return h(
        "li",
        { class: "card", part: "card", "data-unread": String(item.unread), "data-id": item.id, "data-testid": "card" },
        h("h3", { id: heading }, item.title, item.unread ? h("span", { class: "sr" }, " (unread)") : null),
        h("p", {}, item.text),
        h("div", { class: "actions" }, cta, mark),
      );
    }
  }

  if (!customElements.get("trialpath-guide")) customElements.define("trialpath-guide", TrialpathGuide);
})();
