"""Security: identity (users, passwords, tokens); RBAC, policy and the command gate later."""
