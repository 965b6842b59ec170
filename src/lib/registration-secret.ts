/**
 * Registration token secrets: `acpr_` + 32 random bytes in base64url (43 characters).
 * WebCrypto only (crypto.getRandomValues, crypto.subtle), so the same code runs on Node,
 * Bun and Cloudflare Workers. The database keeps only the SHA-256 of a secret.
 */
export const REGISTRATION_TOKEN_PREFIX = 'acpr_'

/** The exact shape of a registration token. */
export const registrationTokenShape = /^acpr_[A-Za-z0-9_-]{43}$/

function base64url(bytes: Uint8Array): string {
  let binary = ''
  for (const b of bytes) binary += String.fromCharCode(b)
  return btoa(binary).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')
}

/** A fresh, unguessable registration token (256 bits of randomness). */
export function newRegistrationToken(): string {
  return REGISTRATION_TOKEN_PREFIX + base64url(crypto.getRandomValues(new Uint8Array(32)))
}

/** Lower-case hex SHA-256 of the whole token: what the database stores and looks up. */
export async function hashRegistrationToken(token: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token)))
  let hex = ''
  for (const b of digest) hex += b.toString(16).padStart(2, '0')
  return hex
}
