"""Sign-in for people: passwords, TOTP, passkeys, sessions and login throttling.

Agents use API keys (server/identity.py); people sign in here and hold a session, which
`server.identity.authenticate` resolves like a key. Every authentication event lands in the tenant's
audit trail.
"""
