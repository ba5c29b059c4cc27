// Browser side of the dashboard's sign-in: calls that must run in the browser, because the browser
// receives the session cookie (HttpOnly) or runs the WebAuthn ceremony. Passwords and codes are read
// from the page here and sent straight to /v1; they never enter the dashboard's server-side state.
// Every function resolves to {status, body} (never throws), for a Reflex callback to show.
(function () {
  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)licet_csrf=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  }
  function value(id) {
    const el = document.getElementById(id);
    return el ? el.value : "";
  }
  // The tenant typed, else the one the sign-in link names (the field fills in only once the page's
  // state has loaded, and a quick click must not sign in to no tenant).
  function tenant() {
    return value("tenant") || new URLSearchParams(window.location.search).get("tenant") || "";
  }
  async function post(path, body) {
    try {
      const r = await fetch(path, {
        method: "POST", credentials: "same-origin",
        headers: {"content-type": "application/json", "x-csrf-token": csrf()},
        body: JSON.stringify(body || {}),
      });
      let data = null;
      try { data = await r.json(); } catch (e) { data = null; }
      return {status: r.status, body: data};
    } catch (e) {
      return {status: 0, body: {error: {code: "network", message: String(e)}}};
    }
  }
  function refused(e) {
    return {status: 0, body: {error: {code: "passkey_cancelled", message: (e && e.message) || String(e)}}};
  }
  async function assertion(options) {
    const cred = await navigator.credentials.get(
      {publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options)});
    return cred.toJSON();
  }
  window.licet = {
    login: () => post("/v1/auth/login", {tenant: tenant(), email: value("email"),
                                         password: value("password"), use_cookie: true}),
    totp: (field) => post("/v1/auth/mfa/totp", {code: value(field || "code").replace(/\s+/g, "")}),
    accept: () => post("/v1/auth/invitations/accept", {token: value("invitation"), password: value("new-password"),
                                                       use_cookie: true}),
    logout: () => post("/v1/auth/logout"),
    changePassword: async () => {
      const r = await post("/v1/auth/password", {current_password: value("current-password"),
                                                 new_password: value("new-password")});
      if (r.status === 200) for (const id of ["current-password", "new-password"]) document.getElementById(id).value = "";
      return r;
    },
    passkeyLogin: async () => {
      const opts = await post("/v1/auth/passkey/options", {tenant: tenant()});
      if (opts.status !== 200) return opts;
      try {
        return await post("/v1/auth/passkey", {tenant: tenant(), challenge_id: opts.body.challenge_id,
                                              credential: await assertion(opts.body.options), use_cookie: true});
      } catch (e) { return refused(e); }
    },
    passkeyCheck: async () => {  // finish a sign-in, or step up
      const opts = await post("/v1/auth/mfa/passkey/options");
      if (opts.status !== 200) return opts;
      try {
        return await post("/v1/auth/mfa/passkey", {challenge_id: opts.body.challenge_id,
                                                  credential: await assertion(opts.body.options)});
      } catch (e) { return refused(e); }
    },
    passkeyRegister: async (name) => {
      const opts = await post("/v1/auth/passkeys/options");
      if (opts.status !== 200) return opts;
      try {
        const cred = await navigator.credentials.create(
          {publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(opts.body.options)});
        return await post("/v1/auth/passkeys", {challenge_id: opts.body.challenge_id, credential: cred.toJSON(),
                                               name: name || "passkey"});
      } catch (e) { return refused(e); }
    },
    go: (path) => window.location.assign(path),  // a full load: the new socket carries the new cookie
  };
})();
