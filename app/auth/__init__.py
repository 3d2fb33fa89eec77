"""Who may do what: people and roles, sign-in, device credentials and the audit trail."""
