// Interop test provider: the OpenID Certified `oidc-provider` on loopback,
// configured the way the BFF is meant to be used, with sign-in and consent
// completed by script (no browser, no forms).
//
//   BFF_URL=http://127.0.0.1:8080 node tests/interop/provider.mjs
//
// Listens on 127.0.0.1 on a free port and prints one JSON line to stdout
// when ready: {"issuer":"http://127.0.0.1:PORT"}. Everything else goes to
// stderr. Extra, test-only routes:
//
// DPoP (RFC 9449): a second client `bff-dpop` (same secret and URIs) whose
// access tokens must be DPoP-bound (`dpop_bound_access_tokens`); proofs must
// carry the provider's nonce (`use_dpop_nonce` first), from any client.
//
//   GET /test/counters   what happened so far (grants by type, refresh tokens
//                        consumed/destroyed, back-channel deliveries, ...)
//
// Configuration, deliberately:
// - one confidential client `bff` / `BFF_SECRET` (client_secret_basic), with
//   redirect, post-logout and back-channel logout URIs at BFF_URL, grant types
//   authorization_code, refresh_token and client_credentials;
// - refresh-token rotation on (`rotateRefreshToken: true`), short access
//   tokens (`ACCESS_TOKEN_TTL`, default 60 s), `clockTolerance: 0` (the
//   default of 15 s would hide expiry);
// - refresh tokens are issued to the client whenever it may use the
//   refresh_token grant: oidc-provider keeps the `offline_access` scope only
//   when the request carries `prompt=consent`, which a BFF does not send,
//   so `issueRefreshToken` is set explicitly; they do not expire with the
//   provider's browser session, so that only revocation kills them;
// - outgoing requests (back-channel logout) may reach BFF_URL on loopback,
//   which oidc-provider's SSRF guard otherwise refuses;
// - revocation, introspection, RP-initiated logout, back-channel logout and
//   client credentials enabled;
// - interactions (login, then consent for every requested scope and claim)
//   complete at once for the test user `alice`;
// - with BFF_CLIENT_JWKS (a public JWK Set as JSON), a second client
//   `bff-pkjwt` that authenticates with private_key_jwt (RFC 7523) and must
//   use pushed authorization requests (RFC 9126), with the same URIs.

import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const bffUrl = (process.env.BFF_URL || '').replace(/\/$/, '');
if (!bffUrl) {
  console.error('BFF_URL is required');
  process.exit(2);
}
const clientSecret = process.env.BFF_SECRET || 'interop-secret';
const clientJwks = process.env.BFF_CLIENT_JWKS ? JSON.parse(process.env.BFF_CLIENT_JWKS) : null;
const accessTokenTtl = Number(process.env.ACCESS_TOKEN_TTL || 60);
const USER = 'alice';

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const signingKey = crypto
  .generateKeyPairSync('rsa', { modulusLength: 2048 })
  .privateKey.export({ format: 'jwk' });

const counters = {
  code_grants: 0,
  refresh_grants: 0,
  client_credentials_grants: 0,
  grant_errors: 0,
  pushed_authorization_requests: 0,
  refresh_tokens_consumed: 0,
  refresh_tokens_destroyed: 0,
  grants_revoked: 0,
  backchannel_success: 0,
  backchannel_error: 0,
  end_session: 0,
};

const configuration = {
  clients: [
    {
      client_id: 'bff',
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: [`${bffUrl}/bff/callback`],
      post_logout_redirect_uris: [`${bffUrl}/`],
      backchannel_logout_uri: `${bffUrl}/bff/backchannel`,
      backchannel_logout_session_required: true,
      scope: 'openid profile email offline_access api:read',
    },
    {
      client_id: 'bff-dpop',
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: [`${bffUrl}/bff/callback`],
      post_logout_redirect_uris: [`${bffUrl}/`],
      scope: 'openid profile email offline_access api:read',
      dpop_bound_access_tokens: true,
    },
  ],
  jwks: { keys: [{ ...signingKey, kid: 'interop-rs256', alg: 'RS256', use: 'sig' }] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'offline_access', 'api:read'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'nickname'],
    email: ['email', 'email_verified'],
    sid: null,
    auth_time: null,
  },
  // Profile claims in the id_token too, as the BFF's /bff/user shows them.
  conformIdTokenClaims: false,
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    // `nickname` only at userinfo: a session that has it called userinfo.
    claims: async (use) => ({
      sub,
      name: 'Alice Example',
      email: 'alice@example.com',
      email_verified: true,
      ...(use === 'userinfo' ? { nickname: 'ally' } : {}),
    }),
  }),
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    clientCredentials: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: crypto.randomBytes(32),
      requireNonce: () => true,
    },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = `<!doctype html><html><body>${form}<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Sign out</button></body></html>`;
      },
    },
  },
  // oidc-provider refuses outgoing requests to special-use addresses (SSRF
  // protection), loopback included; the BFF under test lives on loopback, so
  // requests to it alone go out without that guard.
  fetch: (url, options) => {
    if (String(url).startsWith(`${bffUrl}/`)) {
      const { dispatcher: _ssrfGuard, ...rest } = options;
      return globalThis.fetch(url, rest);
    }
    return globalThis.fetch(url, options);
  },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  clockTolerance: 0,
  ttl: {
    AccessToken: accessTokenTtl,
    ClientCredentials: accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 3600,
    Grant: 3600,
    Session: 3600,
    Interaction: 600,
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  renderError: async (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
};

if (clientJwks) {
  configuration.clients.push({
    client_id: 'bff-pkjwt',
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: clientJwks,
    require_pushed_authorization_requests: true,
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: [`${bffUrl}/bff/callback`],
    post_logout_redirect_uris: [`${bffUrl}/`],
    scope: 'openid profile email offline_access api:read',
  });
  // FAPI 2.0's client profile in one client: private_key_jwt, PAR required
  // and DPoP-bound access tokens.
  configuration.clients.push({
    client_id: 'bff-fapi',
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: clientJwks,
    require_pushed_authorization_requests: true,
    dpop_bound_access_tokens: true,
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: [`${bffUrl}/bff/callback`],
    post_logout_redirect_uris: [`${bffUrl}/`],
    scope: 'openid profile email offline_access api:read',
  });
}
configuration.features.pushedAuthorizationRequests = { enabled: true };

const provider = new Provider(issuer, configuration);

provider.on('grant.success', (ctx) => {
  switch (ctx.oidc.params.grant_type) {
    case 'authorization_code':
      counters.code_grants += 1;
      break;
    case 'refresh_token':
      counters.refresh_grants += 1;
      break;
    case 'client_credentials':
      counters.client_credentials_grants += 1;
      break;
    default:
  }
});
provider.on('pushed_authorization_request.success', () => {
  counters.pushed_authorization_requests += 1;
});
provider.on('pushed_authorization_request.error', (_ctx, err) => {
  console.error(`PAR error: ${err.message} ${err.error_description || ''}`);
});
provider.on('grant.error', (_ctx, err) => {
  counters.grant_errors += 1;
  console.error(`grant error: ${err.message} ${err.error_description || ''}`);
});
provider.on('refresh_token.consumed', () => {
  counters.refresh_tokens_consumed += 1;
});
provider.on('refresh_token.destroyed', () => {
  counters.refresh_tokens_destroyed += 1;
});
provider.on('grant.revoked', () => {
  counters.grants_revoked += 1;
});
provider.on('backchannel.success', () => {
  counters.backchannel_success += 1;
});
provider.on('backchannel.error', (_ctx, err) => {
  counters.backchannel_error += 1;
  console.error(`back-channel logout failed: ${err.message} ${err.cause ? err.cause.message || err.cause : ''}`);
});
provider.on('end_session.success', () => {
  counters.end_session += 1;
});
provider.on('server_error', (_ctx, err) => {
  console.error('server error', err);
});

/** Completes login and consent for the test user, without a form. */
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: USER } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unexpected prompt ${prompt.name}` };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  const { pathname } = new URL(req.url, issuer);
  if (pathname === '/test/counters') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(counters));
    return;
  }
  if (pathname.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      console.error('interaction failed', err);
      res.statusCode = 500;
      res.end('interaction failed');
    });
    return;
  }
  callback(req, res);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// Exit with the test that started us.
process.stdin.on('end', stop);
process.stdin.resume();

console.log(JSON.stringify({ issuer }));
