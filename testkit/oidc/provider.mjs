// A real, certified OpenID Provider (npm `oidc-provider` 9.x) on loopback for Clearance's tests.
//
//   node provider.mjs config.json
//
// config.json: {
//   "port": 0,                                   // 0: any free port
//   "resource": "https://clearance.test/api",    // default resource indicator
//   "audience": "clearance",                     // `aud` of the JWT access tokens
//   "scopes": ["clearance:search", "clearance:ingest", "clearance:admin"],
//   "admin_secret": "…",                         // guards POST /admin/rotate
//   "clients": [{"client_id": "alice", "client_secret": "…", "scope": "clearance:search",
//                "groups": ["finance"]}, …],
//   "users": {"alice": {"groups": ["finance"], "roles": []}, …}   // optional, for sign-in
// }
//
// Tokens: JWT access tokens (`typ: at+jwt`, RS256, with `kid`). A client without
// `redirect_uris` uses client_credentials: `sub` = client_id, a `groups` claim per client. A
// client with `redirect_uris` (the console) uses the authorization code flow with PKCE (S256,
// required); the user signs in on the provider's built-in dev interaction pages (any login name
// and password), `sub` = that login, and `groups`/`roles` come from `users[login]` (none for an
// unknown login) (extraTokenClaims).
//
// Key rotation without restart: POST /admin/rotate (header `x-admin-secret`) generates a new
// RSA key, publishes it first in the JWKS next to the old ones (tokens already issued stay
// verifiable), signs every new token with it, and answers {"kid": new, "kids": [all]}. It
// rebuilds the Provider with the new key set and swaps it behind the same HTTP server, so the
// issuer URL and port never change.
//
// When listening it prints one JSON line to stdout: {"issuer": …, "port": …}.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { readFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const groupsByClient = new Map(config.clients.map((c) => [c.client_id, c.groups ?? []]));
const users = config.users ?? {};

function tokenClaims(token) {
  if (token.accountId) {  // a signed-in user (authorization code flow)
    const u = users[token.accountId] ?? {};
    return { groups: u.groups ?? [], roles: u.roles ?? [] };
  }
  return { groups: groupsByClient.get(token.clientId) ?? [] };
}

function clientMetadata(c) {
  if (c.redirect_uris) {
    return {
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['authorization_code'],
      redirect_uris: c.redirect_uris,
      response_types: ['code'],
      scope: c.scope,
      token_endpoint_auth_method: c.client_secret ? 'client_secret_post' : 'none',
    };
  }
  return {
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: c.scope,
    token_endpoint_auth_method: 'client_secret_post',
  };
}

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `k-${crypto.randomBytes(8).toString('hex')}`,
    alg: 'RS256',
    use: 'sig',
  };
}

function buildProvider(issuer, keys) {
  const signingKid = keys[0].kid;
  const provider = new Provider(issuer, {
    clients: config.clients.map(clientMetadata),
    jwks: { keys },
    scopes: ['openid', ...config.scopes],
    findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
    pkce: { required: () => true },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    ttl: { AccessToken: 600, ClientCredentials: 600 },
    features: {
      devInteractions: { enabled: Object.keys(users).length > 0 },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resourceIndicator) => {
          if (resourceIndicator !== config.resource) throw new errors.InvalidTarget();
          return {
            scope: config.scopes.join(' '),
            audience: config.audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 600,
            jwt: { sign: { alg: 'RS256', kid: signingKid } },
          };
        },
      },
    },
    extraTokenClaims: (_ctx, token) => tokenClaims(token),
  });
  return provider;
}

function readBody(req) {
  return new Promise((resolve) => {
    req.on('data', () => {});
    req.on('end', resolve);
  });
}

let keys = [newSigningKey()];
let handler = null;

const server = http.createServer(async (req, res) => {
  if (req.url === '/admin/rotate' && req.method === 'POST') {
    await readBody(req);
    if (req.headers['x-admin-secret'] !== config.admin_secret) {
      res.writeHead(403).end();
      return;
    }
    keys = [newSigningKey(), ...keys];
    handler = buildProvider(issuer, keys).callback();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kid: keys[0].kid, kids: keys.map((k) => k.kid) }));
    return;
  }
  handler(req, res);
});

let issuer = '';
server.listen(config.port ?? 0, '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  handler = buildProvider(issuer, keys).callback();
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
