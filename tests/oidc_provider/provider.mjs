// A real OpenID Connect provider for Vigil's single sign-on tests: panva's oidc-provider
// (the certified reference implementation), on a loopback port, with test accounts and a
// plain login form in place of its development interactions. Configured from the
// environment by tests/test_oidc.py:
//   OIDC_HOST           a loopback address to listen on (default 127.0.0.1); the tests use
//                       127.0.0.2, another site than Vigil's 127.0.0.1, as a real IdP is
//   OIDC_PORT           the port to listen on
//   OIDC_CLIENTS        JSON: [oidc-provider client metadata]
//   OIDC_ACCOUNTS_FILE  JSON file: {"<sub>": {"password": "...", ...claims}}, read afresh at
//                       every sign-in, so a test can change a person's groups between two
// Prints "ready <issuer>" on standard output once it listens.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const host = process.env.OIDC_HOST || '127.0.0.1';
if (!host.startsWith('127.')) throw new Error(`OIDC_HOST must be a loopback address, not ${host}`);
const port = Number(process.env.OIDC_PORT);
const issuer = `http://${host}:${port}`;
const clients = JSON.parse(process.env.OIDC_CLIENTS);
const accounts = () => JSON.parse(readFileSync(process.env.OIDC_ACCOUNTS_FILE, 'utf8'));

// A signing key of its own for each run: nothing secret is kept in the repository.
const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  use: 'sig',
  alg: 'RS256',
  kid: randomUUID(),
};

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomUUID()] },
  // Which claims each scope releases (to the userinfo endpoint, and to the ID token where
  // the client asks for them there).
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups', 'vigil_sites'],
  },
  findAccount(ctx, sub) {
    const account = accounts()[sub];
    if (!account) return undefined;
    const { password, ...claims } = account;
    return { accountId: sub, async claims() { return { sub, ...claims }; } };
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
});

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const loginForm = (uid, error) => `<!doctype html><html><head><title>Test IdP sign-in</title></head>
<body><h1>Test IdP</h1>${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Login <input name="login" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form></body></html>`;

async function formBody(req) {
  let raw = '';
  for await (const chunk of req) raw += chunk;
  return new URLSearchParams(raw);
}

// The login and consent step, as a person would see it: a form; the account's password
// signs in, and every scope the client asked for is granted.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = loginForm(details.uid);
    return undefined;
  }
  const form = await formBody(ctx.req);
  const login = form.get('login');
  const account = accounts()[login];
  if (!account || account.password !== form.get('password')) {
    ctx.status = 401;
    ctx.type = 'html';
    ctx.body = loginForm(details.uid, 'Unknown login or wrong password.');
    return undefined;
  }
  const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  const target = await provider.interactionResult(
    ctx.req,
    ctx.res,
    { login: { accountId: login }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
  ctx.status = 303;
  ctx.redirect(target);
  return undefined;
});

provider.listen(port, host, () => {
  console.log(`ready ${issuer}`);
});
