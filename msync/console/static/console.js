/*
 * The msync web console: a single-page app over the admin JSON API that
 * docs/admin-api.md specifies.  Plain JavaScript, no framework and no
 * build step; the daemon serves this file as it is.
 *
 * The file reads top to bottom:
 *   1. small DOM and formatting helpers;
 *   2. the API client (session cookie, CSRF header, error messages);
 *   3. the shell: session, instance selector, router, notices, confirm;
 *   4. the pages, one function each, rendering into <main>.
 *
 * Anything that came from the server goes into the page as text
 * (textContent), never as HTML, so no stored value can inject markup.
 */
"use strict";

(function () {
  /* How often the user and device lookup refreshes while shown. */
  const REFRESH_MS = 3000;

  /* The largest payload the daemon takes (REQUIREMENTS section 2). */
  const MAX_PAYLOAD = 24 * 1024;

  const DAY_MS = 24 * 3600 * 1000;

  const state = {
    user: null,
    csrf: null,
    instances: [],
    instance: null,
    loading: null,
    view: null,
    wanted: null,
    notice: null,
  };

  /* ------------------------------------------------------------------ */
  /* 1. DOM and formatting helpers                                       */
  /* ------------------------------------------------------------------ */

  /*
   * Make an element.  Props: "class", "text", "testid" (data-testid),
   * "on" (event name to listener), DOM properties such as "disabled",
   * "checked", "value" or "hidden", and any other key as an attribute.
   * Children are nodes, strings (as text) or null (skipped).
   */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) {
        continue;
      }
      if (key === "class") {
        node.className = value;
      } else if (key === "text") {
        node.textContent = value;
      } else if (key === "testid") {
        node.dataset.testid = value;
      } else if (key === "on") {
        for (const [name, listener] of Object.entries(value)) {
          node.addEventListener(name, listener);
        }
      } else if (key in PROPERTIES) {
        node[key] = value;
      } else {
        node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    append(node, children);
    return node;
  }

  const PROPERTIES = {
    checked: 1,
    disabled: 1,
    hidden: 1,
    readOnly: 1,
    selected: 1,
    value: 1,
  };

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) {
        continue;
      }
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) {
      node.firstChild.remove();
    }
    return node;
  }

  function main() {
    return document.getElementById("main");
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  /* A time in milliseconds since the epoch, in the browser's zone. */
  function formatTime(ms) {
    if (!ms) {
      return "\u2014";
    }
    const d = new Date(ms);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  /* A day number (days since the epoch) as a UTC calendar date. */
  function formatDay(day) {
    return new Date(day * DAY_MS).toISOString().slice(0, 10);
  }

  function capitalized(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function yesNo(value) {
    return value ? "Yes" : "No";
  }

  function badge(text, kind, testid) {
    return el("span", { class: `badge badge-${kind}`, text, testid });
  }

  function stateBadge(value, testid) {
    return badge(value, value, testid);
  }

  function onlineBadge(online, testid) {
    return online
      ? badge("online", "online", testid)
      : badge("offline", "offline", testid);
  }

  function encode(part) {
    return encodeURIComponent(part);
  }

  function instancePath(...parts) {
    return (
      `/api/instances/${encode(state.instance)}` +
      parts.map((p) => `/${encode(p)}`).join("")
    );
  }

  function bytesOf(text) {
    return new TextEncoder().encode(text).length;
  }

  /* A fresh third_msg_id, so that two sends by hand never collide. */
  function newMessageId() {
    const random = new Uint32Array(2);
    crypto.getRandomValues(random);
    return (
      "console-" +
      Date.now().toString(36) +
      "-" +
      Array.from(random, (n) => n.toString(36)).join("")
    );
  }

  /* ------------------------------------------------------------------ */
  /* 2. The API client                                                   */
  /* ------------------------------------------------------------------ */

  /* What to say when an error answer carries no message of its own. */
  const FALLBACK_MESSAGES = {
    invalid: "A value is not valid.",
    bad_json: "The console sent a request the daemon could not read.",
    unauthenticated: "You are not logged in.",
    csrf: "The request was refused (CSRF check). Reload the page.",
    not_found: "Not found.",
    exists: "It exists already.",
    too_large: "The request is too large.",
    not_json: "The console sent a request the daemon could not read.",
    locked: "Too many failed logins. Wait a minute and try again.",
    network: "Cannot reach the msync daemon. Is it running?",
  };

  class ApiError extends Error {
    constructor(status, body) {
      const data = body && typeof body === "object" ? body : {};
      const code = typeof data.error === "string" ? data.error : "";
      const message =
        (typeof data.message === "string" && data.message) ||
        FALLBACK_MESSAGES[code] ||
        (code ? code : `The daemon answered HTTP ${status}.`);
      super(message);
      this.status = status;
      this.code = code;
      this.field = typeof data.field === "string" ? data.field : null;
    }
  }

  /*
   * Call the API.  Changes carry the session's CSRF token.  Resolves to
   * the decoded JSON body; rejects with an ApiError.  A 401 on any call
   * but the session check and the login itself means the session ended:
   * the console then goes back to the login page.
   */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = {
      method,
      headers,
      credentials: "same-origin",
      cache: "no-store",
    };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET" && state.csrf) {
      headers["X-CSRF-Token"] = state.csrf;
    }

    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { error: "network" });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      const quiet = path === "/api/session" || path === "/api/login";
      if (response.status === 401 && !quiet) {
        sessionEnded();
      }
      throw error;
    }
    return data;
  }

  /* ------------------------------------------------------------------ */
  /* 3. The shell                                                        */
  /* ------------------------------------------------------------------ */

  /*
   * Take a session: its CSRF token, then the instances.  Until those
   * are in, routes wait (see route), so no page is drawn for no
   * instance; the header shows once they are in.
   */
  async function signedIn(session) {
    state.user = session.user;
    state.csrf = session.csrf;
    const loading = loadInstances();
    state.loading = loading;
    try {
      await loading;
    } finally {
      state.loading = null;
      document.getElementById("whoami").textContent = session.user;
      document.getElementById("topbar").hidden = false;
    }
  }

  function signedOut() {
    state.user = null;
    state.csrf = null;
    state.instances = [];
    document.getElementById("topbar").hidden = true;
  }

  function sessionEnded() {
    if (!state.user) {
      return;
    }
    signedOut();
    if (state.view) {
      state.view.leave();
    }
    state.wanted = currentPath();
    go("#/login", "Your session has ended. Log in again.");
  }

  async function logout() {
    try {
      await api("POST", "/api/logout");
    } catch (e) {
      // Logged out either way: the cookie is gone or was never good.
    }
    signedOut();
    state.wanted = null;
    go("#/login", "You have logged out.");
  }

  /* Fetch the instances and fill the header's selector. */
  async function loadInstances() {
    state.instances = await api("GET", "/api/instances");
    const ids = state.instances.map((i) => i.instance_id);
    const saved = localStorage.getItem("msync.instance");
    if (!ids.includes(state.instance)) {
      state.instance = ids.includes(saved) ? saved : ids[0] || null;
    }
    const select = document.getElementById("instance-select");
    clear(select);
    for (const id of ids) {
      select.append(
        el("option", { value: id, text: id, selected: id === state.instance })
      );
    }
    select.value = state.instance || "";
    select.disabled = ids.length === 0;
  }

  function selectInstance(id) {
    state.instance = id;
    localStorage.setItem("msync.instance", id);
    // A config of one instance means nothing in another: go to the list.
    const path = currentPath();
    if (/^configs\/.+/.test(path) || /^send\/.+/.test(path)) {
      go("#/configs");
    } else {
      route();
    }
  }

  function currentInstance() {
    return state.instances.find((i) => i.instance_id === state.instance);
  }

  /*
   * Show a line above the page.  With a target hash, the line belongs
   * to the page navigated to; otherwise to the page shown now.
   */
  function notify(text, kind) {
    const notice = document.getElementById("notice");
    notice.textContent = text;
    notice.className = `notice notice-${kind || "info"}`;
    notice.hidden = !text;
  }

  function go(hash, notice) {
    state.notice = notice || null;
    if (location.hash === hash) {
      route();
    } else {
      location.hash = hash;
    }
  }

  /* The route, still percent-encoded: ids in it may hold a "/". */
  function currentPath() {
    return location.hash.replace(/^#\/?/, "");
  }

  function decodePart(part) {
    if (part === undefined) {
      return undefined;
    }
    try {
      return decodeURIComponent(part);
    } catch (e) {
      return part;
    }
  }

  /* Ask before something that changes what devices get. */
  function confirmAction(title, text, okLabel) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = okLabel || "Confirm";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => resolve(dialog.returnValue === "ok"),
        { once: true }
      );
      dialog.showModal();
    });
  }

  /*
   * The pages by route.  A route is the part of the hash after "#/";
   * groups in the pattern are the page's arguments.  "instance" pages
   * need a selected instance.
   */
  const ROUTES = [
    { path: /^login$/, page: loginPage, open: true },
    { path: /^configs$/, page: configsPage, nav: "configs", instance: true },
    {
      path: /^configs\/new$/,
      page: configFormPage,
      nav: "configs",
      instance: true,
    },
    {
      path: /^configs\/([^/]+)\/edit$/,
      page: configFormPage,
      nav: "configs",
      instance: true,
    },
    {
      path: /^configs\/([^/]+)$/,
      page: configDetailPage,
      nav: "configs",
      instance: true,
    },
    {
      path: /^send(?:\/([^/]+))?$/,
      page: sendPage,
      nav: "send",
      instance: true,
    },
    {
      path: /^lookup(?:\/(user|device)\/(.+))?$/,
      page: lookupPage,
      nav: "lookup",
      instance: true,
    },
    { path: /^access$/, page: accessPage, nav: "access" },
    { path: /^service$/, page: servicePage, nav: "service" },
  ];

  /*
   * One page being shown.  Work a page started (requests, timers)
   * checks "alive" before it touches the page, so a slow answer never
   * draws over the page the user went to since.
   */
  class View {
    constructor() {
      this.alive = true;
      this.timers = new Set();
    }

    leave() {
      this.alive = false;
      for (const timer of this.timers) {
        clearTimeout(timer);
      }
      this.timers.clear();
    }

    /* Run "task" now and then every "ms" after each run ends. */
    every(ms, task) {
      const run = async () => {
        if (!this.alive) {
          return;
        }
        try {
          await task();
        } finally {
          if (this.alive) {
            const timer = setTimeout(() => {
              this.timers.delete(timer);
              run();
            }, ms);
            this.timers.add(timer);
          }
        }
      };
      return run();
    }
  }

  function route() {
    if (state.loading) {
      state.loading.then(route, route);
      return;
    }
    const path = currentPath();
    if (!state.user && path !== "login") {
      state.wanted = path;
      location.replace("#/login");
      return;
    }
    if (state.user && (path === "" || path === "login")) {
      location.replace("#/configs");
      return;
    }

    let match = null;
    let entry = null;
    for (const candidate of ROUTES) {
      match = candidate.path.exec(path);
      if (match) {
        entry = candidate;
        break;
      }
    }

    if (state.view) {
      state.view.leave();
    }
    const view = new View();
    state.view = view;
    notify(state.notice, "info");
    state.notice = null;

    for (const link of document.querySelectorAll("#nav a")) {
      const current = entry !== null && link.dataset.nav === entry.nav;
      link.classList.toggle("current", current);
      if (current) {
        link.setAttribute("aria-current", "page");
      } else {
        link.removeAttribute("aria-current");
      }
    }

    const root = clear(main());
    if (entry === null) {
      root.append(
        pageHeader("Not found"),
        el(
          "p",
          {},
          "There is no page here. ",
          el("a", { href: "#/configs", text: "Go to the sync configs." })
        )
      );
      return;
    }
    if (entry.instance && !state.instance) {
      root.append(
        pageHeader("No instance yet"),
        el(
          "p",
          { class: "empty" },
          "There is no instance to work on. ",
          el("a", { href: "#/access", text: "Add one first." })
        )
      );
      return;
    }
    const args = match.slice(1).map(decodePart);
    Promise.resolve(entry.page(view, ...args)).catch((error) => {
      if (view.alive) {
        root.append(pageError(error));
      }
    });
  }

  function bindShell() {
    document.getElementById("logout").addEventListener("click", logout);
    document
      .getElementById("instance-select")
      .addEventListener("change", (event) => {
        selectInstance(event.target.value);
      });
    window.addEventListener("hashchange", route);
  }

  async function start() {
    bindShell();
    let session = null;
    try {
      session = await api("GET", "/api/session");
    } catch (error) {
      if (error.status !== 401) {
        state.notice = error.message;
      }
    }
    if (session) {
      try {
        await signedIn(session);
      } catch (error) {
        state.notice = error.message;
      }
    }
    route();
  }

  /* ------------------------------------------------------------------ */
  /* Building blocks shared by the pages                                 */
  /* ------------------------------------------------------------------ */

  function pageHeader(title, subtitle, ...actions) {
    return el(
      "div",
      { class: "page-header" },
      el(
        "div",
        {},
        el("h1", { text: title, testid: "page-title" }),
        subtitle ? el("p", { class: "subtitle", text: subtitle }) : null
      ),
      el("div", { class: "actions" }, actions)
    );
  }

  function pageError(error) {
    return el("p", {
      class: "error",
      role: "alert",
      testid: "page-error",
      text: error.message,
    });
  }

  function linkButton(href, text, testid, kind) {
    return el("a", {
      class: `button ${kind || "subtle"}`,
      href,
      text,
      testid,
    });
  }

  function button(text, testid, onClick, kind) {
    return el("button", {
      type: "button",
      class: `button ${kind || "subtle"}`,
      text,
      testid,
      on: { click: onClick },
    });
  }

  let fieldIds = 0;

  /*
   * A labelled form field.  The element named "name" inside it is the
   * one the API's "field" refers to; its error appears right below.
   */
  function field(label, control, hint) {
    const id = control.id || `f${++fieldIds}`;
    control.id = id;
    const name = control.name || "";
    return el(
      "div",
      { class: "field", "data-field": name },
      el("label", { for: id, text: label }),
      control,
      hint ? el("small", { class: "hint", text: hint }) : null,
      el("p", { class: "field-error", hidden: true, role: "alert" })
    );
  }

  /* A group of radio buttons: options are [value, label] pairs. */
  function choice(name, legend, options, value, hint) {
    return el(
      "fieldset",
      { class: "field choice", "data-field": name },
      el("legend", { text: legend }),
      el(
        "div",
        { class: "options" },
        options.map(([optionValue, label]) =>
          el(
            "label",
            { class: "option" },
            el("input", {
              type: "radio",
              name,
              value: optionValue,
              checked: optionValue === value,
              testid: `${name}-${optionValue}`,
            }),
            label
          )
        )
      ),
      hint ? el("small", { class: "hint", text: hint }) : null,
      el("p", { class: "field-error", hidden: true, role: "alert" })
    );
  }

  function input(name, props) {
    return el("input", { name, type: "text", ...props });
  }

  function formError(testid) {
    return el("p", {
      class: "form-error",
      role: "alert",
      hidden: true,
      testid: testid || "form-error",
    });
  }

  function clearErrors(form) {
    for (const node of form.querySelectorAll(".form-error, .field-error")) {
      node.hidden = true;
      node.textContent = "";
    }
    for (const node of form.querySelectorAll(".field.invalid")) {
      node.classList.remove("invalid");
    }
    for (const node of form.querySelectorAll("[aria-invalid]")) {
      node.removeAttribute("aria-invalid");
    }
  }

  /* Show an API error on a form: the message, and at the field named. */
  function showError(form, error) {
    const message = form.querySelector(".form-error");
    const wrapper = error.field
      ? form.querySelector(`.field[data-field="${CSS.escape(error.field)}"]`)
      : null;
    if (message) {
      // "must not be empty" needs the field's name above the form.
      const title = wrapper && wrapper.querySelector("label, legend");
      const named =
        !title || error.message.startsWith(error.field)
          ? error.message
          : `${title.textContent}: ${error.message}`;
      message.textContent = named;
      message.hidden = false;
    }
    if (!wrapper) {
      return;
    }
    wrapper.classList.add("invalid");
    const text = wrapper.querySelector(".field-error");
    text.textContent = error.message;
    text.hidden = false;
    const control = wrapper.querySelector("input, select, textarea");
    if (control) {
      control.setAttribute("aria-invalid", "true");
      control.focus();
    }
  }

  /*
   * Run a form's submission: errors cleared, the submit button disabled
   * while the request runs, and an API error shown on the form.
   */
  function onSubmit(form, task) {
    form.noValidate = true;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const submit = form.querySelector("[type=submit]");
      if (submit) {
        submit.disabled = true;
      }
      try {
        await task();
      } catch (error) {
        if (!(error instanceof ApiError)) {
          throw error;
        }
        showError(form, error);
      } finally {
        if (submit) {
          submit.disabled = false;
        }
      }
    });
    return form;
  }

  function radioValue(form, name) {
    const checked = form.querySelector(`input[name="${name}"]:checked`);
    return checked ? checked.value : null;
  }

  /* A table from column titles and rows of cells. */
  function table(testid, titles, rows) {
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { testid },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            titles.map((t) => el("th", { scope: "col", text: t }))
          )
        ),
        el("tbody", {}, rows)
      )
    );
  }

  function cell(...children) {
    return el("td", {}, children);
  }

  /* The buttons at a row's end, kept on one line where they fit. */
  function actionsCell(...buttons) {
    return el(
      "td",
      { class: "actions-cell" },
      el("div", { class: "row-actions" }, buttons)
    );
  }

  function section(title, testid, ...children) {
    return el(
      "section",
      { class: "card", testid },
      title ? el("h2", { text: title }) : null,
      children
    );
  }

  /* A copy button for a secret shown once; falls back to selecting it. */
  function copyButton(target, testid) {
    return button(
      "Copy",
      testid,
      async (event) => {
        const text = target.textContent;
        try {
          await navigator.clipboard.writeText(text);
          event.target.textContent = "Copied";
        } catch (e) {
          const range = document.createRange();
          range.selectNodeContents(target);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          event.target.textContent = "Selected: press Ctrl+C";
        }
      },
      "small"
    );
  }

  /* ------------------------------------------------------------------ */
  /* 4. Pages                                                            */
  /* ------------------------------------------------------------------ */

  /* -- Login --------------------------------------------------------- */

  function loginPage(view) {
    document.getElementById("topbar").hidden = true;
    const user = input("user", {
      autocomplete: "username",
      testid: "login-user",
    });
    const password = input("password", {
      type: "password",
      autocomplete: "current-password",
      testid: "login-password",
    });
    const form = el(
      "form",
      { class: "login-form", testid: "login-form" },
      field("User", user),
      field("Password", password),
      formError("login-error"),
      el("button", {
        type: "submit",
        class: "button primary wide",
        text: "Log in",
        testid: "login-submit",
      })
    );
    onSubmit(form, async () => {
      let session;
      try {
        session = await api("POST", "/api/login", {
          user: user.value,
          password: password.value,
        });
      } catch (error) {
        password.value = "";
        if (error.code === "locked") {
          error.message = `Too many failed logins: ${error.message}.`;
        } else {
          error.message = capitalized(error.message);
        }
        throw error;
      }
      if (!view.alive) {
        return;
      }
      await signedIn(session);
      const wanted = state.wanted;
      state.wanted = null;
      go(wanted && wanted !== "login" ? `#/${wanted}` : "#/configs");
    });

    main().append(
      el(
        "section",
        { class: "login-card" },
        el(
          "div",
          { class: "login-brand" },
          el("img", {
            src: "/console/static/favicon.svg",
            alt: "",
            width: 40,
            height: 40,
          }),
          el("h1", { text: "msync console" })
        ),
        el("p", {
          class: "muted",
          text:
            "Log in with an admin account. The first start of the daemon " +
            "wrote one to bootstrap.json in its data directory.",
        }),
        form
      )
    );
    user.focus();
  }

  /* -- Sync configs -------------------------------------------------- */

  function describeDelivery(config) {
    if (config.range === "global") {
      return "every device";
    }
    if (config.target === "device") {
      return "the device";
    }
    return config.multi_device ? "all of the user's devices" : "latest device";
  }

  function describeBacklog(config) {
    if (!config.persistent) {
      return "not stored";
    }
    return config.resend_mode === "threshold"
      ? `newest ${config.threshold}`
      : "all";
  }

  /* Take a config offline or bring it online, after asking. */
  async function toggleConfig(config) {
    const offline = config.state === "online";
    const ok = await confirmAction(
      offline
        ? `Take ${config.biz_type} offline?`
        : `Bring ${config.biz_type} online?`,
      offline
        ? "Backends will be refused (BIZ_NOT_ONLINE) and pushing pauses " +
            "until the config is brought online again."
        : "The config takes data again and pushing resumes.",
      offline ? "Take offline" : "Bring online"
    );
    if (!ok) {
      return null;
    }
    return api(
      "POST",
      instancePath("configs", config.biz_type, offline ? "offline" : "online")
    );
  }

  function toggleButton(config, after, errors, size) {
    const online = config.state === "online";
    return button(
      online ? "Take offline" : "Bring online",
      "config-toggle",
      async () => {
        errors.hidden = true;
        try {
          const updated = await toggleConfig(config);
          if (updated) {
            after(updated);
          }
        } catch (error) {
          errors.textContent = error.message;
          errors.hidden = false;
        }
      },
      `${online ? "danger" : "subtle"} ${size || ""}`
    );
  }

  async function configsPage(view) {
    const configs = await api("GET", instancePath("configs"));
    if (!view.alive) {
      return;
    }
    const errors = el("p", {
      class: "error",
      role: "alert",
      testid: "page-error",
      hidden: true,
    });
    const refresh = (updated) => {
      go("#/configs", `${updated.biz_type} is now ${updated.state}.`);
    };

    const rows = configs.map((config) =>
      el(
        "tr",
        { testid: "config-row", "data-biz": config.biz_type },
        cell(
          el("a", {
            href: `#/configs/${encode(config.biz_type)}`,
            class: "mono strong nowrap",
            text: config.biz_type,
            testid: "config-link",
          })
        ),
        cell(el("span", { class: "clip", text: config.description })),
        cell(config.range),
        cell(config.target),
        cell(describeDelivery(config)),
        cell(describeBacklog(config)),
        cell(config.target === "user" ? yesNo(config.consistency) : "\u2014"),
        cell(stateBadge(config.state, "config-state")),
        actionsCell(
          linkButton(
            `#/send/${encode(config.biz_type)}`,
            "Send",
            "config-send",
            "small"
          ),
          linkButton(
            `#/configs/${encode(config.biz_type)}/edit`,
            "Edit",
            "config-edit",
            "small"
          ),
          toggleButton(config, refresh, errors, "small")
        )
      )
    );

    main().append(
      pageHeader(
        "Sync configs",
        `Business scenarios of ${state.instance}`,
        linkButton("#/configs/new", "Add config", "config-add", "primary")
      ),
      errors,
      configs.length
        ? table(
            "config-table",
            [
              "Biz type",
              "Description",
              "Range",
              "Target",
              "Goes to",
              "Backlog",
              "Consistency",
              "State",
              "",
            ],
            rows
          )
        : el("p", {
            class: "empty",
            testid: "config-empty",
            text:
              "No sync configs in this instance yet. Add one to start " +
              "sending data.",
          })
    );
  }

  async function configDetailPage(view, biz) {
    const config = await api("GET", instancePath("configs", biz));
    if (!view.alive) {
      return;
    }
    const errors = el("p", {
      class: "error",
      role: "alert",
      testid: "page-error",
      hidden: true,
    });
    const after = (updated) => {
      go(
        `#/configs/${encode(updated.biz_type)}`,
        `${updated.biz_type} is now ${updated.state}.`
      );
    };
    const user = config.target === "user";
    const rows = [
      ["Biz type", el("span", { class: "mono", text: config.biz_type })],
      ["Description", config.description || "\u2014"],
      ["State", stateBadge(config.state, "config-state")],
      ["Range", config.range === "global" ? "Global" : "Specified"],
      ["Target", user ? "User" : "Device"],
      [
        "Multi-device sync",
        user && config.range !== "global"
          ? yesNo(config.multi_device)
          : "\u2014 (user targets only)",
      ],
      ["Persistent", yesNo(config.persistent)],
      [
        "Resend mode",
        config.persistent
          ? config.resend_mode === "threshold"
            ? `Threshold: the newest ${config.threshold} ops`
            : "All of the backlog"
          : "\u2014 (persistent configs only)",
      ],
      [
        "User consistency",
        user ? yesNo(config.consistency) : "\u2014 (user targets only)",
      ],
      ["Created", formatTime(config.created)],
      ["Updated", formatTime(config.updated)],
    ];
    main().append(
      pageHeader(
        config.biz_type,
        `Sync config of ${state.instance}`,
        linkButton("#/configs", "All configs", "config-back"),
        linkButton(
          `#/send/${encode(config.biz_type)}`,
          "Send data",
          "config-send"
        ),
        linkButton(
          `#/configs/${encode(config.biz_type)}/edit`,
          "Edit",
          "config-edit",
          "primary"
        ),
        toggleButton(config, after, errors)
      ),
      errors,
      section(
        null,
        "config-detail",
        el(
          "dl",
          { class: "details" },
          rows.map(([term, value]) => [
            el("dt", { text: term }),
            el("dd", {}, value),
          ])
        )
      )
    );
  }

  /*
   * Add a config (no "biz") or change one.  The fields are the manual's;
   * those that do not apply to the choices made are disabled, with the
   * reason beside them.
   */
  async function configFormPage(view, biz) {
    const editing = biz !== undefined;
    const config = editing
      ? await api("GET", instancePath("configs", biz))
      : {
          biz_type: "",
          description: "",
          range: "specified",
          target: "user",
          multi_device: true,
          persistent: true,
          resend_mode: "all",
          threshold: 100,
          consistency: false,
        };
    if (!view.alive) {
      return;
    }

    const bizInput = input("biz_type", {
      value: config.biz_type,
      testid: "config-biz",
      readOnly: editing,
      placeholder: "DEVICE-LOCK",
      autocomplete: "off",
      spellcheck: "false",
    });
    const description = el("textarea", {
      name: "description",
      rows: 2,
      testid: "config-description",
      value: config.description,
    });
    const threshold = input("threshold", {
      type: "number",
      min: 1,
      max: 100000,
      value: String(config.threshold),
      testid: "config-threshold",
    });
    const yesNoOptions = [
      ["yes", "Yes"],
      ["no", "No"],
    ];
    const asChoice = (value) => (value ? "yes" : "no");

    const form = el(
      "form",
      { class: "card form", testid: "config-form" },
      field(
        "Biz type",
        bizInput,
        editing
          ? "The biz type cannot be changed."
          : "Names the scenario; upper-case letters and '-' read best, " +
              "as in DEVICE-LOCK."
      ),
      field("Description", description, "A note on what the scenario is."),
      choice(
        "range",
        "Range",
        [
          ["specified", "Specified: one user or device"],
          ["global", "Global: every user or device"],
        ],
        config.range
      ),
      choice(
        "target",
        "Target",
        [
          ["user", "User (by user id)"],
          ["device", "Device (by device id)"],
        ],
        config.target,
        editing ? "The target cannot be changed." : null
      ),
      choice(
        "multi_device",
        "Multi-device sync",
        [
          ["yes", "Yes: every device of the user gets every op"],
          ["no", "No: only the user's latest device, once"],
        ],
        asChoice(config.multi_device),
        "For specified user targets only."
      ),
      choice(
        "persistent",
        "Persistent",
        yesNoOptions,
        asChoice(config.persistent),
        "Stored ops (30 days by default) reach devices that are offline " +
          "when they come online; otherwise they go to online devices only."
      ),
      choice(
        "resend_mode",
        "Resend mode",
        [
          ["all", "All of the backlog"],
          ["threshold", "Threshold: only the newest ops"],
        ],
        config.resend_mode,
        "For persistent configs only."
      ),
      field(
        "Resend threshold",
        threshold,
        "How many of the newest ops a threshold config keeps (1-100000)."
      ),
      choice(
        "consistency",
        "User consistency",
        yesNoOptions,
        asChoice(config.consistency),
        "For user targets only: push only to devices whose session the " +
          "tenant's validation endpoint confirmed."
      ),
      formError("config-error"),
      el(
        "div",
        { class: "form-actions" },
        el("button", {
          type: "submit",
          class: "button primary",
          text: editing ? "Save" : "Add config",
          testid: "config-submit",
        }),
        linkButton(
          editing ? `#/configs/${encode(biz)}` : "#/configs",
          "Cancel",
          "config-cancel"
        )
      )
    );

    // The target is fixed once made; show it, but do not let it change.
    if (editing) {
      for (const radio of form.querySelectorAll("input[name=target]")) {
        radio.disabled = true;
      }
    }

    const applies = (name, yes) => {
      const wrapper = form.querySelector(`.field[data-field="${name}"]`);
      wrapper.classList.toggle("inapplicable", !yes);
      for (const control of wrapper.querySelectorAll("input")) {
        control.disabled = !yes;
      }
    };
    const update = () => {
      const user = radioValue(form, "target") === "user";
      const global = radioValue(form, "range") === "global";
      const persistent = radioValue(form, "persistent") === "yes";
      const limited = radioValue(form, "resend_mode") === "threshold";
      applies("multi_device", user && !global);
      applies("consistency", user);
      applies("resend_mode", persistent);
      applies("threshold", persistent && limited);
    };
    form.addEventListener("change", update);
    update();

    onSubmit(form, async () => {
      const user = radioValue(form, "target") === "user";
      const global = radioValue(form, "range") === "global";
      const raw = threshold.value.trim();
      const body = {
        description: description.value,
        range: radioValue(form, "range"),
        // Device and global configs always reach every device.
        multi_device:
          !user || global || radioValue(form, "multi_device") === "yes",
        persistent: radioValue(form, "persistent") === "yes",
        resend_mode: radioValue(form, "resend_mode"),
        // Leave a malformed number as typed, for the API to name.
        threshold: /^\d+$/.test(raw) ? Number(raw) : raw,
        consistency: user && radioValue(form, "consistency") === "yes",
      };
      let saved;
      if (editing) {
        saved = await api("PATCH", instancePath("configs", biz), body);
      } else {
        body.biz_type = bizInput.value.trim();
        body.target = radioValue(form, "target");
        saved = await api("POST", instancePath("configs"), body);
      }
      go(
        `#/configs/${encode(saved.biz_type)}`,
        editing
          ? `${saved.biz_type} saved.`
          : `${saved.biz_type} added; it is online.`
      );
    });

    main().append(
      pageHeader(
        editing ? `Edit ${config.biz_type}` : "Add a sync config",
        editing
          ? `Sync config of ${state.instance}`
          : `A new business scenario in ${state.instance}; it starts online.`
      ),
      form
    );
    if (!editing) {
      bizInput.focus();
    }
  }

  /* -- Send data ----------------------------------------------------- */

  /* What a refusal means, when the reason alone may not say. */
  const SEND_HINTS = {
    BIZ_NOT_ONLINE:
      "The config is offline or does not exist: bring it online to send.",
    NOT_ONLINE:
      "No target is connected now. A persistent config keeps the op until " +
      "the target connects; any other config has dropped it.",
    DUPLICATED_BIZ_ID:
      "Data with this third_msg_id was sent already; the send was ignored.",
    NOT_SUPPORT_GLOBAL: "This config does not send to everyone.",
    PAYLOAD_LONG: "The payload must be under 24 KiB.",
  };

  async function sendPage(view, wantedBiz) {
    const configs = await api("GET", instancePath("configs"));
    if (!view.alive) {
      return;
    }
    main().append(
      pageHeader(
        "Send data",
        `Send one op by hand to a user, a device or everyone in ` +
          `${state.instance}.`
      )
    );
    if (!configs.length) {
      main().append(
        el(
          "p",
          { class: "empty" },
          "There is no sync config to send with. ",
          el("a", { href: "#/configs/new", text: "Add one first." })
        )
      );
      return;
    }

    const zone = (currentInstance() || {}).time_zone || "UTC";
    const byBiz = new Map(configs.map((c) => [c.biz_type, c]));
    const bizSelect = el(
      "select",
      { name: "biz_type", testid: "send-biz" },
      configs.map((c) =>
        el("option", {
          value: c.biz_type,
          selected: c.biz_type === wantedBiz,
          text:
            `${c.biz_type} \u2014 ` +
            (c.range === "global" ? "global" : c.target) +
            (c.state === "online" ? "" : " (offline)"),
        })
      )
    );
    const link = input("link_token", {
      testid: "send-link",
      autocomplete: "off",
      spellcheck: "false",
    });
    const linkField = field("User id", link);
    const device = input("device_id", {
      testid: "send-device",
      autocomplete: "off",
      placeholder: "any of the user's devices",
    });
    const deviceField = field(
      "Only this device (optional)",
      device,
      "Send to one device of the user instead of all of them."
    );
    const payload = el("textarea", {
      name: "payload",
      rows: 5,
      testid: "send-payload",
      spellcheck: "false",
    });
    const counter = el("small", { class: "hint", testid: "send-bytes" });
    const countBytes = () => {
      const n = bytesOf(payload.value);
      counter.textContent = `${n} of ${MAX_PAYLOAD - 1} bytes at most`;
      counter.classList.toggle("over", n >= MAX_PAYLOAD);
    };
    payload.addEventListener("input", countBytes);
    countBytes();
    const payloadField = field("Payload (text)", payload);
    payloadField.insertBefore(counter, payloadField.lastChild);

    const messageId = input("third_msg_id", {
      value: newMessageId(),
      testid: "send-third-msg-id",
      autocomplete: "off",
      spellcheck: "false",
    });
    const os = el(
      "select",
      { name: "os_type", testid: "send-os" },
      el("option", { value: "", text: "Android and iOS" }),
      el("option", { value: "ANDROID", text: "Android only" }),
      el("option", { value: "IOS", text: "iOS only" })
    );
    const minVersion = input("app_min_version", {
      testid: "send-min-version",
      placeholder: "e.g. 1.0.0",
    });
    const maxVersion = input("app_max_version", {
      testid: "send-max-version",
      placeholder: "e.g. 2.9.9",
    });
    const start = input("start_date", {
      type: "datetime-local",
      step: 1,
      testid: "send-start",
    });
    const expire = input("expire_date", {
      type: "datetime-local",
      step: 1,
      testid: "send-expire",
    });
    const immediate = el("input", {
      type: "checkbox",
      name: "immediate",
      checked: true,
      testid: "send-immediate",
    });
    const scopeNote = el("p", { class: "scope-note", testid: "send-scope" });
    const result = el("div", {
      class: "send-result",
      testid: "send-result",
      hidden: true,
      "aria-live": "polite",
    });

    const form = el(
      "form",
      { class: "card form", testid: "send-form" },
      field("Sync config", bizSelect),
      scopeNote,
      linkField,
      deviceField,
      payloadField,
      field(
        "Data id (third_msg_id)",
        messageId,
        "Unique per op: a second send with the same id is ignored. A new " +
          "one is made after each send."
      ),
      el(
        "div",
        { class: "field-row" },
        field("System", os),
        field("Lowest app version", minVersion),
        field("Highest app version", maxVersion)
      ),
      el(
        "div",
        { class: "field-row" },
        field(
          "Valid from (optional)",
          start,
          `Instance time (${zone}). Default: now.`
        ),
        field(
          "Valid until (optional)",
          expire,
          `Instance time (${zone}). Default: 30 days.`
        )
      ),
      el(
        "div",
        { class: "field", "data-field": "immediate" },
        el(
          "label",
          { class: "option" },
          immediate,
          "Push at once (otherwise it goes with the next push or " +
            "connection)"
        )
      ),
      formError("send-error"),
      el(
        "div",
        { class: "form-actions" },
        el("button", {
          type: "submit",
          class: "button primary",
          text: "Send",
          testid: "send-submit",
        })
      ),
      result
    );

    const update = () => {
      const config = byBiz.get(bizSelect.value);
      const global = config.range === "global";
      const user = config.target === "user";
      linkField.querySelector("label").textContent = user
        ? "User id"
        : "Device id";
      link.disabled = global;
      linkField.classList.toggle("inapplicable", global);
      deviceField.hidden = !user;
      device.disabled = !user;
      let note = global
        ? `Global: every ${user ? "user's device" : "device"} gets it.`
        : user
          ? "Goes to one user's devices."
          : "Goes to one device.";
      if (config.state !== "online") {
        note += " This config is offline: the send will be refused.";
      }
      scopeNote.textContent = note;
      scopeNote.classList.toggle("warning", config.state !== "online");
    };
    if (byBiz.has(wantedBiz)) {
      bizSelect.value = wantedBiz;
    }
    bizSelect.addEventListener("change", update);
    update();

    onSubmit(form, async () => {
      const config = byBiz.get(bizSelect.value);
      const body = {
        biz_type: config.biz_type,
        payload: payload.value,
        third_msg_id: messageId.value.trim(),
        immediate: immediate.checked,
      };
      if (config.range === "global") {
        body.global = true;
      } else {
        body.link_token = link.value.trim();
      }
      const optional = {
        os_type: os.value,
        app_min_version: minVersion.value.trim(),
        app_max_version: maxVersion.value.trim(),
        device_id: config.target === "user" ? device.value.trim() : "",
        start_date: dateTime(start.value),
        expire_date: dateTime(expire.value),
      };
      for (const [key, value] of Object.entries(optional)) {
        if (value) {
          body[key] = value;
        }
      }
      const answer = await api("POST", instancePath("send"), body);
      showSendResult(result, answer, config, body);
      if (answer.success) {
        messageId.value = newMessageId();
      }
    });

    main().append(form);
  }

  /* A datetime-local value as the API's "yyyy-MM-dd HH:mm:ss". */
  function dateTime(value) {
    if (!value) {
      return "";
    }
    const [day, time] = value.split("T");
    const parts = time.split(":");
    while (parts.length < 3) {
      parts.push("00");
    }
    return `${day} ${parts.join(":")}`;
  }

  function showSendResult(node, answer, config, body) {
    clear(node);
    node.hidden = false;
    node.className = `send-result ${answer.success ? "ok" : "refused"}`;
    const head = answer.success ? "Sent" : "Refused";
    node.append(
      el(
        "p",
        { class: "result-head" },
        el("strong", { text: `${head}: ` }),
        el("code", { text: answer.code, testid: "send-code" }),
        answer.op_id ? ` \u2014 op id ${answer.op_id}` : null
      )
    );
    if (answer.reason) {
      node.append(el("p", { text: answer.reason, testid: "send-reason" }));
    }
    if (SEND_HINTS[answer.code]) {
      node.append(el("p", { class: "muted", text: SEND_HINTS[answer.code] }));
    }
    if (answer.success && body.link_token) {
      const kind = config.target === "user" ? "user" : "device";
      node.append(
        el(
          "p",
          {},
          el("a", {
            href: `#/lookup/${kind}/${encode(body.link_token)}`,
            text: `Follow it: look up ${kind} ${body.link_token} \u2192`,
            testid: "send-follow",
          })
        )
      );
    }
  }

  /* -- Users and devices --------------------------------------------- */

  async function lookupPage(view, kind, id) {
    const kindSelect = el(
      "select",
      { name: "kind", testid: "lookup-kind" },
      el("option", {
        value: "user",
        text: "User",
        selected: kind !== "device",
      }),
      el("option", {
        value: "device",
        text: "Device",
        selected: kind === "device",
      })
    );
    const idInput = input("id", {
      value: id || "",
      testid: "lookup-id",
      placeholder: "user id or device id",
      autocomplete: "off",
      spellcheck: "false",
    });
    const form = el(
      "form",
      { class: "lookup-form card", testid: "lookup-form" },
      field("Look up", kindSelect),
      field("Id", idInput),
      el("button", {
        type: "submit",
        class: "button primary",
        text: "Look up",
        testid: "lookup-submit",
      })
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const wanted = idInput.value.trim();
      if (wanted) {
        go(`#/lookup/${kindSelect.value}/${encode(wanted)}`);
      }
    });

    const results = el("div", { class: "lookup-results", testid: "lookup" });
    main().append(
      pageHeader(
        "Users & devices",
        "Online state, the last 30 days and recent pushes in " +
          `${state.instance}.`
      ),
      form,
      results
    );
    if (!id) {
      idInput.focus();
      return;
    }

    const updated = el("span", { class: "muted", testid: "lookup-updated" });
    let loads = 0;
    await view.every(REFRESH_MS, async () => {
      let report = null;
      let failure = null;
      try {
        report = await api("GET", instancePath(`${kind}s`, id));
      } catch (error) {
        failure = error;
      }
      if (!view.alive) {
        return;
      }
      loads += 1;
      updated.textContent =
        `Updated ${formatTime(Date.now()).slice(11)}; refreshes every ` +
        `${REFRESH_MS / 1000} s.`;
      updated.dataset.loads = String(loads);
      // Keep what the reader opened across refreshes.
      const open = results.querySelector("details.day-numbers[open]");
      clear(results);
      results.append(el("p", { class: "refresh-line" }, updated));
      if (failure) {
        results.append(
          failure.code === "not_found"
            ? el("p", {
                class: "empty",
                testid: "lookup-missing",
                text:
                  `No ${kind} ${id} has been seen in ${state.instance} ` +
                  "yet. This page keeps looking.",
              })
            : pageError(failure)
        );
        return;
      }
      append(results, [renderReport(kind, report)]);
      if (open) {
        results.querySelector("details.day-numbers").open = true;
      }
    });
  }

  function renderReport(kind, report) {
    const days = report.days || [];
    const pushes = days.reduce((sum, d) => sum + d.pushes, 0);
    const arrivals = days.reduce((sum, d) => sum + d.arrivals, 0);
    const name = kind === "user" ? report.user_id : report.device_id;

    const summary = el(
      "section",
      { class: "card summary", testid: "lookup-summary" },
      el(
        "div",
        { class: "summary-head" },
        el(
          "h2",
          {},
          `${kind === "user" ? "User" : "Device"} `,
          el("span", { class: "mono", text: name, testid: "lookup-name" })
        ),
        onlineBadge(report.online, "lookup-online")
      ),
      el(
        "div",
        { class: "stats" },
        stat("Pushes, 30 days", pushes, "lookup-pushes"),
        stat("Arrivals, 30 days", arrivals, "lookup-arrivals"),
        kind === "user"
          ? stat("Devices", (report.devices || []).length, "lookup-devices")
          : null
      ),
      kind === "device" ? deviceFacts(report) : null,
      dayChart(days)
    );

    return [
      summary,
      kind === "user" ? userDevices(report.devices || []) : null,
      pushList(report.pushes || [], kind),
    ];
  }

  function stat(label, value, testid) {
    return el(
      "div",
      { class: "stat" },
      el("span", { class: "stat-value", text: String(value), testid }),
      el("span", { class: "stat-label", text: label })
    );
  }

  function deviceFacts(device) {
    const facts = [
      ["User", device.user_id || "\u2014 (none bound)"],
      ["System", device.os_type || "\u2014"],
      ["App version", device.app_version || "\u2014"],
      ["Session validated", yesNo(device.validated)],
      ["First seen", formatTime(device.first_seen)],
      ["Last seen", formatTime(device.last_seen)],
    ];
    return el(
      "dl",
      { class: "details compact", testid: "lookup-device-facts" },
      facts.map(([term, value]) => [
        el("dt", { text: term }),
        el("dd", { text: value }),
      ])
    );
  }

  /* Pushes and arrivals of the last 30 days as paired bars, a day each. */
  function dayChart(days) {
    const byDay = new Map(days.map((d) => [d.day, d]));
    const latest = Math.max(
      Math.floor(Date.now() / DAY_MS),
      ...days.map((d) => d.day)
    );
    const span = [];
    for (let day = latest - 29; day <= latest; day += 1) {
      span.push(byDay.get(day) || { day, pushes: 0, arrivals: 0 });
    }
    const top = Math.max(
      1,
      ...span.map((d) => Math.max(d.pushes, d.arrivals))
    );

    const columns = span.map((d) => {
      const pushBar = el("span", { class: "bar pushes" });
      const arrivalBar = el("span", { class: "bar arrivals" });
      // Heights through the CSSOM: allowed by the page's strict CSP.
      pushBar.style.height = `${(100 * d.pushes) / top}%`;
      arrivalBar.style.height = `${(100 * d.arrivals) / top}%`;
      return el(
        "div",
        {
          class: "day",
          title:
            `${formatDay(d.day)}: ${d.pushes} pushes, ` +
            `${d.arrivals} arrivals`,
          "data-day": formatDay(d.day),
        },
        pushBar,
        arrivalBar
      );
    });

    const figure = el(
      "figure",
      { class: "chart", testid: "lookup-chart" },
      el("div", { class: "bars" }, columns),
      el(
        "figcaption",
        {},
        el("span", { class: "axis" }, formatDay(span[0].day)),
        el(
          "span",
          { class: "legend" },
          el("span", { class: "key pushes" }),
          "pushes ",
          el("span", { class: "key arrivals" }),
          "arrivals"
        ),
        el("span", { class: "axis" }, formatDay(latest))
      )
    );
    const busy = days.filter((d) => d.pushes || d.arrivals);
    const numbers = el(
      "details",
      { class: "day-numbers" },
      el("summary", { text: "Daily numbers" }),
      busy.length
        ? table(
            "lookup-days",
            ["Day", "Pushes", "Arrivals"],
            busy
              .slice()
              .sort((a, b) => b.day - a.day)
              .map((d) =>
                el(
                  "tr",
                  {},
                  cell(formatDay(d.day)),
                  el("td", { class: "num", text: String(d.pushes) }),
                  el("td", { class: "num", text: String(d.arrivals) })
                )
              )
          )
        : el("p", { class: "muted", text: "No traffic in the last 30 days." })
    );
    return [figure, numbers];
  }

  function userDevices(devices) {
    return section(
      "Devices",
      "lookup-device-list",
      devices.length
        ? table(
            "device-table",
            [
              "Device id",
              "State",
              "System",
              "App version",
              "Session validated",
              "Last seen",
            ],
            devices.map((d) =>
              el(
                "tr",
                { testid: "device-row", "data-device": d.device_id },
                cell(
                  el("a", {
                    class: "mono",
                    href: `#/lookup/device/${encode(d.device_id)}`,
                    text: d.device_id,
                  })
                ),
                cell(onlineBadge(d.online)),
                cell(d.os_type || "\u2014"),
                cell(d.app_version || "\u2014"),
                cell(yesNo(d.validated)),
                cell(formatTime(d.last_seen))
              )
            )
          )
        : el("p", { class: "muted", text: "No device of this user yet." })
    );
  }

  function pushList(pushes, kind) {
    const titles = [
      "Sent",
      "Biz type",
      "Op id",
      "Data id",
      kind === "user" ? "Device" : "Scope",
      "State",
      "Attempts",
      "Reason",
    ];
    return section(
      "Recent pushes",
      "lookup-pushes-card",
      pushes.length
        ? table(
            "push-list",
            titles,
            pushes.map((p) =>
              el(
                "tr",
                {
                  testid: "push-row",
                  "data-op-id": String(p.op_id),
                  "data-third-msg-id": p.third_msg_id,
                },
                cell(formatTime(p.created)),
                cell(el("span", { class: "mono", text: p.biz_type })),
                el("td", { class: "num mono", text: String(p.op_id) }),
                cell(el("span", { class: "mono clip", text: p.third_msg_id })),
                cell(
                  el("span", {
                    class: "mono",
                    text: kind === "user" ? p.device_id : p.scope,
                  })
                ),
                cell(stateBadge(p.state, "push-state")),
                el("td", {
                  class: "num",
                  text: String(p.attempts),
                  testid: "push-attempts",
                }),
                cell(
                  el("span", {
                    class: "muted",
                    text: p.reason || "",
                    testid: "push-reason",
                  })
                )
              )
            )
          )
        : el("p", {
            class: "muted",
            testid: "push-empty",
            text: "No pushes yet.",
          })
    );
  }

  /* -- Instances and access keys ------------------------------------- */

  async function accessPage(view) {
    const [instances, keys] = await Promise.all([
      api("GET", "/api/instances"),
      api("GET", "/api/keys"),
    ]);
    if (!view.alive) {
      return;
    }
    const reload = (notice) => go("#/access", notice);

    main().append(
      pageHeader(
        "Instances & access keys",
        "Apps served by this daemon, and the keys backends sign with."
      ),
      instancesCard(instances, reload),
      keysCard(keys, instances, reload)
    );
  }

  function instancesCard(instances, reload) {
    const editor = el("div", { testid: "instance-editor" });
    const rows = instances.map((i) =>
      el(
        "tr",
        { testid: "instance-row", "data-instance": i.instance_id },
        cell(el("span", { class: "mono strong", text: i.instance_id })),
        cell(i.time_zone),
        cell(
          el("span", {
            class: "mono clip",
            text: i.validation_url || "\u2014",
          })
        ),
        cell(
          i.app_key_set ? badge("set", "online") : badge("none", "offline")
        ),
        cell(formatTime(i.created)),
        actionsCell(
          button(
            "Edit",
            "instance-edit",
            () => editInstance(editor, i, reload),
            "small"
          )
        )
      )
    );

    const id = input("instance_id", {
      testid: "instance-id",
      placeholder: "workspaceId_appId",
      autocomplete: "off",
    });
    const zone = input("time_zone", { value: "UTC", testid: "instance-zone" });
    const url = input("validation_url", {
      type: "url",
      testid: "instance-url",
      placeholder: "https://tenant.example/validate",
    });
    const form = el(
      "form",
      { class: "form inline-form", testid: "instance-form" },
      el("h3", { text: "Add an instance" }),
      el(
        "div",
        { class: "field-row" },
        field("Instance id", id),
        field("Time zone", zone),
        field(
          "Validation URL (optional)",
          url,
          "For user consistency checks."
        )
      ),
      formError("instance-error"),
      el("button", {
        type: "submit",
        class: "button primary",
        text: "Add instance",
        testid: "instance-submit",
      })
    );
    onSubmit(form, async () => {
      const body = { instance_id: id.value.trim() };
      if (zone.value.trim()) {
        body.time_zone = zone.value.trim();
      }
      if (url.value.trim()) {
        body.validation_url = url.value.trim();
      }
      const made = await api("POST", "/api/instances", body);
      await loadInstances();
      reload(`Instance ${made.instance_id} added.`);
    });

    return section(
      "Instances",
      "instances-card",
      table(
        "instance-table",
        ["Instance", "Time zone", "Validation URL", "App key", "Created", ""],
        rows
      ),
      editor,
      form
    );
  }

  function editInstance(editor, instance, reload) {
    const zone = input("time_zone", {
      value: instance.time_zone,
      testid: "instance-edit-zone",
    });
    const url = input("validation_url", {
      type: "url",
      value: instance.validation_url,
      testid: "instance-edit-url",
    });
    const appKey = input("app_key", {
      testid: "instance-edit-app-key",
      autocomplete: "off",
      placeholder: instance.app_key_set ? "leave empty to keep" : "none",
    });
    const form = el(
      "form",
      { class: "form inline-form editing", testid: "instance-edit-form" },
      el("h3", {}, "Edit ", el("span", {
        class: "mono",
        text: instance.instance_id,
      })),
      el(
        "div",
        { class: "field-row" },
        field("Time zone", zone),
        field("Validation URL", url),
        field(
          "New app key",
          appKey,
          "Devices must then present it. Never shown again."
        )
      ),
      formError("instance-edit-error"),
      el(
        "div",
        { class: "form-actions" },
        el("button", {
          type: "submit",
          class: "button primary",
          text: "Save",
          testid: "instance-edit-submit",
        }),
        button("Cancel", "instance-edit-cancel", () => clear(editor))
      )
    );
    onSubmit(form, async () => {
      const body = {
        time_zone: zone.value.trim(),
        validation_url: url.value.trim(),
      };
      if (appKey.value) {
        body.app_key = appKey.value;
      }
      await api(
        "PATCH",
        `/api/instances/${encode(instance.instance_id)}`,
        body
      );
      await loadInstances();
      reload(`Instance ${instance.instance_id} saved.`);
    });
    clear(editor).append(form);
    zone.focus();
  }

  function keysCard(keys, instances, reload) {
    const errors = el("p", {
      class: "error",
      role: "alert",
      testid: "key-list-error",
      hidden: true,
    });
    const list = el("div", {});
    const revoke = async (key) => {
      const ok = await confirmAction(
        `Revoke ${key.access_key}?`,
        "Backends signing with this key are refused from now on. This " +
          "cannot be undone.",
        "Revoke"
      );
      if (!ok) {
        return;
      }
      try {
        await api("POST", `/api/keys/${encode(key.access_key)}/revoke`);
        reload(`Key ${key.access_key} revoked.`);
      } catch (error) {
        errors.textContent = error.message;
        errors.hidden = false;
      }
    };
    const showKeys = (current) => {
      clear(list).append(
        current.length
          ? keyTable(current, revoke)
          : el("p", { class: "muted", text: "No access keys." })
      );
    };
    showKeys(keys);

    const created = el("div", { testid: "new-key-slot" });
    const choices = el(
      "div",
      { class: "options" },
      instances.map((i) =>
        el(
          "label",
          { class: "option" },
          el("input", {
            type: "checkbox",
            name: "instances",
            value: i.instance_id,
            checked: i.instance_id === state.instance,
            testid: "key-instance",
          }),
          el("span", { class: "mono", text: i.instance_id })
        )
      )
    );
    const form = el(
      "form",
      { class: "form inline-form", testid: "key-form" },
      el("h3", { text: "Add an access key" }),
      el(
        "fieldset",
        { class: "field choice", "data-field": "instances" },
        el("legend", { text: "Instances it may write to" }),
        choices,
        el("p", { class: "field-error", hidden: true, role: "alert" })
      ),
      formError("key-error"),
      el("button", {
        type: "submit",
        class: "button primary",
        text: "Add key",
        testid: "key-submit",
      })
    );
    onSubmit(form, async () => {
      const chosen = Array.from(
        form.querySelectorAll("input[name=instances]:checked"),
        (box) => box.value
      );
      const key = await api("POST", "/api/keys", { instances: chosen });
      showNewKey(created, key);
      showKeys(await api("GET", "/api/keys"));
    });

    return section(
      "Access keys",
      "keys-card",
      errors,
      list,
      created,
      form
    );
  }

  function keyTable(keys, revoke) {
    return table(
      "key-table",
      ["Access key", "Instances", "Created", "State", ""],
      keys.map((k) =>
        el(
          "tr",
          { testid: "key-row", "data-key": k.access_key },
          cell(el("span", { class: "mono strong", text: k.access_key })),
          cell(k.instances.join(", ")),
          cell(formatTime(k.created)),
          cell(
            k.revoked
              ? badge("revoked", "offline", "key-state")
              : badge("active", "online", "key-state")
          ),
          actionsCell(
            k.revoked
              ? null
              : button(
                  "Revoke",
                  "key-revoke",
                  () => revoke(k),
                  "danger small"
                )
          )
        )
      )
    );
  }

  /* The one time a secret is shown: say so, and offer to copy it. */
  function showNewKey(slot, key) {
    const accessKey = el("code", {
      text: key.access_key,
      testid: "new-key-id",
    });
    const secret = el("code", { text: key.secret, testid: "new-key-secret" });
    clear(slot).append(
      el(
        "div",
        { class: "secret-once", testid: "new-key", role: "alert" },
        el("h3", { text: "Copy the secret now" }),
        el("p", {
          text:
            "This is the only time the console shows this secret: once " +
            "you leave or close this note it cannot be shown again. Keep " +
            "it where the backend reads its configuration.",
        }),
        el(
          "dl",
          { class: "details compact" },
          el("dt", { text: "Access key" }),
          el("dd", {}, accessKey, copyButton(accessKey, "copy-key")),
          el("dt", { text: "Secret" }),
          el("dd", {}, secret, copyButton(secret, "copy-secret")),
          el("dt", { text: "Instances" }),
          el("dd", { text: key.instances.join(", ") })
        ),
        button(
          "I have copied it",
          "new-key-done",
          () => clear(slot),
          "primary"
        )
      )
    );
  }

  /* -- Service management -------------------------------------------- */

  async function servicePage(view) {
    const [settings, admins] = await Promise.all([
      api("GET", "/api/settings"),
      api("GET", "/api/admins"),
    ]);
    if (!view.alive) {
      return;
    }
    main().append(
      pageHeader(
        "Service management",
        "Settings that hold for every instance of this daemon."
      ),
      signatureCard(settings),
      adminsCard(admins),
      tokensCard()
    );
  }

  function signatureCard(settings) {
    const toggle = el("input", {
      type: "checkbox",
      role: "switch",
      class: "switch",
      checked: settings.signature_check,
      testid: "signature-switch",
      id: "signature-switch",
    });
    const status = el("p", {
      class: "switch-state",
      testid: "signature-state",
    });
    const errors = el("p", {
      class: "error",
      role: "alert",
      hidden: true,
      testid: "signature-error",
    });
    const show = (on) => {
      toggle.checked = on;
      status.textContent = on
        ? "On: every gateway call must carry a valid signature."
        : "Off: gateway calls are accepted without checking signatures.";
      status.classList.toggle("warning", !on);
    };
    show(settings.signature_check);

    toggle.addEventListener("change", async () => {
      const wanted = toggle.checked;
      errors.hidden = true;
      // Turning checks off opens the gateway to anyone who can reach it.
      if (!wanted) {
        const ok = await confirmAction(
          "Turn signature checks off?",
          "Until they are on again, the gateway accepts calls from anyone " +
            "who can reach it, for every instance.",
          "Turn off"
        );
        if (!ok) {
          show(true);
          return;
        }
      }
      toggle.disabled = true;
      try {
        const saved = await api("PATCH", "/api/settings", {
          signature_check: wanted,
        });
        show(saved.signature_check);
      } catch (error) {
        show(!wanted);
        errors.textContent = error.message;
        errors.hidden = false;
      } finally {
        toggle.disabled = false;
      }
    });

    return section(
      "Signature check",
      "signature-card",
      el(
        "p",
        { class: "muted" },
        "Backends sign each call to /gateway.do with their access key's " +
          "secret. The switch holds for all signature checks at once."
      ),
      el(
        "div",
        { class: "switch-row" },
        toggle,
        el("label", { for: "signature-switch", text: "Check signatures" })
      ),
      status,
      errors
    );
  }

  function adminsCard(admins) {
    const user = input("user", {
      testid: "admin-user",
      autocomplete: "off",
    });
    const password = input("password", {
      type: "password",
      testid: "admin-password",
      autocomplete: "new-password",
    });
    const form = el(
      "form",
      { class: "form inline-form", testid: "admin-form" },
      el("h3", { text: "Add an admin" }),
      el(
        "div",
        { class: "field-row" },
        field("User", user),
        field("Password", password, "At least 8 characters.")
      ),
      formError("admin-error"),
      el("button", {
        type: "submit",
        class: "button primary",
        text: "Add admin",
        testid: "admin-submit",
      })
    );
    onSubmit(form, async () => {
      const made = await api("POST", "/api/admins", {
        user: user.value.trim(),
        password: password.value,
      });
      go("#/service", `Admin ${made.user} added.`);
    });
    return section(
      "Admins",
      "admins-card",
      el(
        "ul",
        { class: "plain-list", testid: "admin-list" },
        admins.map((a) =>
          el("li", { class: "mono", text: a.user, testid: "admin-row" })
        )
      ),
      form
    );
  }

  function tokensCard() {
    const slot = el("div", {});
    const create = button(
      "Create a token",
      "token-create",
      async () => {
        clearErrors(revoke);
        try {
          const made = await api("POST", "/api/tokens");
          const token = el("code", { text: made.token, testid: "new-token" });
          clear(slot).append(
            el(
              "div",
              { class: "secret-once", role: "alert" },
              el("h3", { text: "Copy the token now" }),
              el("p", {
                text:
                  "It is shown only this once. Revoke it with its id: " +
                  made.id,
              }),
              el("p", {}, token, copyButton(token, "copy-token"))
            )
          );
        } catch (error) {
          showError(revoke, error);
        }
      },
      "primary"
    );
    const id = input("id", { testid: "token-id", autocomplete: "off" });
    const revoke = el(
      "form",
      { class: "form inline-form", testid: "token-revoke-form" },
      el(
        "div",
        { class: "field-row" },
        field("Token id to revoke", id)
      ),
      formError("token-error"),
      el("button", {
        type: "submit",
        class: "button danger",
        text: "Revoke token",
        testid: "token-revoke",
      })
    );
    onSubmit(revoke, async () => {
      await api("DELETE", `/api/tokens/${encode(id.value.trim())}`);
      go("#/service", "Token revoked.");
    });
    return section(
      "API tokens",
      "tokens-card",
      el(
        "p",
        { class: "muted" },
        "Scripts and ",
        el("code", { text: "msync admin --token" }),
        " use a token instead of a login."
      ),
      create,
      slot,
      revoke
    );
  }

  document.addEventListener("DOMContentLoaded", start);
})();
